"""Passes shared by several proxies of one probe, computed once per (architecture, seed).

Many zero-cost proxies are different reductions of the same backward pass: ``grad_norm``, ``snip``,
``plain`` and ``fisher`` all need dL/dW of the cross-entropy on the probe batch, ``grasp`` needs that
gradient too (as the vector of its Hessian-vector product), and ``jacov``/``epe_nas`` both need the
input Jacobian. Running each pass once per probe and letting every proxy read it is what makes
``--proxy all`` affordable on a CPU. The results live in the probe object itself (its ``memo``),
which the scorer creates fresh for every (architecture, seed), so nothing can leak from one
candidate to the next.

Gradients are taken with :func:`torch.autograd.grad`, never ``.backward()``: nothing is written into
``param.grad``, so a model can never carry gradients from one evaluation into another.

"Prunable" layers are the ``nn.Conv*d`` and ``nn.Linear`` modules with a weight, as in NASLib's
``get_layer_metric_array``: the per-layer quantities of the gradient proxies are summed over them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

T = TypeVar("T")


def cached(probe: StudentProbe, key: str, compute: Callable[[], T], *, shared: bool = False) -> T:
    """``compute()`` once per probe under ``key``; later proxies of the same probe reuse it.

    ``shared=True`` marks a pass several proxies read: its seconds are recorded in
    :func:`pass_seconds`, so a benchmark can charge it once instead of to whichever proxy ran first.
    """
    store = probe.memo
    if key not in store:
        t0 = time.perf_counter()
        store[key] = compute()
        if shared:
            pass_seconds(probe)[key] = time.perf_counter() - t0
    return store[key]


def pass_seconds(probe: StudentProbe) -> dict[str, float]:
    """Seconds spent in each shared pass computed so far on ``probe`` (``{}`` when none)."""
    return probe.pass_seconds


def first_tensor(x: object) -> Tensor:
    """The logits of a model output that may be a tensor or a tuple/list starting with one."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
    raise RuntimeError(f"model output is a {type(x).__name__}, not logits")


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Conv and Linear modules with a weight, in module order (NASLib's per-layer proxy domain)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
        and isinstance(getattr(m, "weight", None), Tensor)
    ]


def finite_or_nan(value: float) -> float:
    """Proxies report NaN (ranked last by the benchmark), never raise, on a degenerate network."""
    value = float(value)
    return value if math.isfinite(value) else math.nan


@dataclass
class LossGradients:
    """dL/dW of every prunable layer (detached), their weights, and each layer's Fisher sum."""

    layers: list[nn.Module]
    weights: list[Tensor]
    grads: list[Tensor | None]
    fisher: list[float]


class _RequireGrad:
    """Temporarily make the given tensors require grad (frozen layers are still scored)."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.tensors = tensors
        self.flags = [t.requires_grad for t in tensors]

    def __enter__(self) -> None:
        for t in self.tensors:
            t.requires_grad_(True)

    def __exit__(self, *exc: object) -> None:
        for t, flag in zip(self.tensors, self.flags):
            t.requires_grad_(flag)


def _fisher_reduce(act: Tensor, grad: Tensor, conv: bool, fan_in: int) -> float:
    """NASLib's per-layer Fisher: ``fan_in * sum_c 0.5 * mean_n (sum_positions act * grad)^2``.

    Conv outputs are ``(N, C, *spatial)``, Linear outputs ``(N, *tokens, C)``; positions are the
    spatial or token axes, so the channel axis is kept in both cases. NASLib broadcasts each output
    channel's value to every weight of that channel before summing, hence the factor ``fan_in``
    (``weight[0].numel()``); keeping it makes our values comparable with NASLib's.
    """
    p = act * grad
    g_nk = (p.flatten(2).sum(2) if conv else p.reshape(p.shape[0], -1, p.shape[-1]).sum(1)).double()
    return float(g_nk.pow(2).mean(0).mul(0.5).sum()) * fan_in


def loss_gradients(probe: StudentProbe) -> LossGradients:
    """One train-mode forward and one backward of the cross-entropy on the probe batch (cached)."""
    return cached(probe, "loss_gradients", lambda: _loss_gradients(probe), shared=True)


def _loss_gradients(probe: StudentProbe) -> LossGradients:
    model = probe.model
    model.train()
    layers = prunable_layers(model)
    weights = [m.weight for m in layers]
    fisher = [0.0] * len(layers)
    handles = []

    def make_hook(i: int, conv: bool, fan_in: int) -> Callable:
        def fwd_hook(module: nn.Module, inp: tuple, out: object) -> None:
            if isinstance(out, Tensor) and out.requires_grad:
                act = out.detach()

                def grad_hook(g: Tensor) -> None:
                    fisher[i] += _fisher_reduce(act, g.detach(), conv, fan_in)

                out.register_hook(grad_hook)

        return fwd_hook

    for i, m in enumerate(layers):
        conv = isinstance(m, nn.modules.conv._ConvNd)
        handles.append(m.register_forward_hook(make_hook(i, conv, m.weight[0].numel())))
    try:
        with torch.enable_grad(), _RequireGrad(weights):
            logits = first_tensor(model(probe.inputs))
            loss = F.cross_entropy(logits, probe.labels)
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return LossGradients(
        layers=layers,
        weights=[w.detach() for w in weights],
        grads=[None if g is None else g.detach() for g in grads],
        fisher=fisher,
    )


_ACTIVATIONS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.gelu}


class AgreementKernel(TorchFunctionMode):
    """Accumulates NASWOT's agreement kernel from the inputs of every ReLU/GELU call."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.kernel = torch.zeros(n, n, dtype=torch.float64)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in _ACTIVATIONS and args and isinstance(args[0], Tensor):
            x = args[0].detach()
            if x.dim() >= 2 and x.shape[0] == self.n:
                b = (x.reshape(self.n, -1) > 0).float()
                d = b.shape[1]
                s = b.sum(1, keepdim=True)
                # agree(i, j) = both active + both inactive = d - s_i - s_j + 2 <b_i, b_j>; float32
                # is exact here (integer counts < 2^24 per call) and the sum is kept in float64.
                k = 2.0 * (b @ b.t()) - s - s.t() + d
                self.kernel += k.double().cpu()
        return func(*args, **(kwargs or {}))


@dataclass
class InputPass:
    """Results of one train-mode forward with input gradients: the batch Jacobian and NWOT kernel."""

    jacobian: Tensor  # (N, D) float64: d sum(logits[n]) / d x[n]
    kernel: Tensor  # (N, N) float64: NASWOT's activation-agreement kernel


def input_pass(probe: StudentProbe) -> InputPass:
    """One forward (with the NASWOT kernel recorded) and one input-gradient backward (cached).

    ``jacov``/``epe_nas`` need the Jacobian and ``nwot`` the kernel of the same train-mode forward
    on the same batch, so one pass serves all three.
    """

    def compute() -> InputPass:
        model = probe.model
        model.train()
        x = probe.inputs.detach().clone().requires_grad_(True)
        mode = AgreementKernel(x.shape[0])
        with torch.enable_grad():
            with mode:
                out = first_tensor(model(x))
            (jac,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
        return InputPass(jac.detach().reshape(jac.shape[0], -1).double(), mode.kernel)

    return cached(probe, "input_pass", compute, shared=True)


def input_jacobian(probe: StudentProbe) -> Tensor:
    """``d sum(logits) / d x`` per sample, ``(N, D)`` float64: NASLib's batch Jacobian."""
    return input_pass(probe).jacobian
