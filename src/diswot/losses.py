"""Distillation losses, the one home of KD, DKD, SP, ICKD, AT, RKD and FitNet's hint loss.

Two users evaluate them: the distillers of :mod:`diswot.distill.methods` train with them, and the
zero-cost proxies of :mod:`diswot.proxies.distill` measure them once on a randomly initialised
teacher-student pair. Every function takes the **student first, the teacher second**.

They need the same formula in two forms, chosen by ``measure``:

* ``measure=False`` (training): float32 (inputs may arrive in bf16/fp16 from an autocast region;
  softmax-KL with a temperature and Gram matrices lose too much in half types), differentiable, and
  rows normalised with :func:`torch.nn.functional.normalize`'s ``1e-12`` floor, so a near-zero row
  cannot blow up the gradient.
* ``measure=True`` (proxies): float64 on detached tensors (N(0, 1)-initialised networks give logits
  and Gram entries far outside float32's comfortable range), all-zero rows stay zero and a row whose
  norm overflowed becomes NaN, so a network whose activations overflowed scores NaN (ranked last)
  instead of a plausible number. Token maps ``(N, L, C)`` are read as ``C`` channels over ``L``
  positions, and ICKD pools the wider map's channels down to the narrower width.

The measured KD averages per-sample divergences and the trained one divides the batch's sum by
``N`` (``F.kl_div``'s ``batchmean``): the same number up to float rounding, each kept so proxy scores
and training runs stay identical to the last digit with what earlier versions computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "KD_TEMPERATURE",
    "at_loss",
    "attention_map",
    "channels_first",
    "class_activation_maps",
    "dkd_loss",
    "fitnet_loss",
    "gram_distance",
    "ickd_loss",
    "kd_loss",
    "rkd_loss",
    "sp_loss",
    "unit_gram",
    "unit_rows",
]

#: Hinton's temperature in the paper's CIFAR recipe, the default of every KD-style loss here.
KD_TEMPERATURE = 4.0

#: The normalisation floor of the training form (``F.normalize``'s default).
_TRAIN_EPS = 1e-12


def _cast(x: Tensor, measure: bool) -> Tensor:
    """The dtype (and graph) a loss works in: float64 detached to measure, float32 to train."""
    return x.detach().double() if measure else x.float()


def unit_rows(g: Tensor, dim: int = 1, eps: float = 0.0) -> Tensor:
    """``g`` with its rows (slices along ``dim``) divided by their L2 norm.

    ``eps > 0`` is :func:`torch.nn.functional.normalize` (norms floored at ``eps``: bounded
    gradients for training). ``eps == 0`` is exact: all-zero rows stay zero, and a row holding NaN
    or infinity becomes NaN, so an overflowed network scores NaN instead of a plausible number.
    """
    if eps > 0:
        return F.normalize(g, dim=dim, eps=eps)
    norm = g.norm(dim=dim, keepdim=True)
    out = torch.where(norm > 0, g / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
    return torch.where(torch.isfinite(norm), out, torch.nan)


def unit_gram(x: Tensor, eps: float = 0.0) -> Tensor:
    """``X X^T`` of ``x`` flattened per row (``(N, N)``), rows L2-normalised (see :func:`unit_rows`).

    Computed in ``x``'s dtype: cast first.
    """
    x = x.flatten(1)
    return unit_rows(x.mm(x.t()), eps=eps)


def gram_distance(g_s: Tensor, g_t: Tensor) -> Tensor:
    """``||G_t - G_s||_F^2 / n^2`` of two ``(n, n)`` row-normalised Gram matrices (at most ``4 / n``)."""
    n = g_t.shape[0]
    return (g_t - g_s).square().sum() / (n * n)


def channels_first(f: Tensor) -> Tensor:
    """``(N, C, positions)`` from a CNN map ``(N, C, H, W)``, a token map ``(N, L, C)`` or ``(N, C)``."""
    if f.dim() == 4:
        return f.flatten(2)
    if f.dim() == 3:
        return f.transpose(1, 2)
    if f.dim() == 2:
        return f.unsqueeze(2)
    raise ValueError(f"feature map must be 2-D to 4-D, got shape {tuple(f.shape)}")


def _pool_channels(x: Tensor, c: int) -> Tensor:
    """Average ``(N, C, P)`` channels in contiguous groups down to ``c`` channels."""
    if x.shape[1] == c:
        return x
    return F.adaptive_avg_pool1d(x.transpose(1, 2), c).transpose(1, 2)


def kd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    temperature: float = KD_TEMPERATURE,
    *,
    measure: bool = False,
) -> Tensor:
    """Hinton et al. (2015): ``KL(softmax(t/T) || softmax(s/T)) * T^2``, averaged over the batch.

    The ``T^2`` factor keeps the gradient scale independent of the temperature.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(_cast(logits_s, measure) / t, dim=1)
    log_p_t = F.log_softmax(_cast(logits_t, measure) / t, dim=1)
    if measure:
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean() * (t * t)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def dkd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = KD_TEMPERATURE,
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha * TCKD + beta * NCKD`` (training form).

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


