"""Unit tests of the distillation building blocks: losses, distillers, data pipeline, checkpoints."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diswot import losses
from diswot.distill.checkpoint import atomic_save, load_checkpoint
from diswot.distill.datasets import BatchLoader, DataConfig, load_dataset, make_synthetic
from diswot.distill.methods import FeatureInfo, StepOutputs, build_distiller
from diswot.distill.settings import TrainSettings
from diswot.distill.students import resolve_arch
from diswot.errors import DiswotError
from diswot.features import Features


# -- losses -----------------------------------------------------------------------------------------
def test_kd_loss_zero_for_equal_logits_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    assert losses.kd_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.kd_loss(a, b).item() > 0
    # T^2 scaling: matches the definition written out by hand.
    t = 4.0
    ref = (F.softmax(b / t, 1) * (F.log_softmax(b / t, 1) - F.log_softmax(a / t, 1))).sum(1).mean()
    assert losses.kd_loss(a, b, t).item() == pytest.approx(ref.item() * t * t, rel=1e-5)


def test_dkd_decomposes_kd():
    """Zhao et al.: KD = TCKD + (1 - p_t[gt]) * NCKD, per sample."""
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        s, t = torch.randn(1, 7, generator=g), torch.randn(1, 7, generator=g)
        y = torch.randint(0, 7, (1,), generator=g)
        tckd = losses.dkd_loss(s, t, y, alpha=1.0, beta=0.0)
        nckd = losses.dkd_loss(s, t, y, alpha=0.0, beta=1.0)
        rest = 1 - F.softmax(t / 4.0, 1)[0, y].item()
        assert (tckd + rest * nckd).item() == pytest.approx(losses.kd_loss(s, t).item(), rel=1e-4)


def test_sp_and_ickd_properties():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(6, 8, 4, 4, generator=g)
    assert losses.sp_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)
    # SP compares sample relations only: any width / resolution works, and scaling is irrelevant.
    wide = torch.randn(6, 32, 2, 2, generator=g)
    assert losses.sp_loss(f, wide).item() > 0
    assert losses.sp_loss(3.0 * f, wide).item() == pytest.approx(losses.sp_loss(f, wide).item())
    # Rows are unit vectors: the loss is bounded by 4 / N.
    assert losses.sp_loss(f, -wide).item() <= 4.0 / 6 + 1e-6
    assert losses.ickd_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.ickd_loss(f, torch.randn(6, 8, 2, 2, generator=g)).item() > 0
    with pytest.raises(ValueError, match="equal channel"):
        losses.ickd_loss(f, wide)


def test_at_loss_handles_resolution_and_class_activation_maps():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 8, 8, 8, generator=g), torch.randn(4, 16, 4, 4, generator=g)
    assert losses.at_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.at_loss(a, b).item() > 0
    w = torch.randn(5, 8, generator=g)
    cam = losses.class_activation_maps(a, w)
    assert cam.shape == (4, 5, 8, 8)
    # Global pooling commutes with the classifier: pooled CAM = logits without bias.
    assert torch.allclose(cam.mean((2, 3)), a.mean((2, 3)) @ w.t(), atol=1e-5)


# -- distillers -------------------------------------------------------------------------------------
def _outputs(c_s: int, c_t: int, k: int = 5, n: int = 4, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(n, c_s, 4, 4, generator=g, requires_grad=True)
    ft = torch.randn(n, c_t, 4, 4, generator=g)
    ws = torch.randn(k, c_s, generator=g, requires_grad=True)
    wt = torch.randn(k, c_t, generator=g)
    s = Features(fs.mean((2, 3)) @ ws.t(), fs, fs.mean((2, 3)))
    t = Features(ft.mean((2, 3)) @ wt.t(), ft, ft.mean((2, 3)))
    y = torch.arange(n) % k
    return StepOutputs(s, t, y, ws, wt, 1), fs, ws


def test_diswot_plus_uses_width_independent_semantic_form_when_widths_differ():
    out, fs, ws = _outputs(8, 16)
    d = build_distiller("diswot+", FeatureInfo(16, 4, 4, 5), FeatureInfo(8, 4, 4, 5))
    assert d.semantic_form == "cam" and not list(d.parameters())
    loss, parts = d(out)
    assert set(parts) == {"ce", "kd", "relation", "semantic"}
    expected = sum(d.w[k] * v for k, v in parts.items())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert fs.grad is not None and ws.grad is not None and torch.isfinite(ws.grad).all()
    same = build_distiller("diswot+", FeatureInfo(8, 4, 4, 5), FeatureInfo(8, 4, 4, 5))
    assert same.semantic_form == "channels"


def test_kd_and_diswot_share_the_loss_and_weights_are_checked():
    out, _, _ = _outputs(8, 8)
    info = FeatureInfo(8, 4, 4, 5)
    a, _ = build_distiller("kd", info, info)(out)
    b, _ = build_distiller("diswot", info, info)(out)
    assert a.item() == pytest.approx(b.item())
    c, _ = build_distiller("kd", info, info, {"T": 1.0, "kd": 0.0, "ce": 1.0})(out)
    assert c.item() == pytest.approx(F.cross_entropy(out.student.logits, out.target).item())
    with pytest.raises(DiswotError, match="no weight"):
        build_distiller("kd", info, info, {"hint": 1.0})
    with pytest.raises(DiswotError, match="unknown distillation method"):
        build_distiller("crd", info, info)
    with pytest.raises(DiswotError, match="classes"):
        build_distiller("kd", FeatureInfo(8, 4, 4, 6), info)


def test_learned_projections_are_parameters_and_dkd_warmup_scales_with_run():
    t, s = FeatureInfo(16, 4, 4, 5), FeatureInfo(8, 8, 8, 5)
    fit = build_distiller("fitnet", t, s)
    assert sum(p.numel() for p in fit.parameters()) > 0
    out, _, _ = _outputs(8, 16)
    assert torch.isfinite(fit(out)[0])
    assert sum(p.numel() for p in build_distiller("ickd", t, s).parameters()) == 16 * 8 + 16
    long = build_distiller("dkd", t, s, epochs=240)
    assert long.warmup_factor(10) == pytest.approx(0.5) and long.warmup_factor(30) == 1.0
    assert build_distiller("dkd", t, s, epochs=2).warmup_factor(1) == 1.0


# -- data -------------------------------------------------------------------------------------------
def test_synthetic_is_seeded_and_splits_share_prototypes():
    a = make_synthetic(50, 5, seed=3)
    b = make_synthetic(50, 5, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, make_synthetic(50, 5, seed=4).images)
    test = make_synthetic(50, 5, seed=3, split="test")
    assert not torch.equal(a.images, test.images)
    # Class means of train and test agree (same prototypes), and differ between classes.
    mt = torch.stack([a.images[a.labels == c].float().mean(0) for c in range(5)])
    ms = torch.stack([test.images[test.labels == c].float().mean(0) for c in range(5)])
    d = torch.cdist(mt.flatten(1), ms.flatten(1))
    assert torch.equal(d.argmin(1), torch.arange(5))
    assert sorted(torch.bincount(a.labels).tolist()) == [10] * 5


def test_augmentation_is_crop_and_flip_of_the_padded_image():
    data = make_synthetic(12, 3, image_size=16, seed=0)
    gen = torch.Generator().manual_seed(7)
    loader = BatchLoader(data, 12, "cpu", train=True, generator=gen, padding=2)
    state = gen.get_state()
    x, y = next(iter(loader))
    ref_gen = torch.Generator()
    ref_gen.set_state(state)
    order = torch.randperm(12, generator=ref_gen)
    oy = torch.randint(0, 5, (12,), generator=ref_gen)
    ox = torch.randint(0, 5, (12,), generator=ref_gen)
    flip = torch.rand((12,), generator=ref_gen) < 0.5
    mean = torch.tensor(data.mean).view(3, 1, 1) * 255
    std = torch.tensor(data.std).view(3, 1, 1) * 255
    for i in range(12):
        img = F.pad(data.images[order[i]], (2, 2, 2, 2))[:, oy[i] : oy[i] + 16, ox[i] : ox[i] + 16]
        if flip[i]:
            img = img.flip(-1)
        assert torch.allclose(x[i], (img.float() - mean) / std, atol=1e-5)
        assert y[i] == data.labels[order[i]]


def test_eval_loader_covers_every_image_once_and_normalises():
    data = make_synthetic(70, 4, seed=1)
    loader = BatchLoader(data, 32, "cpu", train=False)
    xs, ys = zip(*loader)
    assert [len(y) for y in ys] == [32, 32, 6]
    assert torch.equal(torch.cat(ys), data.labels)
    x = torch.cat(xs)
    assert x.mean((0, 2, 3)).abs().max() < 1e-3 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-2
    # Training drops a trailing single image (BatchNorm cannot normalise one sample).
    train = BatchLoader(make_synthetic(65, 4), 32, "cpu", train=True)
    assert len(train) == 2 and sum(len(y) for _, y in train) == 64


def _png(path, size, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_loads_and_rejects_wrong_layouts(tmp_path):
    root = tmp_path / "folder"
    for split, n in (("train", 3), ("val", 2)):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _png(root / split / c / f"{i}.png", (40 + 7 * i, 30), colour)
    (root / "train" / "cat" / "notes.txt").write_text("ignored")
    train, val = load_dataset(DataConfig("imagefolder", str(root), image_size=16))
    assert train.images.shape == (6, 3, 16, 16) and val.images.shape == (4, 3, 16, 16)
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.images[0, 0].float().mean() == 255 and train.images[0, 2].float().mean() == 0
    assert train.images[5, 2].float().mean() == 255

    with pytest.raises(DiswotError, match="no val/ subfolder"):
        os.rename(root / "val", root / "valid")
        load_dataset(DataConfig("imagefolder", str(root)))
    os.rename(root / "valid", root / "val")
    _png(root / "val" / "bird" / "0.png", (20, 20), (0, 0, 0))
    with pytest.raises(DiswotError, match="not present in train"):
        load_dataset(DataConfig("imagefolder", str(root)))
    flat = tmp_path / "flat"
    _png(flat / "train" / "0.png", (20, 20), (0, 0, 0))
    (flat / "val").mkdir()
    with pytest.raises(DiswotError, match="no class subfolders"):
        load_dataset(DataConfig("imagefolder", str(flat)))
    broken = tmp_path / "broken"
    (broken / "train" / "a").mkdir(parents=True)
    (broken / "train" / "a" / "x.jpg").write_bytes(b"not an image")
    (broken / "val" / "a").mkdir(parents=True)
    with pytest.raises(DiswotError, match="cannot read image"):
        load_dataset(DataConfig("imagefolder", str(broken)))
    with pytest.raises(DiswotError, match="unknown dataset"):
        load_dataset(DataConfig("mnist", str(root)))


# -- settings, checkpoints, student specs -----------------------------------------------------------
def test_milestones_scale_with_epochs():
    assert TrainSettings().resolved_milestones() == (150, 180, 210)
    assert TrainSettings(epochs=24).resolved_milestones() == (15, 18, 21)
    assert TrainSettings(epochs=24, milestones=(5,)).resolved_milestones() == (5,)
    with pytest.raises(DiswotError, match="milestones"):
        TrainSettings(epochs=10, milestones=(20,)).validated()
    with pytest.raises(DiswotError, match="amp"):
        TrainSettings(amp="fp8").validated()


def test_atomic_save_replaces_without_leftovers(tmp_path):
    path = tmp_path / "ck.pt"
    atomic_save({"format": "diswot-checkpoint/1", "v": 1}, path)
    atomic_save({"format": "diswot-checkpoint/1", "v": 2}, path)
    assert load_checkpoint(path)["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    torch.save({"v": 3}, tmp_path / "foreign.pt")
    with pytest.raises(DiswotError, match="not written by diswot"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_resolve_arch_reads_search_results(tmp_path):
    assert resolve_arch("713") == "713"
    good = tmp_path / "r.json"
    good.write_text(
        '{"winner": {"arch": "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"}}'
    )
    assert resolve_arch(str(good)).startswith("|nor_conv_3x3~0|")
    bad = tmp_path / "bad.json"
    bad.write_text('{"best": 1}')
    with pytest.raises(DiswotError, match="not a search result"):
        resolve_arch(str(bad))


def test_truncated_checkpoint_is_one_clean_line(tmp_path, capsys):
    from diswot.cli import main

    path = tmp_path / "last.pt"
    atomic_save(
        {"format": "diswot-checkpoint/1", "model": torch.nn.Linear(64, 64).state_dict()}, path
    )
    data = path.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])  # a copy cut off mid-transfer
    with pytest.raises(DiswotError) as info:
        load_checkpoint(trunc)
    msg = str(info.value)
    assert msg.startswith(f"cannot read checkpoint {trunc}: not a readable PyTorch checkpoint")
    assert msg.endswith("recreate it, or point at best.pt/last.pt of a finished run")
    assert "\n" not in msg and "If you are seeing this error" not in msg
    out = ["--out", str(tmp_path / "o"), "--dataset", "synthetic", "--quiet"]
    for argv in (["evaluate", "--ckpt", str(trunc)],
                 ["train", "--model", "resnet8", "--resume", str(trunc), *out],
                 ["distill", "--teacher-ckpt", str(trunc), "--student", "111", *out]):  # fmt: skip
        assert main([*argv, "--device", "cpu", "--threads", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.endswith("best.pt/last.pt of a finished run"), err
        assert re.match(
            rf"diswot: error: cannot read [a-z ]*checkpoint {trunc}: not a readable", err
        )


def test_unloadable_checkpoints_name_their_cause(tmp_path, monkeypatch):
    import sys
    import types

    gone = types.ModuleType("diswot_test_gone")

    class Net:  # an object pickled by reference to a module the reader lacks
        pass

    Net.__module__, Net.__qualname__ = gone.__name__, "Net"
    gone.Net = Net
    monkeypatch.setitem(sys.modules, gone.__name__, gone)
    path = tmp_path / "foreign.pt"
    torch.save({"net": Net()}, path)
    monkeypatch.delitem(sys.modules, gone.__name__)
    with pytest.raises(DiswotError, match="module not installed here .No module named 'diswot_te"):
        load_checkpoint(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(DiswotError, match=r"foreign.pt: permission denied; check its mode$"):
        load_checkpoint(path)
