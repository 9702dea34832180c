"""Weight-init schemes: the paper's N(0, 1) scheme and PyTorch's own, both seeded, and the check
that a network is fully rewritten by them (which lets the scorer re-initialise a network instead of
building it again)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diswot.errors import DiswotError

__all__ = ["INIT_SCHEMES", "init_weights", "reinit_covers"]

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
    return w.device.type == "cuda" and w.dtype == torch.float32


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


_INIT_OWNERS = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)
_WEIGHT_BIAS = frozenset({"weight", "bias"})
_BN_STATS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
