"""ZiCo (Li, Yang, Bhardwaj & Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation
on Gradients", ICLR 2023; release: github.com/SLDGroup/ZiCo).

The cross-entropy gradient of every Conv/Linear weight is taken on :data:`ZICO_BATCHES` batches, in
train mode, under PyTorch's default init (:func:`~diswot.proxies._paper.paper_model`, scheme
``default``; the release scores networks as built). Per layer ``l`` and weight ``w``, with the mean
and (population) standard deviation over the batches,

    ZiCo = sum_l log( sum_{w in l, std(g_w) > 0} mean|g_w| / std(g_w) ),

a layer whose sum is 0 contributing nothing. The batches are the halves of the probe batch, so
ZiCo costs one forward+backward of the probe batch. The paper's experiments (and AZ-NAS's and VKDNW's
reproductions on NB201) use two batches of their own size instead; with a probe batch of 64 each
half is 32 samples. As in those reproductions, each batch's gradient is taken on its own (the
original release accumulates them without zeroing between batches).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from diswot.proxies._paper import paper_model
from diswot.proxies._shared import (
    _RequireGrad,
    cached,
    finite_or_nan,
    first_tensor,
    prunable_layers,
)
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: Batches the gradient statistics are taken over (the paper: two).
ZICO_BATCHES = 2


def zico_from_gradients(grads: list[torch.Tensor]) -> float:
    """ZiCo from per-layer gradient stacks, each ``(batches, *weight_shape)``."""
    total = 0.0
    for g in grads:
        g = g.reshape(g.shape[0], -1).double()
        # The population std written out: torch.std over the batch dimension takes a slow strided
        # reduction for the same values (benchmarks/cpu_bound.py, stage zico, times both).
        std = (g - g.mean(dim=0)).square_().mean(dim=0).sqrt_()
        keep = std > 0
        ratio = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
        if ratio > 0:
            total += math.log(ratio)
    return total


@register_proxy("zico", needs_labels=True, needs_grad=True)
def zico(probe: StudentProbe) -> float:
    """ZiCo: sum over layers of log of summed mean|grad| / std(grad) across batches."""
    # A grouped pass (diswot.scoring.group) may have computed it with the probe's group-mates.
    return cached(probe, "zico", lambda: _zico(probe))


def _zico(probe: StudentProbe) -> float:
    if probe.inputs.shape[0] < ZICO_BATCHES:
        return math.nan
    model = paper_model(probe, "default")
    model.train()
    weights = [m.weight for m in prunable_layers(model)]
    per_batch: list[list[torch.Tensor]] = []
    for x, y in zip(
        probe.inputs.tensor_split(ZICO_BATCHES), probe.labels.tensor_split(ZICO_BATCHES)
    ):
        with torch.enable_grad(), _RequireGrad(weights):
            loss = F.cross_entropy(first_tensor(model(x)), y)
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
        per_batch.append([torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)])
    stacks = [torch.stack(layer) for layer in zip(*per_batch)]
    return finite_or_nan(zico_from_gradients(stacks))
