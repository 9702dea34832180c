"""VKDNW (Tybl & Neumann, "Training-free Neural Architecture Search through Variance of Knowledge of
Deep Network Weights", CVPR 2025; release: github.com/ondratybl/VKDNW).

VKDNW reads the spectrum of the empirical Fisher information matrix (FIM) of the weights at
initialisation: the more even its eigenvalues, the more evenly hard every weight direction is to
estimate. The network is the student under the release's Kaiming fan-in init
(:func:`~diswot.proxies._paper.paper_model`, scheme ``kaiming``) in eval mode with fresh BatchNorm
statistics, on the probe batch (the release: 64 images). As the release (at the paper's Table 1):

* the FIM is taken over one scalar per parameter tensor (element 0 of each), for the first
  :data:`VKDNW_PARAMS` tensors in ``named_parameters`` order;
* per sample ``n`` the logits' Jacobian ``J_n`` (classes x scalars; the release: ``torch.func``'s
  ``vmap`` over samples of ``jacrev``; here batched backward passes and ``torch.func.jvp``, the
  same numbers, see :func:`_logit_jacobian`); ``p_n`` is the softmax smoothed as
  ``(1 - 0.05) p + 0.05 / K`` and ``L_n`` the lower-triangular factor with
  ``L_n L_n^T = diag(p_n) - p_n p_n^T``; the FIM is ``mean_n (L_n J_n)^T (L_n J_n)``;
* its singular values' deciles ``q_1..q_9`` (``torch.quantile``, linear), normalised as
  ``t = q / (sum q + 1e-10)``, give ``vkdnw = -sum t log(t + 1e-10)``.

``(L_n J_n)^T (L_n J_n)`` is what the release computes; the Fisher information itself is
``J_n^T L_n L_n^T J_n``. The two weight ``J_n`` by matrices with the same spectrum but are not equal;
:func:`fisher_spectrum` returns the entropy of both (``entropy`` is the release's) so the two can
be compared without recomputing.

The terms registered here:

* ``vkdnw``: the entropy above;
* ``trainable_layers``: the paper's aleph, the number of parameter tensors (``named_parameters``);
* ``vkdnw_single``: aleph first, then the entropy: ``aleph + vkdnw / (1 + ln 9)`` (the entropy of 9
  deciles is at most ``ln 9``, so the fraction stays below 1), ranking networks as the release's
  lexicographic ``rank((aleph, vkdnw))``;
* ``vkdnw_jacov``: jacov (Mellor et al.) as VKDNW_agg uses it, under the Kaiming init: the
  correlation of the per-sample input gradients of the summed logits in train mode.

The paper's ranking VKDNW_agg is a population aggregate of ``vkdnw_single``, ``az_expressivity``,
``az_trainability``, ``flops`` and ``vkdnw_jacov``: :mod:`diswot.proxies.aggregate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from diswot.proxies._paper import paper_model
from diswot.proxies._shared import cached, finite_or_nan, first_tensor
from diswot.proxies.jacobian import _K as JACOV_K
from diswot.proxies.jacobian import _corrcoef
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: Parameter tensors the FIM is taken over (the first ones), one scalar each: the release's
#: ``params_grad_len`` at the paper's Table 1.
VKDNW_PARAMS = 128
#: Label smoothing of the softmax whose covariance weights the FIM (the release's ``alpha``).
VKDNW_ALPHA = 0.05
_DECILES = torch.arange(1, 10, dtype=torch.float64) / 10
_EPS = 1e-10
_LN9 = math.log(9.0)


@dataclass(frozen=True)
class FisherSpectrum:
    """What one Fisher pass yields for one probe."""

    layers: int  # aleph: parameter tensors of the network
    entropy: float  # vkdnw, from the release's (L J)^T (L J)
    entropy_fisher: float  # the same from J^T (L L^T) J, the Fisher information proper


def smoothed_cov_factor(logits: Tensor, alpha: float = VKDNW_ALPHA) -> Tensor:
    """``L`` (``(N, K, K)``, lower triangular) with ``L L^T = diag(p) - p p^T`` per sample, for
    ``p = (1 - alpha) softmax(logits) + alpha / K``: the release's stick-breaking factor."""
    k = logits.shape[1]
    p = torch.softmax(logits.double(), dim=1) * (1 - alpha) + alpha / k
    q = 1 - torch.cumsum(p, dim=1)
    q[:, -1] = 0.0
    q_prev = torch.roll(q, shifts=1, dims=1)
    q_prev[:, 0] = 1.0
    d = torch.sqrt((p * q / q_prev).clamp_min(0.0))
    # Entries over the last column divide by q_K = 0: -inf, then zeroed as the release does.
    below = torch.nan_to_num(-p.unsqueeze(2) / q.unsqueeze(1), neginf=0.0, posinf=0.0)
    eye = torch.eye(k, dtype=p.dtype, device=p.device)
    lower = torch.tril(below, diagonal=-1) + eye
    return lower * d.unsqueeze(1)


