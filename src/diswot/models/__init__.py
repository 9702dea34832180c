"""Model zoo: one registry, one ``create_model`` entry point, and weight-init schemes.

Every network the search and distillation code touches (teachers, S1 students, NB201 cells, ...)
is built through :func:`create_model`, so a student named in a search result can be rebuilt
anywhere from its name alone. Adding a family is one decorated factory in a new module of this
package: ``@register_model("name") def f(num_classes: int = 100, **kw) -> nn.Module``. Modules of
this package are imported automatically (see the bottom of this file), so no other file changes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from diswot._registry import Registry
from diswot.errors import DiswotError

__all__ = [
    "INIT_SCHEMES",
    "MODELS",
    "create_model",
    "init_weights",
    "is_model_name",
    "register_model",
    "reinit_covers",
]

ModelFactory = Callable[..., nn.Module]

#: name -> factory ``f(num_classes: int = 100, **kw) -> nn.Module``.
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name`` (case-insensitive)."""
    return MODELS.register(name)  # type: ignore[return-value]


_S1_CODE = re.compile(r"^[1-9]{3}$")
_DEPTH_TRIPLE = re.compile(r"^resnet_(\d+)-(\d+)-(\d+)$", re.IGNORECASE)


def _accepted_forms() -> str:
    return (
        f"accepted: a registered name ({', '.join(MODELS.names())}), a 3-digit S1 code like "
        "'713', 'resnet_7-1-3', or an NB201 arch string like "
        "'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|'"
    )


def is_model_name(name: str) -> bool:
    """Whether :func:`create_model` knows the form of ``name`` (without building it): a registered
    name, an NB201 arch string, an S1 code or a ``resnet_a-b-c`` depth triple. Architectures of the
    other search spaces are built by their space (:func:`diswot.spaces.get_space`)."""
    from diswot.models.nb201 import is_arch_string

    key = str(name).strip()
    return (
        key in MODELS
        or is_arch_string(key)
        or bool(_S1_CODE.match(key) or _DEPTH_TRIPLE.match(key))
    )


def create_model(name: str, num_classes: int = 100, **kw) -> nn.Module:
    """Build a model from its name.

    ``name`` is one of: a registered name (``resnet20``; case-insensitive); an S1 code of three
    digits 1-9 giving BasicBlocks per stage of a 16/32/64 CIFAR ResNet (``"713"``); the general
    form ``"resnet_7-1-3"`` for any depths; or an NB201 arch string. Extra ``kw`` go to the
    builder (``widths=`` for CIFAR ResNets, ``C=``/``N=`` for NB201).
    """
    from diswot.models.cifar_resnet import CifarResNet
    from diswot.models.nb201 import NB201Network, is_arch_string

    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise DiswotError(f"--num-classes must be an integer >= 2; got {num_classes!r}")
    if not isinstance(name, str) or not name.strip():
        raise DiswotError(f"model name must be a non-empty string; {_accepted_forms()}")
    key = name.strip()
    if key in MODELS:
        return MODELS.get(key)(num_classes=num_classes, **kw)
    if is_arch_string(key):
        return NB201Network(key, num_classes=num_classes, **kw)
    if _S1_CODE.match(key):
        return CifarResNet(tuple(int(c) for c in key), num_classes=num_classes, **kw)
    m = _DEPTH_TRIPLE.match(key)
    if m:
        depths = tuple(int(g) for g in m.groups())
        if min(depths) < 1:
            raise DiswotError(f"model {name!r}: every stage depth must be >= 1")
        return CifarResNet(depths, num_classes=num_classes, **kw)
    raise DiswotError(f"unknown model {name!r}; {_accepted_forms()}")


