"""Distillation loss functions: pure functions of logits / feature maps, computed in float32.

Each is the textbook form of its method, applied to the tensors every architecture has (final logits
and the feature map entering global pooling, see :mod:`diswot.features`). Inputs may arrive in bf16 /
fp16 from an autocast region; everything is cast to float32 first, because softmax-KL with a
temperature and Gram matrices of feature maps lose too much precision in half types.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "at_loss",
    "class_activation_maps",
    "dkd_loss",
    "fitnet_loss",
    "ickd_loss",
    "kd_loss",
    "sp_loss",
]


def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al. (2015): ``KL(softmax(t/T) || softmax(s/T)) * T^2``, averaged over the batch.

    The ``T^2`` factor keeps the gradient scale independent of the temperature.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(logits_s.float() / t, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def dkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha * TCKD + beta * NCKD``.

    TCKD is the KL between the binary (target class vs. rest) distributions; NCKD the KL between the
    distributions over the non-target classes only. Decoupling lets NCKD, which carries the "dark
    knowledge", be weighted up without the teacher's confidence suppressing it.
    """
    t = float(temperature)
    s = logits_s.float() / t
    te = logits_t.float() / t
    gt = F.one_hot(target, s.shape[1]).to(s.dtype)
    p_s, p_t = F.softmax(s, dim=1), F.softmax(te, dim=1)
    eps = 1e-8
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1).clamp_min(eps)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1).clamp_min(eps)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean() * (t * t)
    # Mask the target class out with a large negative logit, then KL over the remaining classes.
    log_q_s = F.log_softmax(s - 1000.0 * gt, dim=1)
    log_q_t = F.log_softmax(te - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True) * (t * t)
    return alpha * tckd + beta * nckd


def sp_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019) - DisWOT's *relation* term.

    Each sample's features are flattened, ``G = F F^T`` is the (N, N) sample-similarity matrix, rows are
    L2-normalised, and the loss is ``||G_t - G_s||_F^2 / N^2``. Only sample-to-sample relations are
    compared, so teacher and student may differ in width and resolution.
    """
    n = f_s.shape[0]
    a = f_s.float().reshape(n, -1)
    b = f_t.float().reshape(n, -1)
    g_s = F.normalize(a @ a.t(), dim=1)
    g_t = F.normalize(b @ b.t(), dim=1)
    return (g_t - g_s).pow(2).sum() / (n * n)


def _channel_gram(f: Tensor) -> Tensor:
    """Per-sample (C, C) channel correlation ``F F^T`` with rows L2-normalised."""
    n, c = f.shape[:2]
    x = f.float().reshape(n, c, -1)
    return F.normalize(torch.bmm(x, x.transpose(1, 2)), dim=2)


def ickd_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Inter-channel correlation KD (Liu et al., ICCV 2021) - DisWOT's *semantic* term.

    Compares per-sample ``(C, C)`` channel-correlation matrices (rows L2-normalised):
    ``sum ||G_t - G_s||^2 / (C * N)``. Needs equal channel counts; spatial sizes may differ because the
    Gram matrix sums over positions.
    """
    if f_s.shape[1] != f_t.shape[1]:
        raise ValueError(
            f"ickd_loss needs equal channel counts, got {f_s.shape[1]} and {f_t.shape[1]}; "
            "project the student first or use class activation maps"
        )
    n, c = f_s.shape[:2]
    return (_channel_gram(f_t) - _channel_gram(f_s)).pow(2).sum() / (c * n)


def class_activation_maps(feature_map: Tensor, weight: Tensor) -> Tensor:
    """Class activation maps ``W F``: (N, K, H, W) from a (N, C, H, W) map and a (K, C) classifier.

    Projecting each network's features through its *own* classifier gives K "semantic channels", one per
    class, for teacher and student alike - the width-independent form of the semantic term, used when
    the widths differ (it is what DisWOT's Grad-CAM-based metric compares).
    """
    return torch.einsum("nchw,kc->nkhw", feature_map.float(), weight.float())


def at_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis, 2017) on one pair of feature maps.

    The attention map is the channel mean of squared activations, flattened and L2-normalised; the loss
    is the mean squared difference. A student map of another resolution is resized to the teacher's.
    """
    a_s = f_s.float().pow(2).mean(1, keepdim=True)
    a_t = f_t.float().pow(2).mean(1, keepdim=True)
    if a_s.shape[-2:] != a_t.shape[-2:]:
        a_s = F.interpolate(a_s, size=a_t.shape[-2:], mode="bilinear", align_corners=False)
    n = a_s.shape[0]
    return (
        (F.normalize(a_s.reshape(n, -1), dim=1) - F.normalize(a_t.reshape(n, -1), dim=1))
        .pow(2)
        .mean()
    )


def fitnet_loss(projected_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al., 2015): MSE between the regressed student map and the teacher's."""
    return F.mse_loss(projected_s.float(), f_t.float())
