"""CIFAR ResNets (He et al. 2016, option-B shortcuts) as used by DisWOT's S1 search space.

The S1 space varies the number of BasicBlocks per stage of a 16/32/64-channel CIFAR ResNet, so a
single class parameterised by ``depths`` covers ResNet8..110 and every S1 code such as ``713``.
The layout matches the CRD/DisWOT code base (same module names, 1x1 conv + BN shortcut whenever the
shape changes), so feature hooks and parameter counts agree with the paper's students/teachers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.models._registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "RESNET_DEPTHS"]


def projection_shortcut(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    """torchvision's residual shortcut: 1x1 conv + BN when the shape changes, else None (identity)."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
    )


class BasicBlock(nn.Module):
    """KxK conv-BN-ReLU, KxK conv-BN, plus shortcut (1x1 conv + BN when the shape changes), ReLU.

    Shared by the CIFAR ResNets (3x3) and the ImageNet ResNet space (3x3 or 5x5); the attribute
    names are torchvision's, so state dicts load either way.
    """

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, stride=1, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Not in-place: forward hooks on bn2 / the block must see un-mutated tensors.
        self.relu = nn.ReLU(inplace=False)
        self.downsample = projection_shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """Three-stage CIFAR ResNet with ``depths[i]`` BasicBlocks in stage ``i`` (strides 1, 2, 2).

    ``stem`` is the sequence conv1 -> bn1 -> relu, kept as plain attributes (``conv1``, ``bn1``)
    so names match the reference code; stages are ``layer1..layer3``; the head is
    ``avgpool`` (adaptive, so pre-pool features can be hooked at any input size) and ``fc``.
    """

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(
        self,
        depths: Sequence[int],
        num_classes: int = 100,
        widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        depths = tuple(int(d) for d in depths)
        widths = tuple(int(w) for w in widths)
        if len(depths) != 3 or any(d < 1 for d in depths):
            raise DiswotError(f"CifarResNet needs 3 stage depths >= 1; got {depths}")
        if len(widths) != 3 or any(w < 1 for w in widths):
            raise DiswotError(f"CifarResNet needs 3 stage widths >= 1; got {widths}")
        if num_classes < 2:
            raise DiswotError(f"--num-classes must be >= 2; got {num_classes}")
        self.depths: tuple[int, int, int] = depths  # type: ignore[assignment]
        self.widths: tuple[int, int, int] = widths  # type: ignore[assignment]
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        c_in = widths[0]
        stages = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for b in range(depth):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, width, stride))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def extra_repr(self) -> str:
        return f"depths={self.depths}, widths={self.widths}"


#: Classic CIFAR ResNet depth -> blocks per stage ((depth - 2) / 6 each).
RESNET_DEPTHS: dict[int, int] = {8: 1, 14: 2, 20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


def _make_factory(n: int):
    def factory(num_classes: int = 100, **kw) -> CifarResNet:
        return CifarResNet((n, n, n), num_classes=num_classes, **kw)

    factory.__doc__ = f"CIFAR ResNet with {n} BasicBlocks per stage (widths 16/32/64 by default)."
    return factory


for _depth, _n in RESNET_DEPTHS.items():
    register_model(f"resnet{_depth}")(_make_factory(_n))
