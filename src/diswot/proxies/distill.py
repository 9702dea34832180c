"""Distillation losses used as proxies on the randomly initialised teacher-student pair.

DisWOT's claim is that its two terms (ICKD-style semantic and SP-style relation similarity) are the
*right* losses to evaluate at initialisation. The obvious control is to evaluate the other classic
distillation losses the same way, on the same forward pass: the student's logits and pre-pool feature
map from ``probe.features`` and the teacher's from the scorer's per-seed teacher cache. All are
losses, so lower is better; all are computed in float64 (N(0, 1)-initialised networks give logits and
Gram entries far outside float32's comfortable range).

* ``kd``: Hinton's ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, ``T = 4``, batch mean.
* ``sp``: similarity-preserving KD (Tung & Mori, 2019) on the pre-pool feature maps,
  ``||norm_rows(F_t F_t^T) - norm_rows(F_s F_s^T)||^2 / N^2``. This *is* DisWOT's ``mr``; it is
  registered separately so a ranking shows the loss by its usual name and the two are checked equal.
* ``ickd``: inter-channel correlation KD (Liu et al., ICCV 2021) on the pre-pool feature maps:
  per-sample ``C x C`` channel Gram matrices with normalised rows, ``sum ||G_t - G_s||^2 / (C N)``.
  ICKD needs equal widths; when they differ the wider map's channels are average-pooled in groups
  down to the narrower width (a parameter-free stand-in for ICKD's learned 1x1 projection).
* ``at``: attention transfer (Zagoruyko & Komodakis, 2017): attention map = channel mean of squared
  activations, L2-normalised per sample, mean squared difference; the student map is resized to the
  teacher's resolution (bilinear) when they differ.
* ``rkd``: RKD distance loss (Park et al., CVPR 2019) on the globally pooled features: pairwise
  Euclidean distances divided by their mean, Huber (smooth-L1) difference, averaged over pairs.

Feature maps are ``(N, C, H, W)`` for CNNs; token maps ``(N, L, C)`` are accepted and treated as
``C`` channels over ``L`` positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.metrics import _unit_rows
from diswot.proxies import register_proxy
from diswot.proxies._shared import finite_or_nan

if TYPE_CHECKING:
    from diswot.probe import StudentProbe

KD_TEMPERATURE = 4.0


def _channels_first(f: Tensor) -> Tensor:
    """``(N, C, positions)`` float64 from a CNN map ``(N, C, H, W)`` or a token map ``(N, L, C)``."""
    f = f.detach().double()
    if f.dim() == 4:
        return f.flatten(2)
    if f.dim() == 3:
        return f.transpose(1, 2)
    if f.dim() == 2:
        return f.unsqueeze(2)
    raise ValueError(f"feature map must be 2-D to 4-D, got shape {tuple(f.shape)}")


def _pair(probe: StudentProbe) -> tuple[Tensor, Tensor]:
    return probe.teacher.feature_map, probe.features.feature_map


def kd_divergence(z_s: Tensor, z_t: Tensor, temperature: float = KD_TEMPERATURE) -> Tensor:
    """``T^2 KL(p_t || p_s)`` with temperature-softened softmaxes, batch mean, float64."""
    t = float(temperature)
    log_s = F.log_softmax(z_s.detach().double() / t, dim=1)
    log_t = F.log_softmax(z_t.detach().double() / t, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean() * (t * t)


def sp_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """Similarity-preserving loss between two feature maps of one batch (any widths)."""
    a = f_t.detach().double().flatten(1)
    b = f_s.detach().double().flatten(1)
    g_t, g_s = _unit_rows(a @ a.t()), _unit_rows(b @ b.t())
    n = a.shape[0]
    return (g_t - g_s).square().sum() / (n * n)


def _pool_channels(x: Tensor, c: int) -> Tensor:
    """Average ``(N, C, P)`` channels in contiguous groups down to ``c`` channels."""
    if x.shape[1] == c:
        return x
    return F.adaptive_avg_pool1d(x.transpose(1, 2), c).transpose(1, 2)


def ickd_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """ICKD loss on per-sample channel Gram matrices (widths matched by channel pooling)."""
    a, b = _channels_first(f_t), _channels_first(f_s)
    c = min(a.shape[1], b.shape[1])
    a, b = _pool_channels(a, c), _pool_channels(b, c)

    def gram(x: Tensor) -> Tensor:
        g = x @ x.transpose(1, 2)
        norm = g.norm(dim=2, keepdim=True)
        return torch.where(norm > 0, g / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)

    return (gram(a) - gram(b)).square().sum() / (c * a.shape[0])


def _attention(f: Tensor) -> Tensor:
    """Per-sample attention map (channel mean of squares) as ``(N, 1, H, W)`` or ``(N, 1, L)``."""
    f = f.detach().double()
    if f.dim() == 4:
        return f.square().mean(1, keepdim=True)
    return _channels_first(f).square().mean(1, keepdim=True)


def at_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """Attention-transfer loss; the student map is resized to the teacher's positions."""
    a_t, a_s = _attention(f_t), _attention(f_s)
    if a_s.shape[2:] != a_t.shape[2:]:
        if a_s.dim() != a_t.dim():
            raise ValueError("teacher and student attention maps have different ranks")
        mode = "bilinear" if a_s.dim() == 4 else "linear"
        a_s = F.interpolate(a_s, size=a_t.shape[2:], mode=mode, align_corners=False)
    n = a_t.shape[0]
    return (_unit_rows(a_s.reshape(n, -1)) - _unit_rows(a_t.reshape(n, -1))).square().mean()


def _pooled(f: Tensor) -> Tensor:
    """Global average over positions: the classifier input of a CNN whose head is GAP + Linear."""
    return _channels_first(f).mean(2)


def rkd_distance(e_t: Tensor, e_s: Tensor) -> Tensor:
    """RKD distance loss between two ``(N, D)`` embeddings (distances normalised by their mean)."""

    def normalised(e: Tensor) -> Tensor:
        d = torch.cdist(e.double(), e.double())
        mean = d[d > 0].mean() if (d > 0).any() else torch.ones((), dtype=d.dtype)
        return d / mean

    return F.smooth_l1_loss(normalised(e_s), normalised(e_t), reduction="mean")


@register_proxy("kd", higher_is_better=False, needs_teacher=True)
def kd(probe: StudentProbe) -> float:
    """Hinton KD loss (T=4) between the random teacher's and student's logits."""
    return finite_or_nan(kd_divergence(probe.features.logits, probe.teacher.logits))


@register_proxy("sp", higher_is_better=False, needs_teacher=True)
def sp(probe: StudentProbe) -> float:
    """Similarity-preserving KD loss on pre-pool features (equals DisWOT's mr)."""
    return finite_or_nan(sp_distance(*_pair(probe)))


@register_proxy("ickd", higher_is_better=False, needs_teacher=True)
def ickd(probe: StudentProbe) -> float:
    """Inter-channel correlation KD loss on pre-pool features."""
    return finite_or_nan(ickd_distance(*_pair(probe)))


@register_proxy("at", higher_is_better=False, needs_teacher=True)
def at(probe: StudentProbe) -> float:
    """Attention-transfer loss on pre-pool features."""
    return finite_or_nan(at_distance(*_pair(probe)))


@register_proxy("rkd", higher_is_better=False, needs_teacher=True)
def rkd(probe: StudentProbe) -> float:
    """RKD distance loss on globally pooled features."""
    f_t, f_s = _pair(probe)
    return finite_or_nan(rkd_distance(_pooled(f_t), _pooled(f_s)))
