"""Exact parameter and FLOP counts, reconciled with the NAS-Bench-201 / NASLib numbers.

Two FLOP conventions are offered, because the literature uses both and they differ by ~1%:

``"macs"``
    Multiply-accumulates of convolutions and linear layers only (bias adds not counted), i.e. half of
    what :class:`torch.utils.flop_counter.FlopCounterMode` reports for ``convolution``/``mm``/
    ``addmm``. This is the number quoted for CIFAR ResNets (ResNet20 = 40.82 M) and NB201's own
    ``get_model_infos`` (all-``nor_conv_3x3`` cell = 220.12 M).

``"nb201"``
    The convention of NASLib's precomputed ``flops`` scores for NB201 (``zc_nasbench201_*.json``),
    which were counted per module with torchstat-style rules. On top of the MACs above it adds,
    per forward pass of each module (batch included):

    * Conv bias: one add per output element (NB201 has no conv biases; kept for completeness);
    * BatchNorm: ``numel(input)``, doubled when affine (normalise + scale/shift);
    * ReLU-family activations: ``numel(input)``;
    * ``AvgPool2d``/``MaxPool2d``: ``kernel_h * kernel_w`` per output element;
    * ``AdaptiveAvg/MaxPool2d``: ``C * (h_bin + 1) * (w_bin + 1)`` per output cell. The ``+ 1`` is an
      off-by-one of the original counter (an 8x8 -> 1x1 global pool counts 81 per channel), kept
      on purpose: without it the counts are off by 5,184 (CIFAR) / 1,600 (ImageNet16) from NASLib.

    Linear biases, ``Identity`` and the NB201 ``none`` op count nothing. With these rules the
    counts equal NASLib's ``flops`` (and the parameter counts its ``params``) for every cell in the
    data set to the printed precision, on CIFAR-10, CIFAR-100 and ImageNet16-120 (16x16 input).
    The all-``nor_conv_3x3`` cell with 10 classes gives 222.860992 M.

``"auto"`` (default)
    ``"nb201"`` for NAS-Bench-201 cell networks, so their counts match the NB201/NASLib tables
    (222.86 M for the all-conv3x3 cell), and ``"macs"`` for everything else, so ResNet20 reads the
    40.82 M quoted everywhere. Both numbers the issue tracker and the literature quote hold at once.

torch's counter has no formulas for normalisation, activations or pooling, so those extra terms are
added from forward hooks on the modules (the convention is defined per module, so hooks are the
faithful place). Profiling runs one real forward pass in eval mode under ``no_grad``; the model's
parameters, buffers and training flags are left exactly as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

from diswot.errors import DiswotError

__all__ = ["CONVENTIONS", "ModelCost", "count_params", "profile", "profile_arch"]

Convention = Literal["auto", "nb201", "macs"]
CONVENTIONS: tuple[str, ...] = ("auto", "nb201", "macs")

_RELU_TYPES = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)
_POOL_TYPES = (nn.AvgPool2d, nn.MaxPool2d)
_ADAPTIVE_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class ModelCost:
    """Size of a model: ``params`` (trainable + frozen parameters, buffers excluded) and ``flops``.

    ``flops`` counts multiply-adds for one forward pass of the profiled input size, in the
    convention chosen when profiling (see the module docstring); divide by 1e6 for the "M" unit of
    the NB201 tables.
    """

    params: int
    flops: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def flops_m(self) -> float:
        return self.flops / 1e6


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors once), as NB201 and NASLib count them."""
    return sum(p.numel() for p in model.parameters())


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _adaptive_pool_ops(inp: torch.Tensor, out: torch.Tensor) -> int:
    # Per output cell: channels * (bin_h + 1) * (bin_w + 1), the original counter's off-by-one.
    n, c, h, w = inp.shape
    oh, ow = out.shape[-2], out.shape[-1]
    rows = sum(math.ceil((i + 1) * h / oh) - math.floor(i * h / oh) + 1 for i in range(oh))
    cols = sum(math.ceil((j + 1) * w / ow) - math.floor(j * w / ow) + 1 for j in range(ow))
    return n * c * rows * cols


