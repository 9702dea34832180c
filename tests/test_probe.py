"""The Scorer: teacher cache, determinism, no gradient accumulation, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from diswot.errors import DiswotError
from diswot.scoring import Scorer

NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer("resnet8", num_classes=10, batch_size=8, seeds=(0, 1))


def test_score_components_and_cost(scorer: Scorer) -> None:
    res = scorer.score("111")
    assert res.values["diswot"] == pytest.approx(-(res.values["ms"] + res.values["mr"]))
    assert 0 < res.values["ms"] < 4 and 0 <= res.values["mr"] <= 4 / 8
    assert res.info["semantic_form"] == "channel"
    assert res.params > 0 and res.flops > 0
    assert len(res.per_seed) == 2
    a, b = (seed["diswot"] for seed in res.per_seed)
    assert a != b and res.values["diswot"] == pytest.approx((a + b) / 2)
    assert res.std["diswot"] == pytest.approx(abs(a - b) / 2)  # population std of two seeds


def test_deterministic_and_teacher_cached(scorer: Scorer) -> None:
    a = scorer.evaluate("313", ["diswot"], 0)["diswot"]
    t0 = scorer.teacher(0)
    b = scorer.evaluate("313", ["diswot"], 0)["diswot"]
    assert a == b
    assert scorer.teacher(0) is t0  # computed once per seed, reused
    fresh = Scorer("resnet8", num_classes=10, batch_size=8, seeds=(0,))
    assert fresh.evaluate("313", ["diswot"], 0)["diswot"] == a  # independent of history


def test_no_gradient_accumulation_between_candidates(scorer: Scorer) -> None:
    """The public code never zeroed the teacher's gradient; ours has none to zero."""
    order1 = [scorer.evaluate(s, ["diswot"], 0)["diswot"] for s in ("111", "333", "111")]
    assert order1[0] == order1[2]
    probe = scorer.probe("111", 0)
    _ = probe.diswot
    assert all(p.grad is None for p in probe.model.parameters())


def test_nb201_student_and_width_independent_form() -> None:
    sc = Scorer("resnet8", num_classes=10, batch_size=8)
    res = sc.score(NB201_CELL)
    assert res.info["semantic_form"] == "channel"  # both end with 64 channels
    assert math.isfinite(res.values["diswot"])
    # A user's own teacher module of another width switches to the class-relation form.
    from diswot.models.cifar_resnet import CifarResNet

    wide = Scorer(
        CifarResNet((1, 1, 1), num_classes=10, widths=(16, 32, 128)), num_classes=10, batch_size=8
    )
    res_w = wide.score(NB201_CELL)
    assert res_w.info["semantic_form"] == "class"
    assert 0 <= res_w.values["ms"] <= 4 / 10


def test_student_as_module_and_class_mismatch() -> None:
    sc = Scorer("resnet8", num_classes=10, batch_size=4)
    from diswot.models import create_model

    res = sc.score(create_model("resnet8", num_classes=10))
    assert math.isfinite(res.values["diswot"])
    with pytest.raises(DiswotError, match="num_classes=10"):
        sc.score(create_model("resnet8", num_classes=100))
    # Every proxy reading the student's pass refuses the mismatch too, not only DisWOT.
    for proxy in ("kd", "sp", "at"):
        with pytest.raises(DiswotError, match="num_classes=10"):
            sc.evaluate(create_model("resnet8", num_classes=100), [proxy], 0)


def test_scoring_leaves_the_callers_modules_alone() -> None:
    from diswot.models import create_model

    teacher, student = create_model("resnet8", num_classes=10), create_model("111", num_classes=10)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (teacher, student)]
    Scorer(teacher, num_classes=10, batch_size=4).score(student)
    for m, saved in zip((teacher, student), before):
        assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())
        assert m.conv1.weight.is_contiguous()  # not turned channels-last behind the caller's back


def test_seed_count_and_default_dtype() -> None:
    a = Scorer("resnet8", num_classes=10, batch_size=4, seeds=3)
    assert a.seeds == (0, 1, 2)
    torch.set_default_dtype(torch.float64)
    try:
        with pytest.raises(DiswotError, match="torch.set_default_dtype"):
            Scorer("resnet8", num_classes=10, batch_size=4)
    finally:
        torch.set_default_dtype(torch.float32)


