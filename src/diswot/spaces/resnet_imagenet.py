"""``resnet-imagenet``: an ImageNet-scale residual search space in the spirit of Zen-NAS.

DisWOT's ImageNet experiments search a ResNet-like student for a ResNet teacher. This space follows
Zen-NAS's ImageNet space: a strided stem, then stages of either basic blocks (KxK-KxK) or
bottlenecks (1x1-KxK-1x1), kernel K in {3, 5, 7}, searched with mutations that rescale a stage's
width, change its depth by 1 or 2, swap its kernel or its block type. The search starts from
ResNet-18's layout (every :meth:`sample` is a few mutations of it), so candidates stay in the
neighbourhood of a known-good design and budgets around ResNet-18's 1.8 GMACs are easy to meet.

Architectures are strings (see :mod:`diswot.models.imagenet_resnet` for the grammar), e.g. ResNet-18::

    stem7x64mp|B3x64x2s1|B3x128x2s2|B3x256x2s2|B3x512x2s2

Bounds that define the space (checked by :meth:`ResNetImageNetSpace.validate`):

* kernels (stem and stages) in {3, 5, 7}; strides 1 or 2; depth >= 1;
* widths (stem, stage outputs, bottleneck mids) multiples of 8 in [8, 2048]: the multiple of 8
  keeps tensor-core friendly shapes, the cap keeps repeated x2.5 mutations from exploding memory;
* at most 18 main-path conv layers inside blocks (2 per basic block, 3 per bottleneck; stem, fc and
  1x1 shortcut convs are not counted), so ResNet-18 itself counts 16.

There is no ground truth (``targets == ()``); the space is for searching, not for benchmarking
proxies. ``cost`` counts multiply-accumulates (the ``macs`` convention, ResNet-18 = 1.81 G), the
number ImageNet papers quote.
"""

from __future__ import annotations

import random
from dataclasses import replace

from torch import nn

from diswot.errors import DiswotError
from diswot.models import MODELS, create_model
from diswot.models.cost import ModelCost
from diswot.models.imagenet_resnet import (
    KERNELS,
    RESNET_LAYOUTS,
    Stage,
    Stem,
    ZenResNet,
    format_arch,
    parse_arch,
)
from diswot.spaces.base import DatasetSpec, SearchSpace
from diswot.spaces.registry import register_space

__all__ = [
    "MAX_LAYERS",
    "MAX_WIDTH",
    "MIN_WIDTH",
    "ResNetImageNetSpace",
    "WIDTH_FACTORS",
    "count_layers",
]

#: Factors a width mutation multiplies a stage width by (Zen-NAS's channel scaling set).
WIDTH_FACTORS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5)
#: Depth changes a depth mutation draws from.
DEPTH_STEPS: tuple[int, ...] = (-2, -1, 1, 2)
MAX_LAYERS = 18
MIN_WIDTH = 8
MAX_WIDTH = 2048
#: Mutations applied to ResNet-18 to draw one sample (inclusive range).
SAMPLE_MUTATIONS: tuple[int, int] = (1, 4)

_MUTATIONS = ("width", "mid", "kernel", "depth", "block", "stem")


def count_layers(stages: tuple[Stage, ...]) -> int:
    """Main-path conv layers inside blocks, the quantity bounded by :data:`MAX_LAYERS`."""
    return sum(s.layers for s in stages)


def _scale(width: int, factor: float) -> int:
    # Round half up to a multiple of 8 (not banker's rounding: the result must not depend on parity).
    w = int(width * factor / 8 + 0.5) * 8
    return min(MAX_WIDTH, max(MIN_WIDTH, w))


def _check_width(what: str, w: int, arch: str) -> None:
    if w % 8 or not MIN_WIDTH <= w <= MAX_WIDTH:
        raise DiswotError(
            f"{what} width {w} in {arch!r} is outside the space; use a multiple of 8 in "
            f"[{MIN_WIDTH}, {MAX_WIDTH}]"
        )


def _check_kernel(what: str, k: int, arch: str) -> None:
    if k not in KERNELS:
        raise DiswotError(
            f"{what} kernel {k} in {arch!r} is outside the space; use one of "
            f"{', '.join(map(str, KERNELS))}"
        )


