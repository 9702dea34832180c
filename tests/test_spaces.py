"""Search spaces: registry, the protocol's moves, exact closed-form costs, ground truth."""

from __future__ import annotations

import random

import pytest
import torch

from diswot import bench
from diswot.errors import DiswotError
from diswot.models.cost import profile_arch
from diswot.models.nb201 import OPS, parse_arch
from diswot.spaces import SPACES, DatasetSpec, SearchSpace, get_space, list_spaces, register_space


def test_registry_lists_builtin_spaces_and_rejects_unknown():
    assert {"s1", "nb201"} <= set(list_spaces())
    assert get_space("S1") is get_space("s1")  # shared instance: shared cost cache
    assert get_space(get_space("nb201")) is get_space("nb201")
    with pytest.raises(DiswotError, match="unknown space 'nope'; known: .*nb201.*s1"):
        get_space("nope")


def test_register_space_checks_the_class():
    with pytest.raises(DiswotError, match="SearchSpace subclass"):
        register_space("_not_a_space")(dict)  # type: ignore[arg-type]

    class Named(SearchSpace):  # abstract; never instantiated
        name = "other"

    with pytest.raises(DiswotError, match="registered '_named'"):
        register_space("_named")(Named)
    assert "_named" not in SPACES


# ----------------------------------------------------------------------------------------- S1


def test_s1_enumerates_the_64_students_of_the_ground_truth():
    s1 = get_space("s1")
    archs = s1.enumerate()
    assert len(archs) == len(set(archs)) == s1.size() == 64
    assert set(archs) == set(bench.s1_accuracy("kd")) == set(s1.rank_archs(None, 0))
    assert all(s1.validate(a) == a for a in archs)
    assert s1.dataset() == s1.dataset("cls") == DatasetSpec(100, 32)
    assert s1.default_teacher == "resnet110"


def test_s1_moves():
    s1 = get_space("s1")
    rng = random.Random(0)
    for _ in range(300):
        a, b = s1.sample(rng), s1.sample(rng)
        child = s1.mutate(a, rng)
        assert child != a and sum(x != y for x, y in zip(a, child)) == 1
        assert s1.validate(child) == child
        mix = s1.crossover(a, b, rng)
        assert all(m in (x, y) for m, x, y in zip(mix, a, b))
    samples = {s1.sample(random.Random(i)) for i in range(400)}
    assert len(samples) > 50  # covers the space, not a corner of it


@pytest.mark.parametrize("bad", ["714", "71", "7133", "abc", "", None])
def test_s1_validate_names_accepted_values(bad):
    with pytest.raises(DiswotError, match="accepted: 3 digits from 1,3,5,7"):
        get_space("s1").validate(bad)


def test_s1_ground_truth_and_targets():
    s1 = get_space("s1")
    assert s1.ground_truth("kd")["333"] == bench.s1_accuracy("kd")["333"]
    assert s1.ground_truth("vanilla") == bench.s1_accuracy("cls")
    with pytest.raises(DiswotError, match="space 's1' has no target 'top5'; known: kd, cls"):
        s1.ground_truth("top5")
    with pytest.raises(DiswotError, match="known: kd, cls"):
        s1.dataset("imagenet")


def test_s1_closed_form_cost_is_exact():
    s1 = get_space("s1")
    assert s1.cost("333", 100, 32).params == 278_324  # ResNet20, the paper's budget
    assert s1.cost("333", 100, 32).flops == 40_818_944  # 40.82M multiply-adds
    for code in ("715", "153"):
        assert s1.cost(code, 100, 32) == profile_arch(code, 100, (1, 3, 32, 32), "macs")


def test_s1_build_runs():
    model = get_space("s1").build("713", 100)
    assert sum(len(layer) for layer in (model.layer1, model.layer2, model.layer3)) == 11
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


# ----------------------------------------------------------------------------------------- NB201


def test_nb201_enumerates_the_benchmark():
    nb = get_space("nb201")
    archs = nb.enumerate()
    assert nb.size() == len(archs) == len(set(archs)) == 15_625
    assert set(archs) == set(bench.nb201_archs())
    sample = nb.rank_archs(25, 3)
    assert sample == bench.nb201_sample(25, 3)
    assert set(sample) <= set(nb.ground_truth("cifar10"))


def test_nb201_datasets_and_targets():
    nb = get_space("nb201")
    assert nb.dataset() == nb.dataset("cifar100") == DatasetSpec(100, 32)
    assert nb.dataset("CIFAR10") == DatasetSpec(10, 32)
    assert nb.dataset("imagenet16-120") == DatasetSpec(120, 16)
    gt = nb.ground_truth("ImageNet16-120")
    assert len(gt) == 15_625 and 0 < min(gt.values()) < max(gt.values()) < 100
    with pytest.raises(DiswotError, match="known: cifar10, cifar100, ImageNet16-120"):
        nb.dataset("svhn")


def test_nb201_moves():
    nb = get_space("nb201")
    rng = random.Random(1)
    for _ in range(300):
        a, b = nb.sample(rng), nb.sample(rng)
        child = nb.mutate(a, rng)
        ea, ec = parse_arch(a), parse_arch(child)
        assert sum(x != y for x, y in zip(ea, ec)) == 1
        mix = parse_arch(nb.crossover(a, b, rng))
        assert all(m in (x, y) for m, x, y in zip(mix, ea, parse_arch(b)))
    ops_seen = {op for i in range(200) for op in parse_arch(nb.sample(random.Random(i)))}
    assert ops_seen == set(OPS)


def test_nb201_validate():
    nb = get_space("nb201")
    arch = nb.enumerate()[1234]
    assert nb.validate("  " + arch + " ") == arch
    with pytest.raises(DiswotError, match="unknown op 'conv_5x5'"):
        nb.validate(arch.replace(parse_arch(arch)[0], "conv_5x5", 1))
    with pytest.raises(DiswotError):
        nb.validate("713")


def test_nb201_closed_form_cost_is_exact():
    nb = get_space("nb201")
    rng = random.Random(7)
    conv3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for arch in (nb.sample(rng), nb.sample(rng), conv3):
        assert nb.cost(arch, 100, 32) == profile_arch(arch, 100, (1, 3, 32, 32), "macs")
    # The all-3x3 cell: NB201 publishes 220.12M multiply-adds with the CIFAR-10 head
    # (220,119,680); the CIFAR-100 head adds 64 x 90 more.
    big = nb.cost(conv3, 100, 32)
    assert big.flops == 220_119_680 + 64 * 90 and round(big.params / 1e6, 2) == 1.54
    assert nb.cost(nb.enumerate()[0], 100, 32).flops < nb.cost(conv3, 100, 32).flops


def test_nb201_build_runs_at_16px():
    nb = get_space("nb201")
    model = nb.build(nb.enumerate()[-1], 120)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 120)


def test_cost_convention_text():
    text = get_space("nb201").cost_convention(120, 16)
    assert "multiply-adds" in text and "3x16x16" in text and "120-class" in text
