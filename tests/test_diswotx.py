"""DisWOT-X on tiny models: each part against an independent computation, the one-forward claim,
determinism, the frozen combination rule and the protocol's disjoint split."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diswot.models.cost import profile
from diswot.proxies import get_proxy
from diswot.proxies.diswotx import (
    NAME,
    XParts,
    centred_gram,
    combine,
    kernel_expressivity,
    linear_cka,
    xparts,
)
from diswot.scoring import Scorer


class Tiny(nn.Module):
    """conv-BN-ReLU x2, global pool, linear; ``dead`` zeroes the body so its output ignores x."""

    def __init__(self, width: int = 4, num_classes: int = 3, dead: bool = False) -> None:
        super().__init__()
        self.dead = dead
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 6, 3, padding=1, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 0.0 if self.dead else x)
        return self.fc(self.pool(h).flatten(1))


def _build(arch: str, k: int) -> nn.Module:
    return Tiny(int(arch.lstrip("wd")), k, dead=arch.startswith("d"))


def _scorer(seeds: tuple[int, ...] = (0,)) -> Scorer:
    return Scorer(
        Tiny(5, 3),
        teacher_init="random",  # re-initialised per seed, as the paper's teacher is
        num_classes=3,
        batch_size=8,
        image_size=8,
        seeds=seeds,
        init="default",
        builder=_build,
        coster=lambda arch, k, size: profile(_build(arch, k), size),
    )


def test_cka_is_one_for_the_same_representation_and_scale_and_rotation_free() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 7, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))
    a = centred_gram(x)
    assert linear_cka(a, a) == pytest.approx(1.0)
    # Isotropic scaling, an orthogonal map and a constant offset leave linear CKA unchanged.
    assert linear_cka(a, centred_gram(3.0 * x @ q + 5.0)) == pytest.approx(1.0)
    y = torch.randn(10, 7, generator=g, dtype=torch.float64)
    c = linear_cka(a, centred_gram(y))
    assert 0.0 <= c < 0.9
    assert linear_cka(a, centred_gram(torch.ones(10, 7))) == 0.0  # constant features


def test_centred_gram_rows_and_columns_sum_to_zero() -> None:
    x = torch.randn(6, 2, 3, 3)
    g = centred_gram(x)
    assert g.shape == (6, 6)
    assert torch.allclose(g.sum(0), torch.zeros(6, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(g.sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-9)


def test_expressivity_is_log_det_per_sample_and_minus_inf_when_singular() -> None:
    k = torch.tensor([[4.0, 1.0], [1.0, 4.0]])
    nwot, expr = kernel_expressivity(k)
    assert nwot == pytest.approx(math.log(15.0))
    assert expr == pytest.approx(math.log(15.0) / 2)
    assert kernel_expressivity(torch.ones(3, 3))[0] == -math.inf


def test_parts_match_independent_computations_on_a_tiny_model() -> None:
    sc = _scorer()
    probe = sc.probe("w4", 0)
    parts = xparts(probe)
    # nwot: the same value as the registered NASWOT proxy, which runs its own input-grad pass.
    assert parts.nwot == pytest.approx(get_proxy("nwot").fn(sc.probe("w4", 0)), rel=1e-9)
    assert parts.expr == pytest.approx(parts.nwot / 8)
    # The kernel diagonal counts ReLU units per sample: 4 x 8 x 8 + 6 x 8 x 8 on 8x8 inputs.
    assert parts.log_units == pytest.approx(math.log(4 * 64 + 6 * 64))
    assert parts.decorrelation <= 1e-12
    # cka: recomputed from a fresh forward of an identically built student.
    model = sc.build("w4", 1000 * 0 + 2)
    model.train()
    feats = {}
    model.body.register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
    with torch.no_grad():
        model(probe.inputs)
    want = linear_cka(centred_gram(sc.teacher(0).feature_map), centred_gram(feats["f"]))
    assert parts.cka == pytest.approx(want, rel=1e-9)
    assert parts.log_params == pytest.approx(math.log(probe.cost.params))
    assert get_proxy(NAME).fn(probe) == pytest.approx(
        parts.log_params + parts.expr + math.log(parts.cka)
    )


def test_one_forward_serves_diswot_x_and_diswot() -> None:
    sc = _scorer()
    probe = sc.probe("w4", 0)
    calls = []
    probe.model.register_forward_hook(lambda m, i, o: calls.append(1))
    get_proxy(NAME).fn(probe)
    get_proxy("diswot").fn(probe)
    get_proxy("x-cka").fn(probe)
    get_proxy("x-expr").fn(probe)
    assert len(calls) == 1
    # DisWOT computed from the shared forward equals DisWOT computed on its own.
    alone = _scorer().probe("w4", 0)
    assert get_proxy("diswot").fn(probe) == pytest.approx(get_proxy("diswot").fn(alone))


def test_score_is_deterministic_and_a_dead_student_ranks_last() -> None:
    a = _scorer((0, 1)).score("w4", [NAME])
    b = _scorer((0, 1)).score("w4", [NAME])
    assert a.values == b.values and math.isfinite(a.values[NAME])
    dead = _scorer((0, 1)).score("d4", [NAME])
    assert dead.values[NAME] == -math.inf


def test_combine_is_the_documented_sum_of_logs() -> None:
    p = XParts(log_params=10.0, log_flops=12.0, nwot=64.0, expr=2.0, cka=0.5, batch=32)
    assert combine(p) == pytest.approx(12.0 + math.log(0.5))
    assert combine(XParts(10.0, 12.0, -math.inf, -math.inf, 0.5, 32)) == -math.inf
    assert combine(XParts(10.0, 12.0, 64.0, 2.0, 0.0, 32)) == -math.inf
    # Registered with the flags a search/rank needs.
    spec = get_proxy(NAME)
    assert spec.higher_is_better and spec.needs_teacher


def test_protocol_heldout_cells_are_disjoint_from_the_dev_sample() -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "protocol.py"
    spec = importlib.util.spec_from_file_location("protocol_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    from diswot import bench

    dev = set(bench.nb201_sample(mod.DEV_CELLS, 0))
    held = mod.heldout_cells(1000)
    assert len(held) == len(set(held)) == 1000
    assert not dev & set(held)
    assert held[:300] == mod.heldout_cells(300)
