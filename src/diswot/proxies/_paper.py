"""What the published zero-cost scores share: their papers' inits and a network's per-block features.

Each published score was measured under its authors' own initialisation, not DisWOT's N(0, 1)
(``--init gaussian``), and its numbers only reproduce under that init. :func:`paper_model` gives a
probe's student freshly built and re-initialised with one of the papers' schemes, seeded from
``probe.init_seed`` (so every score is deterministic for a seed), once per probe and scheme:

=============  =================================================================  ==================
scheme         weights                                                            used by
=============  =================================================================  ==================
``kaiming``    Conv/Linear ~ N(0, 2 / fan_in) (Kaiming normal, fan-in, ReLU gain),  AZ-NAS, VKDNW and
               biases 0, BatchNorm/GroupNorm 1 / 0 with fresh running statistics  VKDNW's jacov
``default``    PyTorch's own ``reset_parameters`` (``init_weights(.., "default")``)  MeCo, ZiCo
``gaussian``   Conv/Linear ~ N(0, 1), norms 1 / 0 (``init_weights(.., "gaussian")``)  SWAP
=============  =================================================================  ==================

``kaiming`` is the init of the AZ-NAS and VKDNW releases (their ``kaiming_norm_fanin``); it leaves
tensors that are not Conv/Linear/norm weights (LayerNorms, class tokens, position embeddings) as
the model built them.

**Blocks.** AZ-NAS reads a network as a chain of blocks: its features are the input of the first
block (the stem's output) and the output of every block. :func:`feature_blocks` picks the blocks
of every network family here by its structure, not its class:

* ``cells`` (a ``ModuleList``; NAS-Bench-201): every cell and reduction block, as AZ-NAS does on
  NB201 (stem output + 17 cell outputs);
* ``stages`` whose entries hold ``blocks`` (PiT): every transformer layer of every stage;
* ``blocks`` (a ``ModuleList``; AutoFormer): every transformer layer;
* ``layer1``, ``layer2``, ... (``nn.Sequential``; the CIFAR and ImageNet ResNets): every residual
  block of every stage;
* a ``feature_blocks()`` method returning modules, for any other network that wants to say;
* otherwise the network's direct children, minus its ``Linear`` classifier and pooling layers.

Features are recorded in call order, so a block list registered out of execution order still gives
the chain the forward pass walks.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from diswot.models import init_weights
from diswot.proxies._shared import cached, first_tensor

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: The papers' init schemes :func:`paper_model` knows (see the module docstring).
PAPER_INITS: tuple[str, ...] = ("kaiming", "default", "gaussian")

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)
_POOLS = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.Flatten,
    nn.Dropout,
)
_STAGE = re.compile(r"layer\d+")


def kaiming_fan_in_(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise ``model`` in place with the AZ-NAS/VKDNW releases' ``kaiming_norm_fanin``.

    Every Conv/Linear weight is drawn from N(0, 2 / fan_in), biases are zeroed, BatchNorm and
    GroupNorm get weight 1 / bias 0 and BatchNorm fresh running statistics. Draws come from a CPU
    generator seeded with ``seed`` and are copied to the weights' device, so a seed gives the same
    network on every device and the global RNG is left alone.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                w = torch.empty(m.weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, _NORMS):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
                if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                    m.reset_running_stats()
    return model


def paper_model(probe: StudentProbe, scheme: str) -> nn.Module:
    """The probe's student, newly built and initialised with a paper's ``scheme`` (cached).

    Built once per probe and scheme and shared by the scores that use the same scheme; a score
    that changes the network's state (BatchNorm statistics) must restore what the others read.
    """
    if scheme not in PAPER_INITS:
        raise ValueError(f"unknown paper init {scheme!r}; known: {', '.join(PAPER_INITS)}")

    def build() -> nn.Module:
        model = probe.fresh_model()
        if scheme == "kaiming":
            return kaiming_fan_in_(model, probe.init_seed)
        return init_weights(model, scheme, probe.init_seed)

    return cached(probe, f"paper_model:{scheme}", build)


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks whose outputs are a network's per-block features (rules in the module docstring)."""
    custom = getattr(model, "feature_blocks", None)
    if callable(custom):
        return list(custom())
    cells = getattr(model, "cells", None)
    if isinstance(cells, nn.ModuleList) and len(cells):
        return list(cells)
    stages = getattr(model, "stages", None)
    if (
        isinstance(stages, nn.ModuleList)
        and len(stages)
        and all(isinstance(getattr(s, "blocks", None), nn.ModuleList) for s in stages)
    ):
        return [b for s in stages for b in s.blocks]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        return list(blocks)
    layers = [
        m
        for name, m in model.named_children()
        if _STAGE.fullmatch(name) and isinstance(m, nn.Sequential)
    ]
    if layers:
        return [b for layer in layers for b in layer]
    return [m for m in model.children() if not isinstance(m, (nn.Linear, *_POOLS))]


def block_features(model: nn.Module, x: Tensor) -> list[Tensor]:
    """One forward of ``model`` on ``x``: the first block's input, then every block's output.

    The tensors stay in the autograd graph (when grad is enabled), so a caller can differentiate one
    block's output with respect to the previous one. A block called several times contributes one
    feature per call; features are in call order.
    """
    blocks = feature_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no blocks to read features from")
    feats: list[Tensor] = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        if not feats and args:
            feats.append(first_tensor(args[0]))

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        feats.append(first_tensor(out))

    handles = [blocks[0].register_forward_pre_hook(pre_hook)]
    handles += [b.register_forward_hook(hook) for b in blocks]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return feats
