"""MeCo (Jiang, Wang & Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation", NeurIPS 2023; release: github.com/HamsterMimi/MeCo).

One forward pass of **one** sample (the probe batch's first) through the student under PyTorch's
default init (:func:`~diswot.proxies._paper.paper_model`, scheme ``default``; the release scores
networks as built), in train mode as built. Every module's output (every module of the network,
containers and the network itself included, as the release hooks ``named_modules()``) is read as
its first sample's feature map ``(C, H, W)``, reshaped to ``C`` rows of ``H*W`` values (tokens
``(T, D)``: ``T`` rows of ``D``); the Pearson correlation matrix of those rows, with undefined
entries (a constant row) set to 0, gives its smallest eigenvalue, and MeCo is the sum of these
minima over all module outputs (NaN or infinite ones dropped). A module returning a tuple is read
through its first tensor. A feature with one value per row (a classifier's logits) contributes 0, and
one with a single row (PiT's class token) its 1x1 correlation; the release raised there and scored
the network NaN, which does not happen on NB201.

The correlation matrix is symmetric, so its eigenvalues come from ``eigvalsh`` in float64 (the
release: the general ``eig`` in float32, keeping the real parts).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from diswot.proxies._paper import paper_model
from diswot.proxies._shared import finite_or_nan, first_tensor
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe


def min_correlation_eigenvalue(feature: Tensor) -> float:
    """Smallest eigenvalue of the row correlation matrix of one sample's feature ``(C, ...)``."""
    rows = feature.detach().reshape(feature.shape[0], -1).double()
    if rows.shape[1] < 2:  # one value per row: every correlation is undefined, hence 0
        return 0.0
    corr = torch.atleast_2d(torch.corrcoef(rows))  # a single row gives a 0-d tensor
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


@register_proxy("meco")
def meco(probe: StudentProbe) -> float:
    """MeCo: sum over layers of the feature-map correlation matrix's minimum eigenvalue."""
    model = paper_model(probe, "default")
    model.train()
    minima: list[float] = []

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        try:
            t = first_tensor(out)
        except RuntimeError:  # a module returning no tensor has no feature map
            return
        if t.dim() >= 2:  # a per-sample feature with at least one row
            minima.append(min_correlation_eigenvalue(t[0]))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(probe.inputs[:1])
    finally:
        for h in handles:
            h.remove()
    kept = [v for v in minima if math.isfinite(v)]
    return finite_or_nan(sum(kept)) if kept else math.nan
