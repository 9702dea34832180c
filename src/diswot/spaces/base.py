"""The search-space protocol every space implements, and the pieces spaces share.

A space hands out architectures as canonical **strings** (S1 ``"713"``, an NB201 cell string, ...)
because a string is hashable (search dedup), JSON-friendly (``candidates.jsonl``), and enough to rebuild
the network anywhere (``space.build(arch, num_classes)``). The search code only ever talks to this
protocol, so a new space (ImageNet ResNets, ViTs) is one file registering a subclass.

Costs are the budget the search enforces *before* scoring, so they are asked for far more often than
networks are scored (every rejected sample, every duplicate mutation); :meth:`SearchSpace.cost`
therefore caches per ``(arch, num_classes, image_size)`` and spaces may override
:meth:`SearchSpace.compute_cost` with an exact closed form (S1, NB201 do, verified against
:func:`~diswot.models.cost.profile` in the tests).
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass

import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.models.cost import ModelCost, profile

__all__ = ["INTERFACE", "DatasetSpec", "SearchSpace", "missing_methods"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a target dataset fixes for every network of a space: classes and input resolution."""

    num_classes: int
    image_size: int


class SearchSpace(abc.ABC):
    """A set of student architectures with the moves a search needs.

    Class attributes a subclass sets:

    * ``name`` - the registry name (set by :func:`~diswot.spaces.register_space` when omitted);
    * ``default_teacher`` - teacher used when the user names none;
    * ``targets`` - ground-truth targets shipped for the space (may be empty);
    * ``default_target`` - target assumed by :meth:`dataset` when ``None`` is given;
    * ``feature_hooks`` - ``(classifier, feature)`` module names for
      :class:`~diswot.features.FeatureExtractor` (``None`` = auto-detect);
    * ``flop_convention`` - the :func:`~diswot.models.cost.profile` convention of :meth:`cost`
      (``"macs"``: multiply-adds of conv/linear layers, the number papers quote);
    * ``has_batchnorm`` - whether the networks use BatchNorm; ``False`` makes ``--proxy all`` skip
      the proxies built on BN statistics (``ProxySpec.needs_batchnorm``, e.g. ``zen``) and naming
      one an error.
    """

    name: str = ""
    default_teacher: str = ""
    targets: tuple[str, ...] = ()
    default_target: str | None = None
    feature_hooks: tuple[str | None, str | None] = (None, None)
    flop_convention: str = "macs"
    has_batchnorm: bool = True

    # -- what the search needs ---------------------------------------------------------------------
    @abc.abstractmethod
    def dataset(self, target: str | None = None) -> DatasetSpec:
        """Class count and input size of ``target`` (the default target when ``None``)."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> str:
        """A random architecture (canonical form), drawn only from ``rng``."""

    @abc.abstractmethod
    def mutate(self, arch: str, rng: random.Random) -> str:
        """A neighbour of ``arch`` that is always different from it."""

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        """A child mixing ``a`` and ``b``; ``None`` when the space does not support crossover."""
        return None

    @abc.abstractmethod
    def validate(self, arch: str) -> str:
        """Canonical form of ``arch``; :class:`DiswotError` naming the accepted values otherwise."""

    def enumerate(self) -> list[str] | None:
        """Every architecture (fixed order), or ``None`` when the space is too large to list."""
        return None

    def size(self) -> int | None:
        """Number of architectures, or ``None`` when unknown."""
        archs = self.enumerate()
        return None if archs is None else len(archs)

    @abc.abstractmethod
    def build(self, arch: str, num_classes: int) -> nn.Module:
        """The network of ``arch`` with a ``num_classes``-way classifier (PyTorch's default init)."""

    # -- costs ---------------------------------------------------------------------------------------
    def cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        """Parameters and FLOPs (``flop_convention``) of ``arch`` for one image; cached."""
        cache: dict[tuple[str, int, int], ModelCost] = self.__dict__.setdefault("_cost_cache", {})
        key = (arch, int(num_classes), int(image_size))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = self.compute_cost(self.validate(arch), key[1], key[2])
        return hit

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        """Uncached cost; the default profiles the network built on the ``meta`` device."""
        size = (1, 3, image_size, image_size)
        try:
            with torch.device("meta"):  # shapes only: no init, no memory
                model = self.build(arch, num_classes)
        except (NotImplementedError, RuntimeError):
            model = self.build(arch, num_classes)
        return profile(model, size, self.flop_convention)  # type: ignore[arg-type]

    def cost_convention(self, num_classes: int, image_size: int) -> str:
        """One line saying how :meth:`cost` counts, printed beside every budget."""
        what = (
            "multiply-adds of conv/linear layers"
            if self.flop_convention == "macs"
            else f"FLOPs in the '{self.flop_convention}' convention"
        )
        return f"{what} for one 3x{image_size}x{image_size} image, {num_classes}-class classifier"

    # -- ground truth ----------------------------------------------------------------------------------
    def ground_truth(self, target: str) -> dict[str, float]:
        """Architecture -> accuracy (percent) for ``target``; spaces without tables raise."""
        raise DiswotError(f"space '{self.name}' ships no ground-truth accuracies")

    def rank_archs(self, sample: int | None, seed: int) -> list[str]:
        """Architectures that have ground truth, as ``rank`` scores them (all, or a seeded sample)."""
        raise DiswotError(f"space '{self.name}' ships no ground truth to rank against")

    @staticmethod
    def _seeded_sample(archs: list[str], sample: int | None, seed: int) -> list[str]:
        """``archs`` whole when ``sample`` is ``None`` or covers them, else a seeded ``sample`` of
        them (at least 2: a rank correlation needs two)."""
        if sample is None or sample >= len(archs):
            return archs
        if sample < 2:
            raise DiswotError(f"a rank sample needs at least 2 architectures, got {sample}")
        return random.Random(seed).sample(archs, sample)

    def _check_target(self, target: str) -> str:
        """Canonical spelling of ``target`` among :attr:`targets` (case-insensitive)."""
        for t in self.targets:
            if str(target).lower() == t.lower():
                return t
        known = ", ".join(self.targets) or "none"
        raise DiswotError(f"space '{self.name}' has no target '{target}'; known: {known}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: The methods the search, rank, score and training commands call on a space.
INTERFACE: tuple[str, ...] = tuple(
    name
    for name, value in vars(SearchSpace).items()
    if callable(value) and not name.startswith("_")
)


def missing_methods(obj: object) -> list[str]:
    """The :data:`INTERFACE` methods ``obj`` (a class or an instance) does not implement: for a
    :class:`SearchSpace` subclass its abstract ones, for anything else the ones it lacks. Empty for
    a usable space; a user's ``--space FILE:NAME`` error lists them."""
    if isinstance(obj, type) and issubclass(obj, SearchSpace):
        return sorted(getattr(obj, "__abstractmethods__", ()))
    if isinstance(obj, SearchSpace):
        return []
    return [name for name in INTERFACE if not callable(getattr(obj, name, None))]