@register_space("resnet-imagenet")
class ResNetImageNetSpace(SearchSpace):
    """Zen-NAS-style ImageNet residual space seeded from ResNet-18 (224x224, 1000 classes)."""

    name = "resnet-imagenet"
    default_teacher = "resnet34"
    teachers: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
    targets: tuple[str, ...] = ()
    seed_arch: str = RESNET_LAYOUTS["resnet18"]
    feature_hooks = (None, None)

    # -- data ----------------------------------------------------------------------------------
    def dataset(self, target: str | None = None) -> DatasetSpec:
        """ImageNet-1k at 224x224; the space has no named targets, so only ``None`` is accepted."""
        if target not in (None, "", "imagenet"):
            raise DiswotError(
                f"space {self.name!r} has no target {target!r}; leave the target out (ImageNet, 224 px)"
            )
        return DatasetSpec(num_classes=1000, image_size=224)

    # -- encoding ------------------------------------------------------------------------------
    def _parse(self, arch: str) -> tuple[Stem, tuple[Stage, ...]]:
        stem, stages = parse_arch(arch)
        _check_kernel("stem", stem.kernel, arch)
        _check_width("stem", stem.width, arch)
        for i, s in enumerate(stages, 1):
            _check_kernel(f"stage {i}", s.kernel, arch)
            _check_width(f"stage {i}", s.width, arch)
            if s.block == "bottleneck":
                _check_width(f"stage {i} bottleneck mid", s.mid, arch)
        layers = count_layers(stages)
        if layers > MAX_LAYERS:
            raise DiswotError(
                f"{arch!r} has {layers} conv layers in blocks; the space allows at most "
                f"{MAX_LAYERS} (2 per basic block, 3 per bottleneck): reduce stage depths"
            )
        return stem, stages

    def validate(self, arch: str) -> str:
        """Canonical form of ``arch``; raises :class:`DiswotError` naming the bound it breaks."""
        return format_arch(*self._parse(arch))

    def enumerate(self) -> list[str] | None:
        return None  # unbounded in practice: widths x kernels x depths x block types per stage

    def size(self) -> int | None:
        return None

    # -- search operators ----------------------------------------------------------------------
    def sample(self, rng: random.Random) -> str:
        """A few mutations of ResNet-18 (Zen-NAS grows its population from one seed network)."""
        arch = self.seed_arch
        for _ in range(rng.randint(*SAMPLE_MUTATIONS)):
            arch = self.mutate(arch, rng)
        return arch

    def _try_mutation(
        self, stem: Stem, stages: tuple[Stage, ...], rng: random.Random
    ) -> tuple[Stem, tuple[Stage, ...]] | None:
        """One random edit, or ``None`` when the drawn edit does not apply to this arch."""
        op = rng.choice(_MUTATIONS)
        if op == "stem":
            if rng.random() < 0.5:
                return replace(stem, width=_scale(stem.width, rng.choice(WIDTH_FACTORS))), stages
            k = rng.choice([k for k in KERNELS if k != stem.kernel])
            return replace(stem, kernel=k), stages
        if op == "mid":
            idx = [i for i, s in enumerate(stages) if s.block == "bottleneck"]
            if not idx:
                return None
            i = rng.choice(idx)
            new = replace(stages[i], mid=_scale(stages[i].mid, rng.choice(WIDTH_FACTORS)))
            return stem, stages[:i] + (new,) + stages[i + 1 :]
        i = rng.randrange(len(stages))
        s = stages[i]
        if op == "width":
            new = replace(s, width=_scale(s.width, rng.choice(WIDTH_FACTORS)))
        elif op == "kernel":
            new = replace(s, kernel=rng.choice([k for k in KERNELS if k != s.kernel]))
        elif op == "depth":
            depth = s.depth + rng.choice(DEPTH_STEPS)
            if depth < 1:
                return None
            new = replace(s, depth=depth)
        else:  # block type swap; shrink depth so the layer bound can still hold
            others = count_layers(stages) - s.layers
            if s.block == "basic":
                depth = min(s.depth, (MAX_LAYERS - others) // 3)
                if depth < 1:
                    return None
                new = Stage("bottleneck", s.kernel, s.width, depth, s.stride, _scale(s.width, 0.25))
            else:
                new = Stage("basic", s.kernel, s.width, s.depth, s.stride)
        return stem, stages[:i] + (new,) + stages[i + 1 :]

    def mutate(self, arch: str, rng: random.Random) -> str:
        """A valid architecture that differs from ``arch`` by one random edit.

        Draws edits until one yields a different arch inside the bounds; after 64 misses (only
        possible for contrived archs pinned at every bound) it changes the first stage's kernel,
        which is always valid and always different.
        """
        canon = self.validate(arch)
        stem, stages = parse_arch(canon)
        for _ in range(64):
            out = self._try_mutation(stem, stages, rng)
            if out is None or count_layers(out[1]) > MAX_LAYERS:
                continue
            child = format_arch(*out)
            if child != canon:
                return child
        k = rng.choice([k for k in KERNELS if k != stages[0].kernel])
        return format_arch(stem, (replace(stages[0], kernel=k),) + stages[1:])

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        """Stage-wise uniform crossover (stem and each stage from either parent).

        Any mix is shape-consistent because every block adapts its input width through its own
        shortcut. Returns ``None`` when the stage counts differ or no mix (of 16 draws) is valid
        and different from both parents.
        """
        a, b = self.validate(a), self.validate(b)
        (stem_a, st_a), (stem_b, st_b) = parse_arch(a), parse_arch(b)
        if len(st_a) != len(st_b) or a == b:
            return None
        for _ in range(16):
            stem = stem_a if rng.random() < 0.5 else stem_b
            stages = tuple(x if rng.random() < 0.5 else y for x, y in zip(st_a, st_b))
            if count_layers(stages) > MAX_LAYERS:
                continue
            child = format_arch(stem, stages)
            if child not in (a, b):
                return child
        return None

    # -- models --------------------------------------------------------------------------------
    def build(self, arch: str, num_classes: int = 1000) -> nn.Module:
        """The student of ``arch``; a registered model name (a teacher) is built by the model zoo.

        Teacher names are accepted because :class:`~diswot.scoring.Scorer` builds a teacher given by
        name through the same ``builder`` as its students, and ResNet-34/50 lie outside the space.
        """
        if isinstance(arch, str) and arch.strip() in MODELS:
            return create_model(arch.strip(), num_classes=num_classes)
        return ZenResNet.from_arch(self.validate(arch), num_classes=num_classes)

    def cost(
        self, arch: str, num_classes: int = 1000, image_size: int | tuple[int, ...] = 224
    ) -> ModelCost:
        """Parameters and MACs of one ``image_size`` image, cached by the base class.

        Also takes the ``(1, 3, H, H)`` input size :class:`~diswot.scoring.Scorer` hands its
        ``coster``, so ``Scorer(..., coster=space.cost)`` works without a wrapper.
        """
        if not isinstance(image_size, int):
            size = tuple(int(s) for s in image_size)
            if len(size) != 4 or size[0] != 1 or size[2] != size[3]:
                raise DiswotError(
                    f"image size {image_size!r} must be an int side or (1, 3, H, H) for one square image"
                )
            image_size = size[-1]
        return super().cost(arch, num_classes, image_size)