def _extra_ops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """NB201/NASLib per-module terms that torch's FLOP counter does not report."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() if module.bias is not None else 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return inp.numel() * (2 if module.affine else 1)
    if isinstance(module, _RELU_TYPES):
        return inp.numel()
    if isinstance(module, _POOL_TYPES):
        kh, kw = _pair(module.kernel_size)
        return out.numel() * kh * kw
    if isinstance(module, _ADAPTIVE_POOL_TYPES) and inp.dim() == 4:
        return _adaptive_pool_ops(inp, out)
    return 0


_aten = torch.ops.aten
# Ops whose decompositions are elementwise only: skipping them saves most of the counting overhead.
_NO_FLOP_DECOMP = frozenset(
    (
        _aten.native_batch_norm,
        _aten._native_batch_norm_legit,
        _aten._native_batch_norm_legit_no_training,
        _aten.native_layer_norm,
        _aten.native_group_norm,
    )
)

_COUNTED_TYPES = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    *_RELU_TYPES,
    *_POOL_TYPES,
    *_ADAPTIVE_POOL_TYPES,
)


_SHAPE_WRAPPER_CODE = shape_wrapper(lambda: 0).__code__


def _shapes(x: object) -> object:
    if isinstance(x, torch.Tensor):
        return x.shape
    if isinstance(x, list):
        return [_shapes(i) for i in x]
    if isinstance(x, tuple) and not isinstance(x, torch.Size):
        return tuple(_shapes(i) for i in x)
    return x


class _MacCounter(TorchDispatchMode):
    """``FlopCounterMode``'s counting core without its module-hierarchy bookkeeping.

    It looks up the same per-op formulas (``torch.utils.flop_counter.flop_registry``) and, like
    ``FlopCounterMode``, decomposes ops that have no formula in case they hide a matmul/conv,
    except normalisation ops whose decompositions only do elementwise work, and turns tensors into
    shapes without pytree, which makes it about twice as fast as ``FlopCounterMode``
    (``benchmarks/cost_terms.py``); the tests check equal totals.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        packet = func._overloadpacket
        formula = flop_registry.get(packet)
        if formula is None and packet not in _NO_FLOP_DECOMP:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            if formula.__code__ is _SHAPE_WRAPPER_CODE:
                # Same as torch's shape_wrapper (tensors -> shapes), minus its pytree overhead.
                raw = formula.__wrapped__
                kw = {k: _shapes(v) for k, v in kwargs.items()}
                self.flops += raw(*_shapes(args), out_shape=_shapes(out), **kw)
            else:
                self.flops += formula(*args, **kwargs, out_val=out)
        return out


#: Leaf modules whose own forward does no multiply-accumulate (elementwise, normalisation, pooling,
#: reshaping): a network made of these, convolutions, linear layers and containers has all its
#: MACs in the convolutions and linear layers.
_NO_MAC_LEAVES = (
    nn.modules.batchnorm._BatchNorm,
    *_RELU_TYPES,
    *_POOL_TYPES,
    *_ADAPTIVE_POOL_TYPES,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
)
_MAC_LEAVES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _macs_in_leaves(model: nn.Module) -> bool:
    """Whether every MAC of ``model``'s forward happens inside a conv or linear leaf module.

    True when each module is such a leaf, a no-MAC leaf or a plain container, running torch's own
    ``forward``, or a class that itself declares ``macs_in_submodules = True`` (diswot's NB201 and
    ResNet classes, whose forwards only call submodules and add, pool or reshape). A subclass that
    overrides ``forward`` (a LoRA linear, say) does not qualify, and neither does anything unknown:
    those are counted by dispatch, which sees every op.
    """
    for m in model.modules():
        cls = type(m)
        if cls.__dict__.get("macs_in_submodules", False):
            continue
        if isinstance(m, (*_MAC_LEAVES, *_NO_MAC_LEAVES, *_CONTAINERS)) and _torch_forward(cls):
            continue
        return False
    return True


def _torch_forward(cls: type) -> bool:
    """Whether ``cls.forward`` is one of torch's own (not overridden outside torch)."""
    for klass in cls.__mro__:
        if "forward" in klass.__dict__:
            return klass.__module__.startswith("torch.")
    return False


