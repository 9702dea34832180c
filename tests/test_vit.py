"""ViT students (AutoFormer, PiT) and their spaces: codes, exact costs, ground truth, scoring, errors.

224 px transformers are slow on a CPU, so every shipped architecture is *built* on the ``meta``
device (structure and parameter shapes, no memory) and only a handful run forward, on tiny batches.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import REFERENCE_DATA

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.models import create_model
from diswot.models.cost import count_params, profile
from diswot.models.vit import (
    AUTOFORMER_TI,
    PIT_TI,
    AutoFormer,
    AutoFormerArch,
    PiT,
    PiTArch,
    ResizeInput,
    parse_vit_arch,
    vit_macs,
    vit_params,
)
from diswot.scoring import Scorer
from diswot.spaces import get_space, list_spaces
from diswot.spaces.vit import (
    AF_HIDDEN,
    AF_RATIOS,
    PIT_BASE,
    PIT_DEPTHS,
    PIT_RATIOS,
    build_vit_ground_truth,
)

SRC = REFERENCE_DATA / "autoprox-vit-kd" / "vit_kd_gt.json"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "diswot" / "_data" / "vit_kd_gt.json.gz"

AF = get_space("autoformer")
PIT = get_space("pit")
SMALL_PIT = "b16_r2_d1-4-2_h2-2-2"
SMALL_AF = "e192_r" + "-".join(["3.5"] * 12) + "_h" + "-".join(["3"] * 12)


def _one_line_error(fn, *needles: str) -> str:
    with pytest.raises(DiswotError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# -- independent closed-form parameter counts (derived here, not imported) ----------------------


def _af_params_by_hand(dim: int, ratios: list[float], classes: int) -> int:
    # patch conv 16x16x3 -> dim (+bias); class token; 14*14+1 position embeddings
    total = 16 * 16 * 3 * dim + dim + dim + 197 * dim
    for r in ratios:
        hid = int(dim * r)
        total += 2 * dim  # norm1
        total += dim * 3 * dim + 3 * dim  # qkv
        total += dim * dim + dim  # proj
        total += 2 * dim  # norm2
        total += dim * hid + hid + hid * dim + dim  # mlp
    return total + 2 * dim + dim * classes + classes  # final norm, head


def _pit_params_by_hand(base: int, ratio: int, depth: list[int], heads: list[int], k: int) -> int:
    w = [base * h for h in heads]
    total = 16 * 16 * 3 * w[0] + w[0] + 27 * 27 * w[0] + w[0]  # conv embed, pos (27x27), cls
    for s in range(3):
        c = w[s]
        total += depth[s] * (
            4 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c * c * ratio + c * ratio + c
        )
        if s < 2:
            total += w[s + 1] * 9 + w[s + 1]  # depthwise 3x3 conv, channel multiplier
            total += w[s] * w[s + 1] + w[s + 1]  # class-token linear
    return total + 2 * w[2] + w[2] * k + k


def test_registered_and_hand_counted_params() -> None:
    assert {"autoformer", "pit"} <= set(list_spaces())
    # AUTOFORMER_TI is DeiT-Ti's shape (mean pooling instead of the class token changes no
    # parameter): DeiT-Ti has 5,717,416 parameters with 1000 classes.
    assert count_params(AutoFormer(AUTOFORMER_TI, 1000)) == 5_717_416
    assert vit_params(AUTOFORMER_TI, 1000) == 5_717_416
    with torch.device("meta"):
        for arch, k in (
            ("e240_r4-3.5-4-4-3.5-4-3.5-4-4-3.5-4-4-3.5-4_h3-4-3-4-4-3-3-4-3-4-4-3-3-4", 102),
            ("e216_r" + "-".join(["3.5", "4"] * 6) + "_h" + "-".join("3" * 12), 4),
        ):
            a = AutoFormerArch.from_code(arch)
            expect = _af_params_by_hand(a.hidden_dim, list(a.mlp_ratio), k)
            assert count_params(AF.build(arch, k)) == expect == AF.cost(arch, k, 224).params
        for (b, r, d, h), k in (
            ((16, 6, [2, 8, 4], [2, 4, 4]), 100),
            ((40, 2, [3, 4, 6], [2, 2, 8]), 4),
        ):
            code = PiTArch(b, r, tuple(d), tuple(h)).code
            expect = _pit_params_by_hand(b, r, d, h, k)
            assert count_params(PIT.build(code, k)) == expect == PIT.cost(code, k, 224).params
    assert count_params(PiT(PIT_TI, 1000)) == _pit_params_by_hand(32, 4, [2, 6, 4], [2, 4, 8], 1000)


def test_every_shipped_arch_builds_with_exact_params() -> None:
    for space, n in ((AF, 200), (PIT, 100)):
        archs = space.rank_archs()
        assert len(archs) == len(set(archs)) == n
        for arch in archs:
            with torch.device("meta"):
                model = space.build(arch, 100)
            assert count_params(model) == space.cost(arch, 100, 224).params, arch


def test_flops_match_the_profiler_including_attention() -> None:
    for space, arch in ((AF, AF.rank_archs()[1]), (PIT, PIT.rank_archs()[1])):
        with torch.device("meta"):
            model = space.build(arch, 100)
        prof = profile(model, (1, 3, 224, 224), "macs")
        assert space.cost(arch, 100, 224) == prof
    # The attention matmuls (q k^T and attn v) are counted: 2 * 197^2 * dim per layer.
    a = AUTOFORMER_TI
    linear_only = 196 * 768 * 192 + 197 * 12 * (4 * 192 * 192 + 2 * 192 * 768) + 192 * 1000
    assert vit_macs(a, 1000) == linear_only + 12 * 2 * 197 * 197 * 192


# -- ground truth ----------------------------------------------------------------------------


def test_ground_truth_targets_and_datasets() -> None:
    assert AF.targets == PIT.targets
    for t, k in (("c100_kd", 100), ("flowers_base", 102), ("chaoyang_kd", 4)):
        assert AF.dataset(t).num_classes == PIT.dataset(t).num_classes == k
        assert AF.dataset(t).image_size == 224
    assert AF.dataset().num_classes == 100  # default target c100_kd
    for t in AF.targets:
        gt = AF.ground_truth(t)
        assert len(gt) == (200 if t.endswith("_kd") else 100)
        assert len(PIT.ground_truth(t)) == 100
        assert all(0 < v < 100 for v in gt.values())
    assert len(AF.ground_truth("c100_kd", part=2)) == 100
    assert set(AF.ground_truth("c100_base")) == set(AF.ground_truth("c100_kd", part=1))
    # spot values straight from the source file (first records of gt_autoformer and gt_pit)
    first = AF.validate(
        {
            "hidden_dim": 192,
            "depth": 12,
            "mlp_ratio": [3.5, 4.0, 3.5, 4.0, 3.5, 3.5, 4.0, 3.5, 4.0, 4.0, 4.0, 3.5],
            "num_heads": [4, 4, 3, 4, 3, 3, 4, 4, 3, 3, 3, 4],
        }
    )
    assert AF.ground_truth("c100_kd")[first] == 76.06
    assert AF.ground_truth("flowers_base")[first] == 53.6835
    assert PIT.ground_truth("chaoyang_kd")["b16_r6_d2-8-4_h2-4-4"] == 83.1697
    assert len(AF.supernet_accuracy()) == 200 and PIT.supernet_accuracy() == {}
    assert AF.rank_archs(10, seed=3) == AF.rank_archs(10, seed=3) != AF.rank_archs(10, seed=4)


@pytest.mark.reference_data(SRC)
def test_shipped_file_rebuilds_byte_identically_and_matches_source(tmp_path: Path) -> None:
    out = build_vit_ground_truth(SRC, tmp_path / "gt.json.gz")
    assert out.read_bytes() == SHIPPED.read_bytes()
    raw = json.loads(SRC.read_text())
    for space, files in ((AF, ("gt_autoformer", "gt_autoformer_2")), (PIT, ("gt_pit",))):
        for part, name in enumerate(files, start=1):
            for rec in raw[name]:
                code = space.validate(rec["arch"])
                assert space.check(code).to_dict() == rec["arch"]  # round trip to the dict
                assert space.ground_truth("c100_kd", part)[code] == rec["c100_kd_acc"]
                assert space.ground_truth("chaoyang_kd")[code] == rec["chaoyang_kd_acc"]
    assert len(json.loads(gzip.decompress(SHIPPED.read_bytes()))["autoformer"]) == 200


# -- codes and space moves ---------------------------------------------------------------------


def test_codes_round_trip_with_dicts_and_json() -> None:
    for space in (AF, PIT):
        for code in space.rank_archs()[:20]:
            d = space.check(code).to_dict()
            assert space.validate(d) == code
            assert space.validate(json.dumps(d)) == code
            assert space.validate(" " + code + " ") == code
            assert parse_vit_arch(code).to_dict() == d
    assert PIT_TI.code == "b32_r4_d2-6-4_h2-4-8"
    assert AutoFormerArch.from_code("e216_r4-3.5_h3-4").mlp_ratio == (4.0, 3.5)


@pytest.mark.parametrize("space", [AF, PIT], ids=["autoformer", "pit"])
def test_sample_mutate_crossover_stay_in_space(space) -> None:
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        a = space.sample(rng)
        assert space.validate(a) == a
        m = space.mutate(a, rng)
        assert m != a and space.validate(m) == m
        b = space.sample(rng)
        c = space.crossover(a, b, rng)
        assert c is not None and space.validate(c) == c
        seen.add(a)
    assert len(seen) > 150
    r1, r2 = random.Random(7), random.Random(7)
    assert [space.sample(r1) for _ in range(5)] == [space.sample(r2) for _ in range(5)]


def test_space_sizes_and_choices() -> None:
    assert AF.size() == 3 * (4**12 + 4**13 + 4**14)
    assert AF.enumerate() is None
    every = PIT.enumerate()
    assert len(every) == len(set(every)) == PIT.size() == 4 * 4 * 27 * 10
    assert set(PIT.rank_archs()) <= set(every)
    rng = random.Random(1)
    hs, rs = set(), set()
    for _ in range(300):
        a = AF.check(AF.sample(rng))
        hs.add(a.hidden_dim)
        rs.update(a.mlp_ratio)
        p = PIT.check(PIT.sample(rng))
        assert p.base_dim in PIT_BASE and p.mlp_ratio in PIT_RATIOS
        assert all(d in c for d, c in zip(p.depth, PIT_DEPTHS))
    assert hs == set(AF_HIDDEN) and rs == set(AF_RATIOS)


def test_bad_input_is_one_line_naming_accepted_values() -> None:
    good = PIT.check("b16_r6_d2-8-4_h2-4-4").to_dict()
    _one_line_error(lambda: PIT.validate({**good, "width": 3}), "width", "base_dim, depth")
    _one_line_error(lambda: PIT.validate({**good, "base_dim": 20}), "20", "16, 24, 32, 40")
    _one_line_error(lambda: PIT.validate({**good, "depth": [2, 5, 4]}), "depth[1]", "4, 6, 8")
    _one_line_error(lambda: PIT.validate({**good, "num_heads": [4, 2, 2]}), "multiple")
    missing = {k: v for k, v in good.items() if k != "mlp_ratio"}
    _one_line_error(lambda: PIT.validate(missing), "mlp_ratio")
    af = AF.check(AF.rank_archs()[0]).to_dict()
    _one_line_error(
        lambda: AF.validate({**af, "mlp_ratio": [3.0] + af["mlp_ratio"][1:]}), "3.0", "3.5, 4.0"
    )
    _one_line_error(
        lambda: AF.validate({**af, "num_heads": [5] + af["num_heads"][1:]}), "5", "heads"
    )
    _one_line_error(lambda: AF.validate({**af, "hidden_dim": 264}), "192, 216, 240")
    _one_line_error(lambda: AF.validate({**af, "depth": 13}), "depth 13", "12")
    _one_line_error(lambda: AF.validate("b16_r6_d2-8-4_h2-4-4"), "PiT")
    _one_line_error(lambda: PIT.validate(AF.rank_archs()[0]), "AutoFormer")
    _one_line_error(lambda: PIT.validate("b16_r6_d2-8-4"), "b<base>_r<ratio>")
    _one_line_error(lambda: AF.validate("hello"), "AutoFormer code", "PiT code")
    _one_line_error(lambda: AF.ground_truth("c100_base", part=2), "c100_kd, flowers_kd")
    _one_line_error(lambda: AF.ground_truth("imagenet"), "c100_kd", "chaoyang_base")
    _one_line_error(lambda: AF.dataset("cifar10"), "c100_kd")
    _one_line_error(lambda: PIT.ground_truth("c100_kd", part=2), "accepted: 1")
    _one_line_error(lambda: AF.validate({"hidden_dim": 192}), "lacks")
    _one_line_error(lambda: PiT(PIT_TI, 10)(torch.zeros(1, 3, 32, 32)), "224 px")


# -- forward passes and scoring (few, tiny batches) ------------------------------------------


def test_forward_shapes_hooks_and_any_class_count() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    for space, arch, side in ((PIT, SMALL_PIT, 7), (AF, SMALL_AF, 14)):
        model = space.build(arch, 4)
        with torch.no_grad(), FeatureExtractor(model, *space.feature_hooks) as fx:
            f = fx(x)
        width = model.head.in_features
        assert f.logits.shape == (2, 4) and torch.isfinite(f.logits).all()
        assert f.feature_map.shape == (2, width, side, side)
        assert f.pooled.shape == (2, width)
        with torch.device("meta"):  # any class count: shapes only
            big = space.build(arch, 102)
            assert big(torch.empty(2, 3, 224, 224)).shape == (2, 102)
    # registered model factories, and other resolutions for tests and small inputs
    assert create_model("pit_ti", num_classes=10, image_size=32)(
        torch.zeros(1, 3, 32, 32)
    ).shape == (1, 10)
    m = create_model("autoformer_ti", num_classes=5, arch=SMALL_AF, image_size=32)
    assert m(torch.zeros(3, 3, 32, 32)).shape == (3, 5)


def test_resize_input_teacher_sees_32px() -> None:
    teacher = create_model("resnet56", num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    small = torch.nn.functional.interpolate(
        x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    )
    with torch.no_grad():
        assert torch.equal(ResizeInput(teacher, 32)(x), teacher(small))
        assert torch.equal(ResizeInput(teacher, 32)(small), teacher(small))


def test_scoring_vit_students_against_resnet56() -> None:
    scores = {}
    for space, arch in ((PIT, SMALL_PIT), (AF, SMALL_AF)):
        k = space.dataset("chaoyang_kd").num_classes
        cls, feat = space.feature_hooks
        scorer = Scorer(
            ResizeInput(create_model(space.default_teacher, num_classes=k), 32),
            num_classes=k,
            batch_size=4,
            image_size=224,
            semantic=space.semantic,
            student_classifier=cls,
            student_feature=feat,
            builder=space.build,
            coster=lambda a, n, size, s=space: s.cost(a, n, size[-1]),
        )
        r1 = scorer.score(arch, ("diswot", "ms", "mr", "params", "flops"))
        r2 = scorer.score(arch, ("diswot",))
        assert r1.values["diswot"] == r2.values["diswot"]  # deterministic per seed
        assert r1.info["semantic_form"] == "class"
        assert r1.values["diswot"] == pytest.approx(-(r1.values["ms"] + r1.values["mr"]))
        assert 0 < r1.values["mr"] < 4 / 4 and 0 < r1.values["ms"] < 4 / k
        assert r1.params == space.cost(arch, k, 224).params
        scores[space.name] = r1.values["diswot"]
    assert scores["pit"] != scores["autoformer"]