def decile_entropy(eigenvalues: Tensor) -> float:
    """The release's entropy of the deciles of a spectrum (see the module docstring)."""
    q = torch.quantile(eigenvalues.double(), _DECILES.to(eigenvalues.device))
    t = q / (q.abs().sum() + _EPS)
    return float(-(t * torch.log(t + _EPS)).sum())


def _owners(model: nn.Module, names: list[str]) -> list[tuple[nn.Module, str]]:
    """The module that registers each named parameter, and the parameter's name in it."""
    where = {
        f"{prefix}.{p}" if prefix else p: (module, p)
        for prefix, module in model.named_modules()
        for p, _ in module.named_parameters(recurse=False)
    }
    return [where[n] for n in names]


def _element0_tangent(module: nn.Module, pname: str, args: tuple, kwargs: dict) -> Tensor:
    """``d module(*args) / d param.flatten()[0]`` per sample, by one forward-mode pass."""
    w = getattr(module, pname).detach()

    def run(s: Tensor) -> Tensor:
        swapped = torch.cat([s.reshape(1), w.reshape(-1)[1:]]).reshape(w.shape)
        return first_tensor(functional_call(module, {pname: swapped}, args, kwargs))

    return jvp(run, (w.reshape(-1)[0],), (torch.ones((), dtype=w.dtype, device=w.device),))[1]


def _nonzero_box(t: Tensor) -> list[Tensor]:
    """Per non-batch dimension, the indices at which ``t`` has a nonzero entry."""
    nz = t.ne(0)
    return [
        nz.movedim(d, 0).reshape(nz.shape[d], -1).any(1).nonzero().squeeze(1)
        for d in range(1, t.dim())
    ]


def _take(t: Tensor, box: list[Tensor]) -> Tensor:
    for d, idx in enumerate(box, start=1):
        if idx.numel() < t.shape[d]:
            t = t.index_select(d, idx)
    return t


