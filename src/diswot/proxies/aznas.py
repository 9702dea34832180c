"""AZ-NAS's terms (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture
Search", CVPR 2024; release: github.com/cvlab-yonsei/AZ-NAS).

The three network terms come from one train-mode forward, with autograd on, of the student under
the release's Kaiming fan-in init (:func:`~diswot.proxies._paper.paper_model`, scheme ``kaiming``)
on the probe batch (the paper: a batch of 64 N(0, 1) images, which is the synthetic probe). The
features are the stem's output and every block's output
(:func:`~diswot.proxies._paper.block_features`; NB201: stem + 17 cells):

* ``az_expressivity``: per feature, the covariance of its channel vectors (a ``(N, C, H, W)`` map
  read as ``N*H*W`` rows of ``C`` channels, tokens ``(N, T, D)`` as ``N*T`` rows of ``D``), centred
  and divided by the row count; its eigenvalues normalised to sum 1 are a distribution ``p``, and
  the feature's expressivity is its entropy ``-sum p log(p + 1e-8)``. Summed over features.
* ``az_progressivity``: the smallest increase of that entropy from one feature to the next.
* ``az_trainability``: for each consecutive pair ``f_in -> f_out``, a Rademacher probe ``g`` of
  ``f_out``'s shape is pulled back, ``g_in = (d f_out / d f_in)^T g``; ``M = g_in^T g / positions``
  (``channels_in x channels_out``, positions aligned by pixel-unshuffling ``g_in`` by the block's
  stride) estimates the block's channel Jacobian since ``E[g g^T] = I``; with ``s`` its largest
  singular value the pair scores ``-s - 1/(s + 1e-6) + 2`` (0 at ``s = 1``, below 0 otherwise),
  and the term is the mean over pairs. A block that passes its input through unchanged
  (``g_in == g``) scores ``-inf``, as in the release, so the network's term is NaN (ranked
  last, where the release's ``-inf`` ranks it too). Pairs whose positions cannot be aligned (PiT's
  pooling between stages changes the token count) are left out.
* complexity is the registered ``flops`` proxy.

The aggregate ``az_nas`` (``sum log(rank / N)`` of the four) exists only for a population:
:func:`diswot.proxies.aggregate.paper_aggregate`. Differences from the release: eigenvalues and
singular values are taken in float64 (it used float32), and the Rademacher probes come from a
generator seeded with the probe's init seed (it used the global RNG), so scores are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.proxies._paper import block_features, paper_model
from diswot.proxies._shared import cached, finite_or_nan
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

_EPS_LOG = 1e-8  # inside the entropy's log, as the release
_EPS_SIGMA = 1e-6  # in 1 / (s + eps), as the release


@dataclass(frozen=True)
class AZTerms:
    """AZ-NAS's three network terms of one probe (NaN where a network is degenerate)."""

    expressivity: float
    progressivity: float
    trainability: float


def channel_rows(f: Tensor) -> Tensor:
    """A feature as rows of channel vectors: ``(N, C, *spatial)`` -> ``(N*prod(spatial), C)``;
    3-D features are tokens ``(N, T, D)`` -> ``(N*T, D)``, as transformers lay them out."""
    if f.dim() == 3:
        return f.reshape(-1, f.shape[-1])
    return f.movedim(1, -1).reshape(-1, f.shape[1])


def spectral_entropy(f: Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance of feature ``f``.

    NaN for a feature with no variance at all (the distribution is undefined).
    """
    x = channel_rows(f.detach()).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = s / s.sum()
    return float(-(p * torch.log(p + _EPS_LOG)).sum())


def _aligned(g_in: Tensor, g_out: Tensor) -> tuple[Tensor, Tensor] | None:
    """Both gradients as ``(positions, channels)`` rows at matching positions, or ``None``."""
    if g_in.dim() == 4 and g_out.dim() == 4 and g_in.shape[2:] != g_out.shape[2:]:
        (hi, wi), (ho, wo) = g_in.shape[2:], g_out.shape[2:]
        s = hi // ho if ho else 0
        if s < 2 or hi != ho * s or wi != wo * s:
            return None
        g_in = F.pixel_unshuffle(g_in, s)
    if g_in.dim() != g_out.dim() or g_in.shape[0] != g_out.shape[0]:
        return None
    a, b = channel_rows(g_in), channel_rows(g_out)
    return (a, b) if a.shape[0] == b.shape[0] else None


def pair_trainability(f_in: Tensor, f_out: Tensor, gen: torch.Generator) -> float | None:
    """One block's trainability score (see the module docstring); ``None`` if not measurable."""
    g = torch.randint(0, 2, tuple(f_out.shape), generator=gen).mul_(2).sub_(1)
    g = g.to(device=f_out.device, dtype=f_out.dtype)
    (g_in,) = torch.autograd.grad(f_out, f_in, g, retain_graph=True, allow_unused=True)
    if g_in is None:  # the block's output does not depend on its input
        g_in = torch.zeros_like(f_in)
    if g_in.shape == g.shape and torch.equal(g_in, g):
        return -math.inf
    rows = _aligned(g_in, g)
    if rows is None:
        return None
    a, b = (r.double() for r in rows)
    s = float(torch.linalg.svdvals(a.T @ b / b.shape[0]).max())
    return -s - 1.0 / (s + _EPS_SIGMA) + 2.0


def az_terms(probe: StudentProbe) -> AZTerms:
    """Expressivity, progressivity and trainability of one probe, from one shared pass (cached)."""

    def compute() -> AZTerms:
        model = paper_model(probe, "kaiming")
        model.train()
        x = probe.inputs.detach().requires_grad_(True)  # a stem-less network's first block
        gen = torch.Generator(device="cpu").manual_seed(probe.init_seed)
        with torch.enable_grad():
            feats = block_features(model, x)
            ent = np.array([spectral_entropy(f) for f in feats])
            pairs = [
                pair_trainability(feats[i - 1], feats[i], gen)
                for i in reversed(range(1, len(feats)))
            ]
        scored = [p for p in pairs if p is not None]
        return AZTerms(
            expressivity=float(ent.sum()),
            progressivity=float(np.min(np.diff(ent))) if len(ent) > 1 else math.nan,
            trainability=float(np.mean(scored)) if scored else math.nan,
        )

    return cached(probe, "az_terms", compute, shared=True)


@register_proxy("az_expressivity", needs_grad=True)
def az_expressivity(probe: StudentProbe) -> float:
    """AZ-NAS expressivity: summed entropy of each block feature's covariance spectrum."""
    return finite_or_nan(az_terms(probe).expressivity)


@register_proxy("az_progressivity", needs_grad=True)
def az_progressivity(probe: StudentProbe) -> float:
    """AZ-NAS progressivity: smallest increase of that entropy from one block to the next."""
    return finite_or_nan(az_terms(probe).progressivity)


@register_proxy("az_trainability", needs_grad=True)
def az_trainability(probe: StudentProbe) -> float:
    """AZ-NAS trainability: mean closeness to 1 of each block Jacobian's top singular value."""
    return finite_or_nan(az_terms(probe).trainability)
