"""The search-space contract, run on every registered space (as timm runs every model through the
same checks): a space added later is tested by registering it, with no edit here.

Each space must hand out canonical, valid architecture strings from ``sample`` and ``mutate`` (a
mutation always differs from its parent), cost them (parameters and FLOPs > 0), build a network that
maps a tiny batch at the target's resolution to ``(N, num_classes)`` logits through the space's own
feature hooks, and round-trip its architecture strings through its structured form.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.spaces import SPACES, SearchSpace, get_space

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = SPACES.names()
#: Spaces that also score students without building them (``supernet(num_classes, device, cl)``).
SUPERNETS = [n for n in NAMES if hasattr(get_space(n), "supernet")]
#: Architectures drawn per space for the sample / mutate / round-trip checks.
DRAWS = 6


@pytest.fixture(params=NAMES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def _samples(space: SearchSpace, n: int = DRAWS, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


# -- round trips through each space's structured form (spaces without one: the string is the form)
def _nb201(arch: str) -> Iterator[tuple[object, object]]:
    from diswot.models.nb201 import format_arch, parse_arch

    ops = parse_arch(arch)
    yield format_arch(ops), arch
    yield parse_arch(format_arch(ops)), ops


def _resnet_imagenet(arch: str) -> Iterator[tuple[object, object]]:
    from diswot.models.imagenet_resnet import format_arch, parse_arch

    stem, stages = parse_arch(arch)
    yield format_arch(stem, stages), arch
    yield parse_arch(format_arch(stem, stages)), (stem, stages)


def _vit(space: SearchSpace) -> Callable[[str], Iterator[tuple[object, object]]]:
    def trips(arch: str) -> Iterator[tuple[object, object]]:
        parsed = space.check(arch)  # type: ignore[attr-defined]
        yield parsed.code, arch
        yield space.validate(parsed.to_dict()), arch  # the dict form of the ground-truth files
        yield space.check(parsed.to_dict()), parsed

    return trips


def _round_trips(space: SearchSpace) -> Callable[[str], Iterator[tuple[object, object]]]:
    if space.name == "nb201":
        return _nb201
    if space.name == "resnet-imagenet":
        return _resnet_imagenet
    if hasattr(space, "check"):
        return _vit(space)
    return lambda arch: iter(())


# -- the contract ----------------------------------------------------------------------------------
def test_registry_lists_the_builtin_spaces() -> None:
    assert {"s1", "nb201", "resnet-imagenet", "autoformer", "pit"} <= set(NAMES)
    assert "nb201" in SUPERNETS
    for name in NAMES:
        assert SPACES.get(name).name == name


def test_sample_is_canonical_valid_and_seeded(space: SearchSpace) -> None:
    archs = _samples(space)
    assert archs == _samples(space)  # drawn only from the rng
    assert archs != _samples(space, seed=1)
    for arch in archs:
        assert isinstance(arch, str)
        assert space.validate(arch) == arch  # canonical: the form search dedups and stores
    listed = space.enumerate()
    if listed is not None:
        assert set(archs) <= set(listed)


def test_mutate_gives_a_valid_different_arch(space: SearchSpace) -> None:
    rng = random.Random(7)
    for arch in _samples(space):
        child = space.mutate(arch, rng)
        assert child != arch
        assert space.validate(child) == child
        mix = space.crossover(arch, child, rng)
        if mix is not None:
            assert space.validate(mix) == mix


def test_validate_refuses_garbage_with_a_diswot_error(space: SearchSpace) -> None:
    for bad in ("", "not an architecture", "|x~0|"):
        with pytest.raises(DiswotError):
            space.validate(bad)


def test_architecture_strings_round_trip(space: SearchSpace) -> None:
    trips = _round_trips(space)
    for arch in _samples(space):
        assert space.validate(space.validate(arch)) == arch
        for got, want in trips(arch):
            assert got == want, arch


def test_enumeration_is_canonical_and_matches_size(space: SearchSpace) -> None:
    listed = space.enumerate()
    if listed is None:
        assert space.size() is None or space.size() > 10**6
        return
    assert len(listed) == len(set(listed)) == space.size()
    for arch in listed[:: max(1, len(listed) // 200)]:
        assert space.validate(arch) == arch


def test_cost_is_positive_and_cached(space: SearchSpace) -> None:
    spec = space.dataset()
    archs = _samples(space, 3)
    for arch in archs:
        cost = space.cost(arch, spec.num_classes, spec.image_size)
        assert cost.params > 0 and cost.flops > 0, arch
        assert space.cost(arch, spec.num_classes, spec.image_size) == cost
    assert space.cost_convention(spec.num_classes, spec.image_size)


def test_build_and_forward_give_logits_of_the_target(space: SearchSpace) -> None:
    spec = space.dataset()
    arch = _samples(space, 1, seed=3)[0]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = space.build(arch, spec.num_classes)
        x = torch.randn(2, 3, spec.image_size, spec.image_size)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == space.has_batchnorm  # the flag --proxy all relies on
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = FeatureExtractor(model, *space.feature_hooks)(x)
    assert logits.shape == (2, spec.num_classes)
    assert torch.isfinite(logits).all()
    assert torch.equal(feats.logits, logits)
    assert feats.feature_map.shape[0] == 2 and feats.pooled.shape[0] == 2
    cost = space.cost(arch, spec.num_classes, spec.image_size)
    assert cost.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SUPERNETS)
def test_supernet_forward_gives_logits_of_the_target(name: str) -> None:
    space = get_space(name)
    spec = space.dataset()
    arch = _samples(space, 1, seed=3)[0]
    sn = space.supernet(spec.num_classes, torch.device("cpu"), False)  # type: ignore[attr-defined]
    sn.load(arch, 0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(2, 3, spec.image_size, spec.image_size)
    feats = sn.features(x)
    assert feats.logits.shape == (2, spec.num_classes)
    assert torch.isfinite(feats.logits).all()


def test_targets_have_ground_truth_for_canonical_archs(space: SearchSpace) -> None:
    if not space.targets:
        with pytest.raises(DiswotError):
            space.ground_truth("anything")
        return
    for target in space.targets:
        spec = space.dataset(target)
        assert spec.num_classes >= 2 and spec.image_size >= 8
        gt = space.ground_truth(target)
        assert gt and all(0.0 < v <= 100.0 for v in gt.values())
        for arch in list(gt)[:5]:
            assert space.validate(arch) == arch
    ranked = space.rank_archs(4, seed=0)
    assert len(ranked) == 4 and all(space.validate(a) == a for a in ranked)
