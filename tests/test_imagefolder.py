"""Probe batches from an image folder (``--data imagefolder``), on real PNG and JPEG files.

The folder is written with Pillow: 3 classes x 4 images of different sizes, in both formats, one
grayscale and one RGBA image among them, so the decoder's mode conversion and resizing are exercised
on what a user's folder really holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diswot.cli import build_parser, main
from diswot.data import SOURCES, check_probe_source, probe_batch
from diswot.distill.datasets import load_imagefolder
from diswot.errors import DiswotError
from diswot.imagefolder import IMAGENET_STATS, balanced_pick, load_image, probe_files

CLASSES = ("ant", "bee", "cat")


def _write(path, size, mode="RGB", seed=0, fmt=None) -> None:
    """A random image of ``size`` (w, h) in ``mode``, saved by suffix (or ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(h, w, bands), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode).save(path, fmt)


def make_folder(root, classes=CLASSES, per_class=4):
    """``root/<class>/<i>.png|jpg``: sizes differ per image; image 0 of the first class is grayscale,
    image 1 of the second is RGBA (PNG keeps the alpha channel)."""
    for c_i, c in enumerate(classes):
        for i in range(per_class):
            mode = "L" if (c_i, i) == (0, 0) else "RGBA" if (c_i, i) == (1, 1) else "RGB"
            suffix = ".png" if i % 2 or mode == "RGBA" else ".JPEG"
            _write(root / c / f"{i}{suffix}", (20 + 5 * i, 24 + 3 * c_i), mode, seed=10 * c_i + i)
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def _expected(path, size):
    """What the probe should hold for ``path``: Pillow's decode, ImageNet-normalised, CHW."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in IMAGENET_STATS)
    x = torch.from_numpy(load_image(path, size)).permute(2, 0, 1).float() / 255.0
    return (x - mean) / std


def test_imagefolder_is_a_probe_source_of_every_probe_command():
    assert "imagefolder" in SOURCES
    parser = build_parser()
    for cmd in (["score", "--student", "111"], ["rank"], ["search"]):
        args = parser.parse_args([*cmd, "--data", "imagefolder", "--data-root", "d"])
        assert args.data == "imagefolder"


def test_batch_shape_labels_and_pixels(folder):
    x, y = probe_batch("imagefolder", 6, 3, seed=0, data_root=folder, image_size=16)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64 and np.bincount(y.numpy(), minlength=3).tolist() == [2, 2, 2]
    # Each image is the decode of a file of its label's class folder, in the batch's order.
    _, files = probe_files(folder, 3)
    picked = balanced_pick(files, 6, seed=0)
    assert [label for _, label in picked] == y.tolist()
    for (path, label), xi in zip(picked, x):
        assert path.parent.name == CLASSES[label]
        torch.testing.assert_close(xi, _expected(path, 16), rtol=0, atol=1e-6)


def test_batch_is_balanced_for_any_size(folder):
    for batch, counts in ((7, {2, 3}), (9, {3}), (12, {4})):
        _, y = probe_batch("imagefolder", batch, 3, seed=1, data_root=folder, image_size=8)
        assert set(np.bincount(y.numpy(), minlength=3).tolist()) == counts
    _, y = probe_batch("imagefolder", 2, 3, seed=1, data_root=folder, image_size=8)
    assert len(set(y.tolist())) == 2  # fewer slots than classes: distinct classes


def test_batch_is_seeded_and_deterministic(folder):
    a = probe_batch("imagefolder", 6, 3, seed=3, data_root=folder, image_size=16)
    b = probe_batch("imagefolder", 6, 3, seed=3, data_root=folder, image_size=16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [
        probe_batch("imagefolder", 6, 3, seed=s, data_root=folder, image_size=16) for s in (4, 5)
    ]
    assert any(not torch.equal(a[0], o[0]) for o in others)
    rng_state = torch.get_rng_state()
    probe_batch("imagefolder", 6, 3, seed=3, data_root=folder, image_size=16)
    assert torch.equal(rng_state, torch.get_rng_state())  # the global RNG is never drawn from


def test_resized_to_the_networks_resolution(folder):
    for size in (8, 32, 40):  # below and above every image's own size
        x, _ = probe_batch("imagefolder", 3, 3, seed=0, data_root=folder, image_size=size)
        assert x.shape == (3, 3, size, size)


def test_grayscale_and_rgba_images_become_rgb(folder):
    gray = load_image(folder / "ant" / "0.JPEG", 16)
    assert gray.shape == (16, 16, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert load_image(folder / "bee" / "1.png", 16).shape == (16, 16, 3)


def test_train_subfolder_layout_and_the_training_loader_agree(tmp_path):
    root = tmp_path / "imagenet"
    make_folder(root / "train")
    make_folder(root / "val", per_class=2)
    x, y = probe_batch("imagefolder", 6, 3, seed=0, data_root=root, image_size=12)
    assert x.shape == (6, 3, 12, 12)
    folder, files = probe_files(root, 3)
    assert folder == root / "train"  # the probe draws from the training split
    # Training reads the same files through the same decoder: identical pixels.
    train = load_imagefolder(root, "train", image_size=12)
    assert train.classes == list(CLASSES)
    flat = [p for c in CLASSES for p in files[c]]
    for i in (0, 5, 11):
        assert torch.equal(
            train.images[i], torch.from_numpy(load_image(flat[i], 12)).permute(2, 0, 1)
        )


def _error(**kw) -> str:
    args = {"source": "imagefolder", "batch_size": 6, "num_classes": 3, "image_size": 8, **kw}
    with pytest.raises(DiswotError) as info:
        probe_batch(**args)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_and_empty_folders_are_refused(tmp_path):
    assert "does not exist" in _error(data_root=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in _error(data_root=tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert "holds no class subfolders" in _error(data_root=tmp_path / "empty")
    for c in CLASSES:
        (tmp_path / "noimages" / c).mkdir(parents=True)
        (tmp_path / "noimages" / c / "notes.txt").write_text("not an image")
    assert "hold no images" in _error(data_root=tmp_path / "noimages")
    make_folder(tmp_path / "gap", classes=("ant", "bee"))
    (tmp_path / "gap" / "cat").mkdir()
    assert f"class folder {tmp_path / 'gap' / 'cat'} holds no images" in _error(
        data_root=tmp_path / "gap"
    )
    text = _error(data_root=None)
    assert "needs --data-root" in text


def test_corrupt_images_are_named(tmp_path):
    folder = make_folder(tmp_path / "one", per_class=1)  # a batch of 3 decodes every image
    bad = folder / "bee" / "0.JPEG"
    bad.write_bytes(b"this is not a JPEG")
    text = _error(data_root=folder, batch_size=3)
    assert f"cannot read image {bad}" in text and "remove or replace the file" in text
    good = (folder / "cat" / "0.JPEG").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated download
    assert f"cannot read image {bad}" in _error(data_root=folder, batch_size=3)


def test_class_count_must_match_the_teacher(folder):
    text = _error(data_root=folder, num_classes=100)
    assert f"{folder} has 3 class folders but the teacher has 100 classes" in text
    assert "pass --num-classes 3" in text
    with pytest.raises(DiswotError, match="has 3 class folders but the teacher has 10 classes"):
        check_probe_source("imagefolder", 10, folder)  # the up-front check, reading no image
    assert check_probe_source("imagefolder", 3, folder) == "imagefolder"


def test_a_batch_that_cannot_be_balanced_is_refused(folder):
    (folder / "ant" / "3.png").unlink()  # ant: 3 images
    text = _error(data_root=folder, batch_size=12)
    assert "cannot balance a batch of 12 over 3 classes" in text
    assert "'ant' has 3 image(s) but needs 4" in text and "--batch-size to 9" in text
    x, _ = probe_batch("imagefolder", 9, 3, data_root=folder, image_size=8)
    assert x.shape[0] == 9


def test_hidden_files_and_other_files_are_ignored(folder):
    (folder / "ant" / "._0.JPEG").write_bytes(b"macOS resource fork")
    (folder / ".cache").mkdir()
    (folder / "cat" / "labels.txt").write_text("cat")
    x, _ = probe_batch("imagefolder", 12, 3, data_root=folder, image_size=8)
    assert x.shape[0] == 12


def test_score_cli_end_to_end(folder, capsys):
    argv = ["score", "--data", "imagefolder", "--data-root", str(folder), "--num-classes", "3",
            "--teacher", "resnet20", "--student", "111", "--batch-size", "6", "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "imagefolder" and doc["num_classes"] == 3 and np.isfinite(doc["score"])
    again = ["score", "--data", "imagefolder", "--data-root", str(folder), "--num-classes", "100",
             "--teacher", "resnet20", "--student", "111", "--batch-size", "6"]  # fmt: skip
    assert main(again) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("diswot: error")]
    assert len(errors) == 1 and "pass --num-classes 3" in errors[0]


def test_search_and_rank_take_an_image_folder(tmp_path, capsys):
    """A custom space sized for the folder (the example's 10-class ``small``) searched on real
    images; rank refuses a folder whose class count is not its target's, before any scoring."""
    folder = make_folder(tmp_path / "ten", classes=[f"c{i}" for i in range(10)], per_class=1)
    space = f"{Path(__file__).resolve().parents[1] / 'examples' / 'my_space.py'}:small"
    argv = ["search", "--space", space, "--algorithm", "random", "--cycles", "2",
            "--batch-size", "10", "--data", "imagefolder", "--data-root", str(folder),
            "--out", str(tmp_path / "run"), "--no-progress", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["settings"]["data"] == "imagefolder" and result["settings"]["num_classes"] == 10
    capsys.readouterr()
    argv = ["rank", "--space", "s1", "--data", "imagefolder", "--data-root", str(folder),
            "--out", str(tmp_path / "rank"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has 10 class folders but the teacher has 100 classes" in err


def test_train_takes_data_imagefolder_like_the_probe_commands(tmp_path):
    """``--data imagefolder`` is the same option for train/distill as for score/rank/search."""
    import subprocess
    import sys

    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            d = tmp_path / "imgs" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (40 * i, 90 * c, 30)).save(d / f"{i}.png")
    out = subprocess.run(
        [sys.executable, "-m", "diswot", "train", "--model", "resnet8", "--data", "imagefolder",
         "--data-root", str(tmp_path / "imgs"), "--epochs", "1", "--out", str(tmp_path / "run"),
         "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "train resnet8 (ce) on imagefolder" in out.stdout
