"""A search space of your own, used by diswot without writing into the package.

Two-stage CIFAR ResNets: a 3x3 stem, stage 1 of ``d1`` BasicBlocks at width ``w`` (32x32), stage 2 of
``d2`` blocks at width ``2w`` (16x16), global average pool, linear classifier. An architecture is the
string ``d<d1><d2>w<w>``, e.g. ``d23w32``: 4 depths x 4 depths x 3 widths = 48 students.

    diswot search --space examples/my_space.py:MySpace --cycles 30 --out runs/my-search
    diswot search --space examples.my_space:MySpace ...          # the same, as a module
    diswot rank --space examples/my_space.py:small --out runs/my-rank

``MySpace`` is the class (diswot makes it with no arguments: CIFAR-100 sized, 100 classes at 32 px);
``small`` is an instance for a 10-class task. ``diswot rank`` correlates the proxies with accuracies
you measured, read from ``my_space_accuracy.csv`` beside this file. See docs/custom_space.md.
"""

from __future__ import annotations

import csv
import itertools
import random
import re
from pathlib import Path

from torch import Tensor, nn

from diswot.errors import DiswotError
from diswot.spaces import DatasetSpec, SearchSpace

DEPTHS = (1, 2, 3, 4)
WIDTHS = (16, 32, 48)
_ARCH = re.compile(r"d([1-4])([1-4])w(\d+)")
ACCURACY_FILE = Path(__file__).with_name("my_space_accuracy.csv")


class Block(nn.Module):
    """conv-BN-ReLU, conv-BN, plus a 1x1 conv-BN shortcut when the shape changes, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        same = stride == 1 and c_in == c_out
        self.shortcut = (
            nn.Identity()
            if same
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class TwoStageResNet(nn.Module):
    def __init__(self, d1: int, d2: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks = [Block(width, width, 1) for _ in range(d1)]
        blocks += [
            Block(width if i == 0 else 2 * width, 2 * width, 2 if i == 0 else 1) for i in range(d2)
        ]
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)  # diswot's features are this pool's input
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class MySpace(SearchSpace):
    """The 48 two-stage ResNets; ``num_classes`` and ``image_size`` are the task's."""

    default_teacher = "resnet56"  # any diswot model name, built with the space's class count
    targets = ("measured",)  # ground truth: the accuracies in my_space_accuracy.csv
    default_target = "measured"

    def __init__(self, num_classes: int = 100, image_size: int = 32) -> None:
        self.task = DatasetSpec(num_classes=num_classes, image_size=image_size)

    def dataset(self, target: str | None = None) -> DatasetSpec:
        if target is not None:
            self._check_target(target)
        return self.task

    def validate(self, arch: str) -> str:
        m = _ARCH.fullmatch(str(arch).strip())
        if m is None or int(m.group(3)) not in WIDTHS:
            raise DiswotError(
                f"arch {arch!r} is not in {self.name}: d<depth1><depth2>w<width>, depths 1-4, "
                f"widths {', '.join(map(str, WIDTHS))} (e.g. d23w32)"
            )
        return m.group(0)

    def _genes(self, arch: str) -> list[int]:
        m = _ARCH.fullmatch(self.validate(arch))
        assert m is not None
        return [int(g) for g in m.groups()]

    def sample(self, rng: random.Random) -> str:
        return f"d{rng.choice(DEPTHS)}{rng.choice(DEPTHS)}w{rng.choice(WIDTHS)}"

    def mutate(self, arch: str, rng: random.Random) -> str:
        genes = self._genes(arch)
        i = rng.randrange(3)  # change one of d1, d2, width to another value
        genes[i] = rng.choice([v for v in (WIDTHS if i == 2 else DEPTHS) if v != genes[i]])
        return "d{}{}w{}".format(*genes)

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        genes = [x if rng.random() < 0.5 else y for x, y in zip(self._genes(a), self._genes(b))]
        return "d{}{}w{}".format(*genes)

    def enumerate(self) -> list[str]:
        return [f"d{a}{b}w{w}" for a, b, w in itertools.product(DEPTHS, DEPTHS, WIDTHS)]

    def build(self, arch: str, num_classes: int) -> nn.Module:
        d1, d2, width = self._genes(arch)
        return TwoStageResNet(d1, d2, width, num_classes)

    def ground_truth(self, target: str) -> dict[str, float]:
        """Architecture -> top-1 (percent) from my_space_accuracy.csv (header ``arch,top1``); empty
        until you have measured some (a search looks its winner up here)."""
        self._check_target(target)
        if not ACCURACY_FILE.is_file():
            return {}
        with ACCURACY_FILE.open(newline="") as fh:
            return {self.validate(r["arch"]): float(r["top1"]) for r in csv.DictReader(fh)}

    def rank_archs(self, sample: int | None = None, seed: int = 0) -> list[str]:
        """The students with a measured accuracy: what ``diswot rank`` correlates against."""
        archs = sorted(self.ground_truth("measured"))
        if len(archs) < 2:
            raise DiswotError(
                f"rank needs measured accuracies of at least 2 students in {ACCURACY_FILE}, one "
                "'arch,top1' line each (see docs/custom_space.md)"
            )
        return sorted(self._seeded_sample(archs, sample, seed))


#: The same space for a 10-class task (e.g. ``diswot train --dataset synthetic``'s default).
small = MySpace(num_classes=10)
