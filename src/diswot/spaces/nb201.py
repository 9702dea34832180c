"""NAS-Bench-201: 15,625 cells (5 ops on each of 6 edges) in the benchmark's fixed macro skeleton.

An architecture is the standard NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. Mutation
changes the op on one edge, crossover takes each edge's op from either parent. Targets are the
benchmark's three datasets, which fix the class count and resolution of every network (CIFAR-10:
10 classes, CIFAR-100: 100, ImageNet16-120: 120 classes at 16x16).
"""

from __future__ import annotations

import random

import torch
from torch import nn

from diswot import bench
from diswot.errors import DiswotError
from diswot.models.cost import ModelCost, profile
from diswot.models.nb201 import OPS as NB201_OPS
from diswot.models.nb201 import NB201Network, all_archs, format_arch, parse_arch
from diswot.models.nb201_supernet import NB201Supernet
from diswot.spaces.base import DatasetSpec, SearchSpace
from diswot.spaces.registry import register_space

_DATASETS = {
    "cifar10": DatasetSpec(10, 32),
    "cifar100": DatasetSpec(100, 32),
    "imagenet16-120": DatasetSpec(120, 16),
}


@register_space("nb201")
class NB201Space(SearchSpace):
    """All NAS-Bench-201 cells; the default target is CIFAR-100, the teacher a CIFAR ResNet56."""

    default_teacher = "resnet56"
    targets = ("cifar10", "cifar100", "ImageNet16-120")
    default_target = "cifar100"

    def dataset(self, target: str | None = None) -> DatasetSpec:
        t = self._check_target(self.default_target if target is None else target)
        return _DATASETS[t.lower()]

    def sample(self, rng: random.Random) -> str:
        return format_arch([rng.choice(NB201_OPS) for _ in range(6)])

    def mutate(self, arch: str, rng: random.Random) -> str:
        ops = list(parse_arch(arch))
        edge = rng.randrange(6)
        ops[edge] = rng.choice([op for op in NB201_OPS if op != ops[edge]])
        return format_arch(ops)

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        pa, pb = parse_arch(a), parse_arch(b)
        return format_arch([x if rng.random() < 0.5 else y for x, y in zip(pa, pb)])

    def validate(self, arch: str) -> str:
        return format_arch(parse_arch(arch))

    def enumerate(self) -> list[str]:
        return all_archs()

    def size(self) -> int:
        return len(NB201_OPS) ** 6

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return NB201Network(arch, num_classes=num_classes)

    def rebuild(self, model: nn.Module, arch: str, num_classes: int) -> nn.Module | None:
        """``model`` (a network this space built) turned into ``arch``'s in place, or None.

        The Scorer hands a finished candidate's network here instead of building the next one;
        after its re-initialisation the weights equal a fresh build's (tests/test_seed_reuse.py).
        """
        if type(model) is not NB201Network or model.num_classes != num_classes:
            return None
        return model.retarget(arch)

    def supernet(
        self, num_classes: int, device: torch.device, channels_last: bool
    ) -> NB201Supernet:
        """The weight store ``--engine supernet`` scores every cell from, without building it."""
        return NB201Supernet(num_classes, device=device, channels_last=channels_last)

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        # Exact closed form: each edge's op is a C -> C module whose cost depends only on the op and
        # the stage, and every cell of the network carries the same arch, so the network's cost is
        # cost(all 'none') + sum over edges of delta(op). delta(op) is profiled once per (classes,
        # size) with the op on one edge; the tests compare against a full profile.
        base, delta = self._cost_terms(num_classes, image_size)
        ops = parse_arch(arch)
        return ModelCost(
            params=base.params + sum(delta[op].params for op in ops),
            flops=base.flops + sum(delta[op].flops for op in ops),
        )

    def _cost_terms(
        self, num_classes: int, image_size: int
    ) -> tuple[ModelCost, dict[str, ModelCost]]:
        terms: dict = self.__dict__.setdefault("_terms", {})
        key = (num_classes, image_size)
        if key not in terms:
            size = (1, 3, image_size, image_size)

            def prof(ops: list[str]) -> ModelCost:
                # Built on ``meta`` (no init, so the global RNG is untouched), then given zeroed
                # CPU storage: counting only needs shapes, a real CPU pass is much faster than a
                # ``meta`` one, and it does not import torch._dynamo, which made up most of a GPU
                # search's start (docs/scale.md).
                with torch.device("meta"):
                    model = NB201Network(format_arch(ops), num_classes=num_classes)
                model = model.to_empty(device="cpu")
                with torch.no_grad():
                    for t in [*model.parameters(), *model.buffers()]:
                        t.zero_()
                return profile(model, size, self.flop_convention)  # type: ignore[arg-type]

            base = prof(["none"] * 6)
            delta = {"none": ModelCost(0, 0)}  # 'none' is the baseline itself
            for op in NB201_OPS:
                if op != "none":
                    c = prof([op] + ["none"] * 5)
                    delta[op] = ModelCost(c.params - base.params, c.flops - base.flops)
            terms[key] = (base, delta)
        return terms[key]

    def ground_truth(self, target: str) -> dict[str, float]:
        return bench.nb201_accuracy(self._check_target(target))

    def rank_archs(self, sample: int | None = 200, seed: int = 0) -> list[str]:
        n = 200 if sample is None else sample
        if not 2 <= n <= bench.NB201_SIZE:
            raise DiswotError(
                f"an NB201 rank sample holds 2 to {bench.NB201_SIZE} cells (all), got {n}"
            )
        return bench.nb201_sample(n, seed)