def _logit_jacobian(model: nn.Module, x: Tensor, names: list[str]) -> Tensor:
    """Per-sample Jacobian ``(N, K, P)`` of the logits w.r.t. element 0 of each named parameter.

    In eval mode no sample sees another, so the gradient of ``sum_n logits[n, k]`` with respect to
    a module's output is, sample by sample, that of ``logits[n, k]``: ``K`` batched backward passes
    give every module's per-sample output gradient ``G_k``. A parameter's element 0 moves its
    module's output along the tangent ``T`` (``torch.func.jvp`` of that module alone), and
    ``J[n, k] = <G_k[n], T[n]>``. A parameter the network itself registers (a class token) has the
    whole network as its module, whose tangent is ``J[:, :, p]`` directly. This avoids the per-sample
    weight gradients of the release's ``vmap(jacrev(...))``, which cost about as much again per
    parameter.
    """
    owners = _owners(model, names)
    calls: dict[nn.Module, list[tuple[tuple, dict, Tensor]]] = {m: [] for m, _ in owners}
    calls.pop(model, None)

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
        detached = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        calls[module].append((detached, kwargs, first_tensor(out)))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in calls]
    try:
        with torch.enable_grad():
            logits = first_tensor(model(x))
    finally:
        for h in handles:
            h.remove()
    n, k = logits.shape
    jac = torch.zeros(n, k, len(names), dtype=torch.float64, device=logits.device)
    uses: list[tuple[int, Tensor, Tensor]] = []  # (column, module output, its tangent)
    with torch.no_grad():
        for col, (module, pname) in enumerate(owners):
            if module is model:
                jac[:, :, col] = _element0_tangent(model, pname, (x,), {}).double()
                continue
            for args, kwargs, out in calls[module]:
                uses.append((col, out, _element0_tangent(module, pname, args, kwargs)))
    outs = list({id(o): o for _, o, _ in uses}.values())
    index = {id(o): i for i, o in enumerate(outs)}
    # A tangent is zero outside the units its parameter feeds (one channel for most weights): the
    # contraction runs over the smallest box, dimension by dimension, that holds them.
    support = []
    for col, out, tangent in uses:
        box = _nonzero_box(tangent)
        support.append((col, index[id(out)], box, _take(tangent, box).double()))
    for c in range(k):
        cot = torch.zeros_like(logits)
        cot[:, c] = 1.0
        grads = torch.autograd.grad(logits, outs, cot, retain_graph=True, allow_unused=True)
        for col, i, box, tangent in support:
            if grads[i] is not None:
                g = _take(grads[i], box).double()
                jac[:, c, col] += (g * tangent).flatten(1).sum(1)
    return jac


def fisher_spectrum(probe: StudentProbe) -> FisherSpectrum:
    """One Fisher pass of the probe (cached): aleph and both entropies."""

    def compute() -> FisherSpectrum:
        model = paper_model(probe, "kaiming")
        for m in model.modules():  # fresh statistics, as in a newly built network
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()
        model.eval()
        names = [n for n, _ in model.named_parameters()]
        x = probe.inputs.detach()
        with torch.no_grad():
            factor = smoothed_cov_factor(first_tensor(model(x)))
        jac = _logit_jacobian(model, x, names[:VKDNW_PARAMS]).double()
        released = factor @ jac
        proper = factor.transpose(1, 2) @ jac
        entropies = [
            decile_entropy(torch.linalg.svdvals((g.transpose(1, 2) @ g).mean(0)))
            for g in (released, proper)
        ]
        return FisherSpectrum(len(names), *entropies)

    return cached(probe, "vkdnw_fisher", compute, shared=True)


@register_proxy("vkdnw", needs_grad=True)
def vkdnw(probe: StudentProbe) -> float:
    """VKDNW: entropy of the deciles of the weights' Fisher information spectrum."""
    return finite_or_nan(fisher_spectrum(probe).entropy)


@register_proxy("trainable_layers")
def trainable_layers(probe: StudentProbe) -> float:
    """Number of parameter tensors (VKDNW's aleph, 'number of trainable layers')."""
    return float(sum(1 for _ in paper_model(probe, "kaiming").parameters()))


@register_proxy("vkdnw_single", needs_grad=True)
def vkdnw_single(probe: StudentProbe) -> float:
    """VKDNW_single: trainable layers first, then the VKDNW entropy (aleph + H / (1 + ln 9))."""
    spec = fisher_spectrum(probe)
    return finite_or_nan(spec.layers + spec.entropy / (1.0 + _LN9))


@register_proxy("vkdnw_jacov", needs_grad=True)
def vkdnw_jacov(probe: StudentProbe) -> float:
    """jacov under the Kaiming fan-in init, as VKDNW_agg uses it (higher is better)."""
    model = paper_model(probe, "kaiming")
    model.train()
    x = probe.inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = first_tensor(model(x))
        (jac,) = torch.autograd.grad(out, x, torch.ones_like(out))
    corr = _corrcoef(jac.reshape(jac.shape[0], -1).double().cpu().numpy())
    if corr is None:
        return math.nan
    v = np.linalg.eigvalsh(corr)
    with np.errstate(all="ignore"):
        return finite_or_nan(-np.sum(np.log(v + JACOV_K) + 1.0 / (v + JACOV_K)))