INIT_SCHEMES: tuple[str, ...] = ("gaussian", "default")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "gaussian", seed: int | None = None) -> nn.Module:
    """(Re-)initialise ``model`` in place and return it.

    ``gaussian`` is the DisWOT paper's scheme for scoring random networks: every Conv/Linear
    weight ~ N(0, 1), their biases 0, norm layers weight 1 / bias 0 (BN running stats reset). The
    samples are drawn on the CPU from a generator seeded with ``seed`` and then copied, so a seed
    gives identical weights on CPU and CUDA; ``seed=None`` draws from torch's global RNG.

    ``default`` keeps PyTorch's own initialisation. Its determinism relies on building the model
    under ``torch.manual_seed(seed)``; when ``seed`` is given, every submodule's
    ``reset_parameters`` is re-run under a forked RNG seeded with ``seed`` so that an already-built
    model is re-drawn reproducibly without disturbing the caller's global RNG stream (on CUDA the
    draws come from the CUDA RNG, so they differ from the CPU draws). ``seed=None`` leaves the
    model untouched.
    """
    if scheme not in INIT_SCHEMES:
        raise DiswotError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        if seed is not None:
            devices = sorted(
                {p.device for p in model.parameters() if p.device.type == "cuda"}, key=str
            )
            with torch.random.fork_rng(devices=[d.index or 0 for d in devices]):
                torch.manual_seed(seed)
                for module in model.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
        return model

    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    staged_to: list[Tensor] = []  # device weights whose CPU draws travel in one copy
    staged_from: list[Tensor] = []
    zeros: list[Tensor] = []  # biases, norm shifts, running means, batch counters
    ones: list[Tensor] = []  # norm scales, running variances
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            w = module.weight
            if _stage(w):
                staged_to.append(w)
                staged_from.append(torch.randn(w.shape, generator=gen, dtype=torch.float32))
            elif w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
                w.normal_(generator=gen)  # the draws of randn(w.shape), without a temporary
            else:
                w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w))
            if module.bias is not None:
                zeros.append(module.bias)
        elif isinstance(module, norm_types):
            if getattr(module, "weight", None) is not None:
                ones.append(module.weight)
            if getattr(module, "bias", None) is not None:
                zeros.append(module.bias)
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                # What reset_running_stats() does, batched with the rest below.
                for name, into in (
                    ("running_mean", zeros),
                    ("running_var", ones),
                    ("num_batches_tracked", zeros),
                ):
                    if getattr(module, name, None) is not None:
                        into.append(getattr(module, name))
    # Constants in a few fused calls instead of five small ones per norm layer (on a GPU each is
    # a kernel launch). zero-then-add-one writes exact ones.
    if zeros:
        torch._foreach_zero_(zeros)
    if ones:
        torch._foreach_zero_(ones)
        torch._foreach_add_(ones, 1)
    if staged_to and len({w.device for w in staged_to}) == 1:
        # One host-to-device copy of every draw instead of one per layer (each of those can stall
        # the host), then one fused device-side copy into the weights. Same values either way.
        flat = torch.cat([d.reshape(-1) for d in staged_from]).to(staged_to[0].device)
        parts = flat.split([d.numel() for d in staged_from])
        torch._foreach_copy_(staged_to, [p.view_as(w) for p, w in zip(parts, staged_to)])
    else:  # a model spread over several devices: one copy per weight
        for w, d in zip(staged_to, staged_from):
            w.copy_(d.to(w))
    return model


def _stage(w: Tensor) -> bool:
    """Draws for this weight go through the single staged copy (CUDA float32 weights)."""
    return w.device.type == "cuda" and w.dtype == torch.float32 or _STAGE_ON_CPU


def reinit_covers(model: nn.Module) -> bool:
    """Whether :func:`init_weights` rewrites *every* parameter and buffer of ``model``.

    True when each parameter is the weight or bias of a Conv, Linear or norm layer and each buffer
    a BatchNorm running statistic: re-initialising such a model under a seed then gives exactly
    the weights a fresh build under that seed would, so a built network can be reused for the next
    seed instead of being constructed again (construction, not the forward, bounds GPU scoring).
    False for models with other state (a ViT's position embedding and class token). Reads the
    modules' own parameter/buffer tables directly: it runs once per scored candidate.
    """
    for module in model.modules():
        params = [k for k, v in module._parameters.items() if v is not None]
        if params and (not isinstance(module, _INIT_OWNERS) or not _WEIGHT_BIAS.issuperset(params)):
            return False
        buffers = [k for k, v in module._buffers.items() if v is not None]
        if buffers and (
            not isinstance(module, nn.modules.batchnorm._NormBase)
            or not _BN_STATS.issuperset(buffers)
        ):
            return False
    return True


#: Tests set this to exercise the staged copy of :func:`init_weights` without a GPU.
_STAGE_ON_CPU = False

_INIT_OWNERS = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)
_WEIGHT_BIAS = frozenset({"weight", "bias"})
_BN_STATS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def _import_submodules() -> None:
    # Each model family registers itself on import; importing every public module of the package
    # means a new family needs no edit here. Errors propagate: a broken model file should be loud.
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_submodules()
