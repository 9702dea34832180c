"""DisWOT's S1 space: CIFAR ResNets with 1, 3, 5 or 7 BasicBlocks in each of three stages (64 students).

An architecture is the three-digit code of blocks per stage (``"333"`` is ResNet20, ``"713"`` has 7,
1 and 3 blocks). Mutation changes one stage's depth, crossover takes each stage's depth from either
parent. Ground truth: CIFAR-100 top-1 of all 64 students after KD (``kd``) and plain training
(``cls``), shipped in :mod:`diswot.bench`.
"""

from __future__ import annotations

import itertools
import random

from torch import nn

from diswot import bench
from diswot.errors import DiswotError
from diswot.models import create_model
from diswot.models.cost import ModelCost, profile_arch
from diswot.spaces.base import DatasetSpec, SearchSpace
from diswot.spaces.registry import register_space

#: Blocks per stage a student may have.
DEPTHS: tuple[int, ...] = (1, 3, 5, 7)

_HINT = "accepted: 3 digits from 1,3,5,7 giving blocks per stage, e.g. '713' ('333' is ResNet20)"


@register_space("s1")
class S1Space(SearchSpace):
    """The 64 CIFAR-ResNet students of the DisWOT paper (CIFAR-100, 32x32)."""

    default_teacher = "resnet110"
    targets = ("kd", "cls")
    default_target = "kd"

    def dataset(self, target: str | None = None) -> DatasetSpec:
        if target is not None and str(target).lower() != "vanilla":
            self._check_target(target)
        return DatasetSpec(num_classes=100, image_size=32)

    def sample(self, rng: random.Random) -> str:
        return "".join(str(rng.choice(DEPTHS)) for _ in range(3))

    def mutate(self, arch: str, rng: random.Random) -> str:
        digits = list(self.validate(arch))
        stage = rng.randrange(3)
        digits[stage] = str(rng.choice([d for d in DEPTHS if str(d) != digits[stage]]))
        return "".join(digits)

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        a, b = self.validate(a), self.validate(b)
        return "".join(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    def validate(self, arch: str) -> str:
        code = str(arch).strip() if isinstance(arch, (str, int)) else ""
        if len(code) != 3 or any(c not in "1357" for c in code):
            raise DiswotError(f"S1 arch {arch!r} is not valid; {_HINT}")
        return code

    def enumerate(self) -> list[str]:
        return ["".join(map(str, d)) for d in itertools.product(DEPTHS, repeat=3)]

    def size(self) -> int:
        return len(DEPTHS) ** 3

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return create_model(self.validate(arch), num_classes=num_classes)

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        # Exact closed form: every block after a stage's first maps C -> C at stride 1, so it adds the
        # same params/FLOPs wherever it sits. cost = cost(111) + sum_i (d_i - 1) * block_i, with
        # block_i = cost(stage i deepened by one) - cost(111). Four profiles per (classes, size)
        # instead of one per architecture; the tests check it against a full profile.
        base, blocks = self._cost_terms(num_classes, image_size)
        depths = [int(c) for c in arch]
        params = base.params + sum((d - 1) * b.params for d, b in zip(depths, blocks))
        flops = base.flops + sum((d - 1) * b.flops for d, b in zip(depths, blocks))
        return ModelCost(params=params, flops=flops)

    def _cost_terms(self, num_classes: int, image_size: int) -> tuple[ModelCost, list[ModelCost]]:
        terms: dict = self.__dict__.setdefault("_terms", {})
        key = (num_classes, image_size)
        if key not in terms:
            size = (1, 3, image_size, image_size)
            conv = self.flop_convention

            def prof(code: str) -> ModelCost:
                return profile_arch(code, num_classes, size, conv)  # type: ignore[arg-type]

            base = prof("111")
            blocks = []
            for code in ("211", "121", "112"):
                c = prof(code)
                blocks.append(ModelCost(c.params - base.params, c.flops - base.flops))
            terms[key] = (base, blocks)
        return terms[key]

    def ground_truth(self, target: str) -> dict[str, float]:
        key = "cls" if str(target).lower() == "vanilla" else self._check_target(target)
        return bench.s1_accuracy(key)

    def rank_archs(self, sample: int | None = None, seed: int = 0) -> list[str]:
        """All 64 students, sorted, or a seeded sample of ``sample`` of them (as the ViT spaces)."""
        return sorted(self._seeded_sample(sorted(bench.s1_accuracy("kd")), sample, seed))