def _count(model: nn.Module, x: torch.Tensor, convention: str) -> int:
    """MACs of one forward pass of ``model`` on ``x``, plus the NB201 extra terms for that
    convention (from hooks on the modules the convention defines them for).

    Where :func:`_macs_in_leaves` holds (diswot's own networks), the MACs come from hooks on the
    conv and linear leaves too: the same totals (tested) without a dispatch mode, whose first use
    imports ``torch._dynamo`` (most of a short search's start-up, docs/scale.md). Anything else runs under
    :class:`_MacCounter`, which sees every op.
    """
    total = [0]

    def extra(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            total[0] += _extra_ops(module, args[0], out)

    def macs(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            total[0] += out.numel() * module.weight[0].numel()  # (C_in / groups) * kernel each
        else:
            total[0] += out.numel() * module.in_features

    by_hooks = _macs_in_leaves(model)
    handles = []
    for m in model.modules():
        if convention == "nb201" and isinstance(m, _COUNTED_TYPES):
            handles.append(m.register_forward_hook(extra))
        if by_hooks and isinstance(m, _MAC_LEAVES):
            handles.append(m.register_forward_hook(macs))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's eval-mode fast path is one fused kernel with no FLOP formula.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        if by_hooks:
            model(x)
        else:
            with _MacCounter() as counter:
                model(x)
            # torch counts a multiply-add as 2 FLOPs for convolution/mm/addmm/bmm.
            total[0] += counter.flops // 2
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
    return total[0]


def profile(
    model: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 32, 32),
    convention: Convention = "auto",
) -> ModelCost:
    """Count ``model``'s parameters and FLOPs for one forward pass of a zero tensor of ``input_size``.

    The batch size in ``input_size`` multiplies the FLOPs (NB201 tables use batch 1). The pass runs
    on the model's own device and dtype, in eval mode under ``no_grad``, so BN running statistics
    and parameters are untouched; every submodule's training flag is restored afterwards. (A real
    pass on the CPU is faster than a shape-only pass on the ``meta`` device, whose kernels are
    Python decompositions; models already on ``meta`` are still accepted.)
    """
    if convention not in CONVENTIONS:
        raise DiswotError(
            f"unknown FLOP convention {convention!r}; known: {', '.join(CONVENTIONS)}"
        )
    if convention == "auto":
        from diswot.models.nb201 import NB201Network

        convention = "nb201" if isinstance(model, NB201Network) else "macs"
    size = tuple(int(s) for s in input_size)
    if len(size) < 2 or any(s < 1 for s in size):
        raise DiswotError(f"input_size must be positive dims like (1, 3, 32, 32); got {input_size}")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modules = list(model.modules())
    modes = [m.training for m in modules]
    for m in modules:  # eval mode without Module.train's recursion and __setattr__ overhead
        object.__setattr__(m, "training", False)
    threads = torch.get_num_threads()
    # A batch-1 pass of a small net gains nothing from intra-op threads, and on a busy machine
    # spinning OpenMP workers make it 10x+ slower; use one thread for the pass, then restore.
    single = device.type == "cpu" and threads > 1
    if single:
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            flops = _count(model, torch.zeros(size, device=device, dtype=dtype), convention)
    finally:
        if single:
            torch.set_num_threads(threads)
        for m, training in zip(modules, modes):
            object.__setattr__(m, "training", training)
    return ModelCost(params=count_params(model), flops=int(flops))


@lru_cache(maxsize=16384)
def _profile_arch_cached(
    name: str, num_classes: int, input_size: tuple[int, ...], convention: str
) -> ModelCost:
    from diswot.models._create import create_model

    model = create_model(name, num_classes=num_classes)
    return profile(model, input_size, convention)  # type: ignore[arg-type]


def profile_arch(
    name: str,
    num_classes: int = 100,
    input_size: tuple[int, ...] = (1, 3, 32, 32),
    convention: Convention = "auto",
) -> ModelCost:
    """Cached :func:`profile` of ``create_model(name, num_classes)``; search re-profiles a lot."""
    return _profile_arch_cached(
        str(name).strip(), int(num_classes), tuple(int(s) for s in input_size), convention
    )


profile_arch.cache_clear = _profile_arch_cached.cache_clear  # type: ignore[attr-defined]
profile_arch.cache_info = _profile_arch_cached.cache_info  # type: ignore[attr-defined]