def test_overflowing_networks_score_nan_not_a_plausible_number() -> None:
    from diswot.metrics import diswot_score
    from diswot.models import create_model

    g, f = torch.randn(10, 8, dtype=torch.float64), torch.randn(4, 8, 2, 2)
    for bad in (math.nan, math.inf):
        out = diswot_score(g, f, g * bad, f * bad)
        assert all(math.isnan(out[k]) for k in ("score", "ms", "mr")), out
        assert math.isnan(diswot_score(g, f, g, f * bad)["mr"])
    # A student whose pass overflows: NaN, which rank and search put last.
    student = torch.nn.Sequential(create_model("111", num_classes=10))
    student.register_forward_pre_hook(lambda m, args: (args[0] * math.inf,))
    vals = Scorer("resnet8", num_classes=10, batch_size=4).evaluate(student, ["diswot"], 0)
    assert math.isnan(vals["diswot"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 1}, "at least 2"),
        ({"num_classes": 1}, "at least 2"),
        ({"init": "xavier"}, "unknown init"),
        ({"seeds": ()}, "--seeds must be at least 1"),
        ({"seeds": 0}, "--seeds must be at least 1"),
        ({"num_classes": "100"}, "--num-classes must be an integer"),
        ({"batch_size": 4.5}, "--batch-size must be an integer"),
        ({"semantic": "foo"}, "unknown semantic form 'foo'; use auto, channel or class"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    base = {"num_classes": 10, "batch_size": 4}
    base.update(kwargs)
    with pytest.raises(DiswotError, match=match):
        Scorer("resnet8", **base)


def test_unknown_student_is_one_line_error() -> None:
    sc = Scorer("resnet8", num_classes=10, batch_size=4)
    with pytest.raises(DiswotError) as exc:
        sc.score("resnet9000x")
    assert "\n" not in str(exc.value)


def test_gaussian_init_is_the_papers(scorer: Scorer) -> None:
    model = scorer.build("111", 5)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert 0.8 < conv.weight.std().item() < 1.2
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_teacher_sees_its_own_resolution() -> None:
    """A 32 px CIFAR teacher scoring larger students gets the same batch, resized."""
    sc = Scorer("resnet8", num_classes=10, batch_size=4, image_size=64, teacher_image_size=32)
    assert sc.teacher(0).feature_map.shape[-1] == 8  # 32 px through two stride-2 stages
    plain = Scorer("resnet8", num_classes=10, batch_size=4, image_size=64)
    assert plain.teacher(0).feature_map.shape[-1] == 16
    assert math.isfinite(sc.score("111").values["diswot"])


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("tpu", "unknown device 'tpu'; accepted: auto, cpu, cuda, cuda:N"),
        ("cuda:x", "unknown device 'cuda:x'; accepted: auto, cpu, cuda, cuda:N"),
        ("meta", "device 'meta' is not supported; accepted: auto, cpu, cuda, cuda:N"),
        ("mps", "device 'mps' is not supported; accepted: auto, cpu, cuda, cuda:N"),
    ],
)
def test_unknown_devices_are_refused_like_train(device: str, match: str) -> None:
    with pytest.raises(DiswotError) as exc:
        Scorer("resnet8", num_classes=10, batch_size=4, device=device)
    assert str(exc.value) == match


def test_auto_and_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from diswot.distill import run
    from diswot.runtime import resolve_device

    assert run.resolve_device is resolve_device  # train/evaluate and the probe share one check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Scorer("resnet8", num_classes=10, batch_size=4, device="auto").device.type == "cpu"
    with pytest.raises(DiswotError, match="CUDA is not available; use --device cpu"):
        Scorer("resnet8", num_classes=10, batch_size=4, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DiswotError, match=r"'cuda:2' does not exist: 2 CUDA device\(s\) visible"):
        Scorer("resnet8", num_classes=10, batch_size=4, device="cuda:2")


def test_cpu_scoring_runs_channels_last_with_the_same_scores() -> None:
    cell = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    fast = Scorer("resnet8", batch_size=8)  # CPU: channels-last by default
    plain = Scorer("resnet8", batch_size=8, channels_last=False)
    assert fast.channels_last and not plain.channels_last
    x, _ = fast.batch(0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    probe = fast.probe(cell, 0)
    convs = [m for m in probe.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert probe.teacher.feature_map.is_contiguous(memory_format=torch.channels_last)
    for arch in ("111", cell):
        a = fast.evaluate(arch, ["diswot", "mr"], 0)
        b = plain.evaluate(arch, ["diswot", "mr"], 0)
        for p in ("diswot", "mr"):  # the same arithmetic, grouped differently by oneDNN
            assert a[p] == pytest.approx(b[p], rel=1e-3), (arch, p)
    # A retargeted network's new ops take the layout too, as a fresh build's have.
    from diswot.spaces import get_space

    fast = Scorer.for_space(get_space("nb201"), "resnet8", batch_size=8, engine="modules")
    first = fast.evaluation_probe(cell, ["diswot"], 0)
    first.diswot  # noqa: B018
    fast.release(first, ["diswot"])
    other = "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    second = fast.evaluation_probe(other, ["diswot"], 0)
    assert second.model is first.model  # recycled
    convs = [m for m in second.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_built_from_a_config_with_overrides_and_a_space() -> None:
    from diswot.config import ProbeConfig
    from diswot.spaces import get_space

    cfg = ProbeConfig(num_classes=10, batch_size=4, seeds=(0, 1))
    a = Scorer("resnet8", cfg)
    b = Scorer("resnet8", num_classes=10, batch_size=4, seeds=(0, 1))
    assert a.config == b.config and a.score("111").values == b.score("111").values
    c = Scorer("resnet8", cfg, batch_size=8, seeds=3)  # overrides win; a seed count is a range
    assert (c.batch_size, c.seeds, c.num_classes) == (8, (0, 1, 2), 10)
    with pytest.raises(DiswotError, match="unknown setting --batch for ProbeConfig; accepted: "):
        Scorer("resnet8", cfg, batch=8)
    # A space wires in its builder, cost and the settings it asks for; a setting given still wins.
    pit = get_space("pit")
    sc = Scorer(None, ProbeConfig(num_classes=10), space=pit)
    assert sc.builder == pit.build and sc.semantic == pit.semantic
    assert (sc.config.student_classifier, sc.config.student_feature) == pit.feature_hooks
    assert Scorer(None, space=pit, semantic="channel").semantic == "channel"
    assert Scorer.for_space(pit, None).config == Scorer(None, space=pit).config


def test_a_recording_pass_becomes_the_shared_forward() -> None:
    import contextlib

    sc = Scorer("resnet8", num_classes=10, batch_size=4)
    probe = sc.probe("111", 0)
    assert not probe.has_features
    f = probe.forward_with(contextlib.nullcontext())
    assert probe.has_features and probe.features is f  # adopted, not run again
    assert probe.diswot["score"] == sc.probe("111", 0).diswot["score"]  # the plain pass's value
