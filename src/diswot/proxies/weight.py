"""Data-free, weight-only proxies: synflow (Tanaka et al., NeurIPS 2020) and l2_norm.

**synflow** is computed on a fresh copy of the student (it changes the weights): the model is cast
to float64, every floating tensor of its ``state_dict`` is replaced by its absolute value (NASLib's
``linearize``), batch norm is put in eval mode with fresh statistics, which makes it the identity up
to ``1/sqrt(1 + eps)`` (NASLib scores synflow on a copy without BN), and a single all-ones input
``(1, C, H, W)`` is forwarded. With ``R = sum(output)``, the score is ``log sum_layers sum |W * dR/dW|``
over Conv/Linear weights. The log is the usual form: raw values reach 1e50 on NB201 and would
dominate any mean over seeds, and it is what NASLib's published ``synflow`` column holds (its values
equal ours to 0.1% (median over 200 cells) under PyTorch's default init). Double precision keeps deep
networks from overflowing; a network with no input-output path scores ``log 0 = -inf``.

**l2_norm**: ``sum_layers ||W||_F`` over Conv/Linear weights of the initialised student, as in
NASLib. Under PyTorch's default init ``||W||_F ~ sqrt(C_out / 3)`` per layer, so it mostly counts
layers weighted by width; under the paper's N(0, 1) init it is close to ``sum sqrt(numel)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from diswot.proxies._shared import finite_or_nan, first_tensor, prunable_layers
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe


@register_proxy("synflow", needs_grad=True)
def synflow(probe: StudentProbe) -> float:
    """log SynFlow: sum |W * dR/dW| of the |W| network on an all-ones input, in float64."""
    model = probe.fresh_model().double()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    model.eval()
    layers = prunable_layers(model)
    weights = [m.weight for m in layers]
    x = torch.ones((1, *probe.inputs.shape[1:]), dtype=torch.float64, device=probe.device)
    for w in weights:
        w.requires_grad_(True)
    with torch.enable_grad():
        out = first_tensor(model(x))
        grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    total = sum(
        float((w.detach() * g).abs().sum()) for w, g in zip(weights, grads) if g is not None
    )
    if total <= 0:
        return -math.inf
    return finite_or_nan(math.log(total))


@register_proxy("l2_norm")
def l2_norm(probe: StudentProbe) -> float:
    """Sum over Conv/Linear layers of the weight's Frobenius norm (NASLib l2_norm)."""
    with torch.no_grad():
        return finite_or_nan(
            sum(float(m.weight.double().norm()) for m in prunable_layers(probe.model))
        )