def sp_loss(f_s: Tensor, f_t: Tensor, *, measure: bool = False) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019) - DisWOT's *relation* term ``M_r``.

    Each sample's features are flattened, ``G = F F^T`` is the (N, N) sample-similarity matrix, rows are
    L2-normalised, and the loss is ``||G_t - G_s||_F^2 / N^2``. Only sample-to-sample relations are
    compared, so teacher and student may differ in width and resolution.
    """
    eps = 0.0 if measure else _TRAIN_EPS
    return gram_distance(unit_gram(_cast(f_s, measure), eps), unit_gram(_cast(f_t, measure), eps))


def ickd_loss(f_s: Tensor, f_t: Tensor, *, measure: bool = False) -> Tensor:
    """Inter-channel correlation KD (Liu et al., ICCV 2021) - DisWOT's *semantic* term.

    Compares per-sample ``(C, C)`` channel-correlation matrices (rows L2-normalised):
    ``sum ||G_t - G_s||^2 / (C * N)``; spatial sizes may differ because the Gram matrix sums over
    positions. Training needs equal channel counts (ICKD learns a projection for that); measuring
    averages the wider map's channels in groups down to the narrower width, a parameter-free
    stand-in for that projection.
    """
    a, b = channels_first(_cast(f_s, measure)), channels_first(_cast(f_t, measure))
    if a.shape[1] != b.shape[1]:
        if not measure:
            raise ValueError(
                f"ickd_loss needs equal channel counts, got {a.shape[1]} and {b.shape[1]}; "
                "project the student first or use class activation maps"
            )
        c = min(a.shape[1], b.shape[1])
        a, b = _pool_channels(a, c), _pool_channels(b, c)
    eps = 0.0 if measure else _TRAIN_EPS
    g_s = unit_rows(torch.bmm(a, a.transpose(1, 2)), dim=2, eps=eps)
    g_t = unit_rows(torch.bmm(b, b.transpose(1, 2)), dim=2, eps=eps)
    n, c = a.shape[:2]
    return (g_t - g_s).square().sum() / (c * n)


def class_activation_maps(feature_map: Tensor, weight: Tensor) -> Tensor:
    """Class activation maps ``W F``: (N, K, H, W) from a (N, C, H, W) map and a (K, C) classifier.

    Projecting each network's features through its *own* classifier gives K "semantic channels", one per
    class, for teacher and student alike - the width-independent form of the semantic term, used when
    the widths differ (it is what DisWOT's Grad-CAM-based metric compares).
    """
    return torch.einsum("nchw,kc->nkhw", feature_map.float(), weight.float())


def attention_map(f: Tensor) -> Tensor:
    """Per-sample attention (channel mean of squares): ``(N, 1, H, W)``, or ``(N, 1, L)`` for tokens."""
    if f.dim() == 4:
        return f.square().mean(1, keepdim=True)
    return channels_first(f).square().mean(1, keepdim=True)


def at_loss(f_s: Tensor, f_t: Tensor, *, measure: bool = False) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis, 2017) on one pair of feature maps.

    The attention map is the channel mean of squared activations, flattened and L2-normalised; the loss
    is the mean squared difference. A student map of another resolution is resized to the teacher's.
    """
    a_s, a_t = attention_map(_cast(f_s, measure)), attention_map(_cast(f_t, measure))
    if a_s.shape[2:] != a_t.shape[2:]:
        if a_s.dim() != a_t.dim():
            raise ValueError("teacher and student attention maps have different ranks")
        mode = "bilinear" if a_s.dim() == 4 else "linear"
        a_s = F.interpolate(a_s, size=a_t.shape[2:], mode=mode, align_corners=False)
    n = a_s.shape[0]
    eps = 0.0 if measure else _TRAIN_EPS
    a_s, a_t = unit_rows(a_s.reshape(n, -1), eps=eps), unit_rows(a_t.reshape(n, -1), eps=eps)
    return (a_s - a_t).square().mean()


def rkd_loss(e_s: Tensor, e_t: Tensor, *, measure: bool = False) -> Tensor:
    """RKD distance loss (Park et al., CVPR 2019) between two ``(N, D)`` embeddings.

    Pairwise Euclidean distances divided by their mean (so the loss is scale-free), then the Huber
    (smooth-L1) difference, averaged over pairs.
    """

    def normalised(e: Tensor) -> Tensor:
        d = torch.cdist(e, e)
        mean = d[d > 0].mean() if (d > 0).any() else torch.ones((), dtype=d.dtype)
        return d / mean

    return F.smooth_l1_loss(
        normalised(_cast(e_s, measure)), normalised(_cast(e_t, measure)), reduction="mean"
    )


def fitnet_loss(projected_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al., 2015): MSE between the regressed student map and the teacher's."""
    return F.mse_loss(projected_s.float(), f_t.float())
