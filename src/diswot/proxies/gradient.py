"""Loss-gradient proxies: grad_norm, snip, grasp, fisher, plain (NASLib's definitions and names).

All five read one shared train-mode forward/backward of the cross-entropy on the probe batch
(:func:`~diswot.proxies._shared.loss_gradients`) and sum a per-layer quantity over the Conv and Linear
layers, as NASLib does:

=========  ==========================================  ===================================
name       per layer                                    reference
=========  ==========================================  ===================================
grad_norm  ``||dL/dW||_F``                              Abdelfattah et al., ICLR 2021
snip       ``sum |W * dL/dW|``                          Lee et al., ICLR 2019
plain      ``sum W * dL/dW`` (signed)                   Mozer & Smolensky, 1989
fisher     ``sum_c 0.5 mean_n (sum_xy a * dL/da)^2``    Theis et al., 2018 (a: layer output)
grasp      ``sum -W * (H g)``                           Wang et al., ICLR 2020
=========  ==========================================  ===================================

``grasp`` needs a Hessian-vector product: a second forward with ``create_graph=True`` whose gradient
is dotted with the (detached) shared gradient ``g`` and differentiated again. Reusing ``g`` from the
shared pass saves one of NASLib's two backward passes while computing the same quantity.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from diswot.proxies._shared import (
    _RequireGrad,
    cached,
    finite_or_nan,
    first_tensor,
    loss_gradients,
)
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe


@register_proxy("grad_norm", needs_labels=True, needs_grad=True)
def grad_norm(probe: StudentProbe) -> float:
    """Sum over layers of the Frobenius norm of dL/dW (NASLib grad_norm)."""
    lg = loss_gradients(probe)
    return finite_or_nan(sum(float(g.double().norm()) for g in lg.grads if g is not None))


@register_proxy("snip", needs_labels=True, needs_grad=True)
def snip(probe: StudentProbe) -> float:
    """SNIP connection sensitivity sum |W * dL/dW|."""
    lg = loss_gradients(probe)
    return finite_or_nan(
        sum(
            float((w.double() * g.double()).abs().sum())
            for w, g in zip(lg.weights, lg.grads)
            if g is not None
        )
    )


@register_proxy("plain", needs_labels=True, needs_grad=True)
def plain(probe: StudentProbe) -> float:
    """Signed first-order saliency sum W * dL/dW (NASLib plain)."""
    lg = loss_gradients(probe)
    return finite_or_nan(
        sum(
            float((w.double() * g.double()).sum())
            for w, g in zip(lg.weights, lg.grads)
            if g is not None
        )
    )


@register_proxy("fisher", needs_labels=True, needs_grad=True)
def fisher(probe: StudentProbe) -> float:
    """Fisher information of layer outputs, summed over channels and layers (NASLib fisher)."""
    return finite_or_nan(sum(loss_gradients(probe).fisher))


@register_proxy("grasp", needs_labels=True, needs_grad=True)
def grasp(probe: StudentProbe) -> float:
    """GraSP gradient-signal preservation sum -W * Hg (NASLib grasp)."""

    def compute() -> float:
        lg = loss_gradients(probe)
        if all(g is None for g in lg.grads):
            return math.nan
        model = probe.model
        model.train()
        weights = [m.weight for m in lg.layers]
        with torch.enable_grad(), _RequireGrad(weights):
            loss = F.cross_entropy(first_tensor(model(probe.inputs)), probe.labels)
            grad_f = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
            z = sum(
                (g * gf).sum()
                for g, gf in zip(lg.grads, grad_f)
                if g is not None and gf is not None
            )
            if not isinstance(z, torch.Tensor) or not z.requires_grad:
                return 0.0
            hg = torch.autograd.grad(z, weights, allow_unused=True)
        total = sum(
            float((-w.detach().double() * h.double()).sum())
            for w, h in zip(weights, hg)
            if h is not None
        )
        return finite_or_nan(total)

    return cached(probe, "grasp", compute)
