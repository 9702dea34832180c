from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
from conftest import REFERENCE_DATA

from diswot import bench
from diswot.errors import DiswotError

SHARED = REFERENCE_DATA


def test_s1_tables():
    kd = bench.s1_accuracy("kd")
    cls = bench.s1_accuracy()
    assert cls == kd
    cls = bench.s1_accuracy("cls")
    assert len(kd) == len(cls) == 64 and set(kd) == set(cls)
    assert "333" in kd
    assert all(len(c) == 3 and set(c) <= set("1357") for c in kd)
    assert all(50 < v < 80 for v in [*kd.values(), *cls.values()])
    assert kd["111"] == pytest.approx(61.87) and cls["111"] == pytest.approx(60.20)
    assert bench.s1_accuracy("VANILLA") == cls
    # KD helps the smallest student; the tables are not swapped.
    assert kd["111"] > cls["111"]


def test_s1_bad_target():
    with pytest.raises(DiswotError, match="accepted: kd, cls"):
        bench.s1_accuracy("dist")


def test_nb201_accuracy_table():
    archs = bench.nb201_archs()
    assert len(archs) == len(set(archs)) == 15625
    for ds, hi in (("cifar10", 95), ("cifar100", 75), ("ImageNet16-120", 48)):
        acc = bench.nb201_accuracy(ds)
        assert set(acc) == set(archs)
        assert all(0 < v <= hi for v in acc.values())
        assert max(acc.values()) > hi - 5
    assert bench.nb201_accuracy("imagenet16") == bench.nb201_accuracy("IMAGENET16-120")
    best = max(bench.nb201_accuracy("cifar10").items(), key=lambda kv: kv[1])
    assert best[1] == pytest.approx(94.3733, abs=1e-3)
    # All-'none' cells cannot learn: chance accuracy.
    none = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert bench.nb201_accuracy("cifar100")[none] < 2


def test_nb201_returns_fresh_containers():
    acc = bench.nb201_accuracy("cifar10")
    acc.clear()
    assert len(bench.nb201_accuracy("cifar10")) == 15625
    bench.nb201_archs().clear()
    assert len(bench.nb201_archs()) == 15625


def test_nb201_sample():
    a = bench.nb201_sample(100, seed=0)
    assert a == bench.nb201_sample(100, seed=0)
    assert a != bench.nb201_sample(100, seed=1)
    assert len(set(a)) == 100 and set(a) <= set(bench.nb201_archs())
    assert sorted(bench.nb201_sample(15625, seed=3)) == sorted(bench.nb201_archs())
    assert bench.nb201_sample(0, seed=0) == []
    with pytest.raises(DiswotError, match="0..15625"):
        bench.nb201_sample(15626, seed=0)
    with pytest.raises(DiswotError):
        bench.nb201_sample(-1, seed=0)


def test_arch_conversions():
    arch = bench.naslib_to_arch((0, 2, 3, 4, 1, 3))
    # slots: e10, e20, e30, e21, e31, e32
    assert (
        arch
        == "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|"
    )
    assert bench.arch_to_naslib(arch) == (0, 2, 3, 4, 1, 3)
    for a in bench.nb201_sample(50, seed=7):
        assert bench.naslib_to_arch(bench.arch_to_naslib(a)) == a
    with pytest.raises(DiswotError, match="NB201 arch"):
        bench.arch_to_naslib("|conv~0|+|none~0|none~1|")
    with pytest.raises(DiswotError):
        bench.naslib_to_arch((0, 1, 2))


def test_naslib_scores():
    proxies = {"flops", "params", "snip", "jacov", "grad_norm", "plain", "epe_nas", "fisher"}
    proxies |= {"grasp", "l2_norm", "synflow", "nwot", "val_accuracy"}
    c100 = bench.naslib_scores("cifar100")
    assert len(c100) == 725 and len(bench.naslib_scores("ImageNet16-120")) == 724
    assert all(len(k) == 6 and all(0 <= o <= 4 for o in k) for k in c100)
    assert all(set(v) == proxies for v in c100.values())
    rec = c100[(0, 2, 3, 2, 3, 1)]
    assert rec["flops"] == pytest.approx(88.313152)
    assert rec["val_accuracy"] == pytest.approx(62.02, abs=1e-3)
    # NASLib's validation accuracy tracks NB201 test accuracy under our edge mapping.
    test_acc = bench.nb201_accuracy("cifar100")
    close = sum(
        abs(v["val_accuracy"] - test_acc[bench.naslib_to_arch(k)]) < 3 for k, v in c100.items()
    )
    assert close > 0.9 * len(c100)
    assert math.isinf(c100[(1, 0, 1, 4, 0, 1)]["nwot"])


def test_zen_scores():
    archs = set(bench.nb201_archs())
    for ds in ("cifar10", "cifar100", "imagenet16"):
        zen = bench.zen_scores(ds)
        assert set(zen) == archs
        assert all(math.isfinite(v) for v in zen.values())
        assert sum(v == -1e8 for v in zen.values()) == 341
    zen = bench.zen_scores("cifar10")
    # First record of the source file: idx 0, arch (4, 0, 3, 1, 4, 3).
    assert zen[bench.naslib_to_arch((4, 0, 3, 1, 4, 3))] == pytest.approx(63.38789367675781)
    # A cell whose input never reaches the output carries the sentinel.
    assert zen["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"] == -1e8


def test_dispatch():
    assert bench.targets("s1") == ["kd", "cls"]
    assert bench.targets("NB201") == ["cifar10", "cifar100", "ImageNet16-120"]
    assert bench.ground_truth("s1", "vanilla") == bench.s1_accuracy("cls")
    assert bench.ground_truth("nb201", "cifar100") == bench.nb201_accuracy("cifar100")
    with pytest.raises(DiswotError, match="unknown s1 target 'cifar10'; accepted: kd, cls"):
        bench.ground_truth("s1", "cifar10")
    with pytest.raises(DiswotError, match="accepted: cifar10, cifar100, ImageNet16-120"):
        bench.ground_truth("nb201", "kd")
    with pytest.raises(DiswotError, match="accepted: s1, nb201"):
        bench.targets("darts")


def test_shipped_data_is_small():
    folder = resources.files("diswot").joinpath("_data")
    total = sum(f.stat().st_size for f in Path(str(folder)).iterdir() if f.is_file())
    assert total < 2_000_000


@pytest.mark.reference_data(SHARED)
def test_shipped_data_rebuilds_identically(tmp_path):
    written = bench.build_package_data(SHARED, tmp_path)
    shipped = Path(str(resources.files("diswot").joinpath("_data")))
    for path in written:
        assert path.read_bytes() == (shipped / path.name).read_bytes(), path.name
