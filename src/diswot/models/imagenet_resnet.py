"""ImageNet ResNets (ResNet-18/34/50) and a generic stage-list residual network (``ZenResNet``).

One class, :class:`ZenResNet`, builds every network of this module from a list of stages, so the
``resnet-imagenet`` search space and the classic ResNet teachers share their code and their module
names. Those names follow torchvision's ResNet exactly (``conv1``/``bn1`` stem, ``layer1..layerN``
of blocks with ``conv1``/``bn1``/``conv2``/... and a ``downsample`` Sequential of 1x1 conv + BN,
``fc`` head), because users bring torchvision checkpoints: ``resnet50().load_state_dict(sd)`` with a
torchvision ``state_dict`` works unchanged. Bottlenecks put the stride on the KxK conv (ResNet
v1.5, as torchvision does).

Architecture strings (the ``resnet-imagenet`` space's encoding, parsed by :func:`parse_arch`) are
``|``-joined tokens::

    stem{K}x{C}[mp]            stem conv KxK stride 2 to C channels; "mp" adds ResNet's 3x3/2 maxpool
    B{K}x{C}x{D}s{S}           stage of D basic blocks KxK-KxK, C channels out, first block stride S
    K{K}x{C}m{M}x{D}s{S}       stage of D bottlenecks 1x1-KxK-1x1, M mid channels, C out channels

so ResNet-18 is ``stem7x64mp|B3x64x2s1|B3x128x2s2|B3x256x2s2|B3x512x2s2``. The bottleneck letter
``K`` comes from Zen-NAS's block name ``SuperResK1K3K1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.models._registry import register_model
from diswot.models.cifar_resnet import BasicBlock, projection_shortcut

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "RESNET_LAYOUTS",
    "Stage",
    "Stem",
    "ZenResNet",
    "format_arch",
    "parse_arch",
]

BlockType = Literal["basic", "bottleneck"]
KERNELS: tuple[int, ...] = (3, 5, 7)


@dataclass(frozen=True)
class Stem:
    """Stem conv KxK stride 2 with ``width`` output channels, optionally followed by a 3x3/2 maxpool."""

    kernel: int = 7
    width: int = 64
    maxpool: bool = True


@dataclass(frozen=True)
class Stage:
    """``depth`` residual blocks of one type; only the first block has ``stride`` and changes width.

    ``mid`` is the bottleneck's inner width (ignored, and normalised to 0, for basic blocks).
    """

    block: BlockType
    kernel: int
    width: int
    depth: int
    stride: int = 1
    mid: int = 0

    @property
    def convs_per_block(self) -> int:
        return 2 if self.block == "basic" else 3

    @property
    def layers(self) -> int:
        """Main-path conv layers of the stage (shortcut 1x1 convs are not counted)."""
        return self.convs_per_block * self.depth


def _check_structure(stem: Stem, stages: Sequence[Stage]) -> None:
    # Structural sanity only (positive sizes, odd kernels, strides 1/2): the search space adds its
    # own, tighter bounds. Kept here so a hand-written arch fails with a clear message.
    if stem.kernel < 1 or stem.kernel % 2 == 0 or stem.width < 1:
        raise DiswotError(f"stem needs an odd kernel and a positive width; got {stem}")
    if not stages:
        raise DiswotError("a ZenResNet needs at least one stage")
    for i, s in enumerate(stages):
        if s.block not in ("basic", "bottleneck"):
            raise DiswotError(
                f"stage {i + 1}: block must be 'basic' or 'bottleneck'; got {s.block!r}"
            )
        if s.kernel < 1 or s.kernel % 2 == 0:
            raise DiswotError(f"stage {i + 1}: kernel must be odd (3, 5 or 7); got {s.kernel}")
        if s.width < 1 or s.depth < 1 or (s.block == "bottleneck" and s.mid < 1):
            raise DiswotError(
                f"stage {i + 1}: width, depth and bottleneck mid must be >= 1; got {s}"
            )
        if s.stride not in (1, 2):
            raise DiswotError(f"stage {i + 1}: stride must be 1 or 2; got {s.stride}")


class Bottleneck(nn.Module):
    """1x1 conv to ``mid``, KxK conv (carrying the stride), 1x1 conv to ``c_out``; BN after each."""

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(self, c_in: int, c_out: int, mid: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = projection_shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ZenResNet(nn.Module):
    """Residual network from a stem and a stage list; module names match torchvision's ResNet.

    Stages become ``layer1``, ``layer2``, ... (``nn.Sequential`` of blocks), followed by
    ``avgpool`` (adaptive, so any input size works and the pre-pool feature can be hooked) and
    ``fc``. Weights get torchvision's initialisation (Kaiming-normal fan-out convs, BN 1/0) so a
    network built for distillation trains like the reference.
    """

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(self, stem: Stem, stages: Sequence[Stage], num_classes: int = 1000) -> None:
        super().__init__()
        stages = tuple(stages)
        _check_structure(stem, stages)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise DiswotError(f"--num-classes must be an integer >= 2; got {num_classes!r}")
        self.stem_spec = stem
        self.stages = stages
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, stem.width, stem.kernel, 2, stem.kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem.width)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem.maxpool else nn.Identity()
        c_in = stem.width
        self.layer_names: list[str] = []
        for i, s in enumerate(stages):
            blocks: list[nn.Module] = []
            for b in range(s.depth):
                stride = s.stride if b == 0 else 1
                if s.block == "basic":
                    blocks.append(BasicBlock(c_in, s.width, stride, s.kernel))
                else:
                    blocks.append(Bottleneck(c_in, s.width, s.mid, stride, s.kernel))
                c_in = s.width
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.layer_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_like_torchvision()

    @torch.no_grad()
    def _init_like_torchvision(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_arch(cls, arch: str, num_classes: int = 1000) -> ZenResNet:
        """Build from an architecture string (see the module docstring)."""
        stem, stages = parse_arch(arch)
        return cls(stem, stages, num_classes=num_classes)

    @property
    def arch(self) -> str:
        return format_arch(self.stem_spec, self.stages)

    @property
    def num_layers(self) -> int:
        """Main-path conv layers inside blocks (the quantity the search space bounds)."""
        return sum(s.layers for s in self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


# -- architecture strings ---------------------------------------------------------------------------
_STEM_RE = re.compile(r"^stem(?:(\d+)x)?(\d+)(mp)?$", re.IGNORECASE)
_BASIC_RE = re.compile(r"^B(\d+)x(\d+)x(\d+)s(\d+)$", re.IGNORECASE)
_BOTTLE_RE = re.compile(r"^K(\d+)x(\d+)m(\d+)x(\d+)s(\d+)$", re.IGNORECASE)
ARCH_FORMAT = "'stem{K}x{C}[mp]|B{K}x{C}x{depth}s{stride}|K{K}x{C}m{mid}x{depth}s{stride}|...'"


def parse_arch(arch: str) -> tuple[Stem, tuple[Stage, ...]]:
    """Parse an architecture string into its stem and stages (structure checks only).

    Spaces are ignored and letters are case-insensitive; ``stem{C}`` is short for ``stem3x{C}``
    (Zen-NAS's 3x3 stem without maxpool). Raises :class:`DiswotError` naming the format.
    """
    if not isinstance(arch, str) or not arch.strip():
        raise DiswotError(f"architecture must be a non-empty string like {ARCH_FORMAT}")
    tokens = [t for t in re.sub(r"\s+", "", arch).split("|")]
    if len(tokens) < 2 or any(not t for t in tokens):
        raise DiswotError(
            f"architecture {arch!r} needs a stem and at least one stage, no empty tokens: {ARCH_FORMAT}"
        )
    m = _STEM_RE.match(tokens[0])
    if not m:
        raise DiswotError(
            f"bad stem {tokens[0]!r} in {arch!r}; expected 'stem{{K}}x{{C}}[mp]' "
            "like 'stem7x64mp' or 'stem3x32'"
        )
    stem = Stem(kernel=int(m.group(1) or 3), width=int(m.group(2)), maxpool=bool(m.group(3)))
    stages = []
    for tok in tokens[1:]:
        if b := _BASIC_RE.match(tok):
            k, c, d, s = (int(g) for g in b.groups())
            stages.append(Stage("basic", k, c, d, s))
        elif n := _BOTTLE_RE.match(tok):
            k, c, mid, d, s = (int(g) for g in n.groups())
            stages.append(Stage("bottleneck", k, c, d, s, mid))
        else:
            raise DiswotError(
                f"bad stage {tok!r} in {arch!r}; expected 'B{{K}}x{{C}}x{{depth}}s{{stride}}' (basic) "
                "or 'K{K}x{C}m{mid}x{depth}s{stride}' (bottleneck), e.g. 'B3x64x2s1'"
            )
    stages_t = tuple(stages)
    _check_structure(stem, stages_t)
    return stem, stages_t


def format_arch(stem: Stem, stages: Sequence[Stage]) -> str:
    """Canonical string of a stem and stages; inverse of :func:`parse_arch`."""
    parts = [f"stem{stem.kernel}x{stem.width}{'mp' if stem.maxpool else ''}"]
    for s in stages:
        if s.block == "basic":
            parts.append(f"B{s.kernel}x{s.width}x{s.depth}s{s.stride}")
        else:
            parts.append(f"K{s.kernel}x{s.width}m{s.mid}x{s.depth}s{s.stride}")
    return "|".join(parts)


def _basic_layout(depths: Sequence[int]) -> str:
    widths = (64, 128, 256, 512)
    stages = [
        Stage("basic", 3, w, d, 1 if i == 0 else 2) for i, (w, d) in enumerate(zip(widths, depths))
    ]
    return format_arch(Stem(), stages)


def _bottleneck_layout(depths: Sequence[int]) -> str:
    mids = (64, 128, 256, 512)
    stages = [
        Stage("bottleneck", 3, 4 * m, d, 1 if i == 0 else 2, m)
        for i, (m, d) in enumerate(zip(mids, depths))
    ]
    return format_arch(Stem(), stages)


#: Classic ImageNet ResNets as architecture strings (He et al. 2016, torchvision's layout).
RESNET_LAYOUTS: dict[str, str] = {
    "resnet18": _basic_layout((2, 2, 2, 2)),
    "resnet34": _basic_layout((3, 4, 6, 3)),
    "resnet50": _bottleneck_layout((3, 4, 6, 3)),
}


def _make_factory(name: str, layout: str):
    def factory(num_classes: int = 1000, **kw) -> ZenResNet:
        if kw:
            raise DiswotError(
                f"{name} takes only num_classes; got unexpected {', '.join(sorted(kw))}"
            )
        return ZenResNet.from_arch(layout, num_classes=num_classes)

    factory.__name__ = name
    factory.__doc__ = (
        f"ImageNet {name} for 224x224 input ({layout}); state-dict compatible with torchvision."
    )
    return factory


for _name, _layout in RESNET_LAYOUTS.items():
    register_model(_name)(_make_factory(_name, _layout))
