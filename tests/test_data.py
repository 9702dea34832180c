from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import FAKE_CIFAR10_PER_BATCH, FAKE_CIFAR100_TRAIN, fake_images

from diswot.data import (
    CIFAR_STATS,
    SOURCES,
    check_root_is_read,
    load_cifar,
    probe_batch,
    synthetic_batch,
)
from diswot.errors import DiswotError


def test_cifar_stats_are_standard_values():
    assert set(CIFAR_STATS) == {"cifar10", "cifar100"}
    mean, std = CIFAR_STATS["cifar100"]
    assert mean == pytest.approx((0.5071, 0.4865, 0.4409), abs=1e-3)
    assert std == pytest.approx((0.2673, 0.2564, 0.2762), abs=1e-3)
    mean, std = CIFAR_STATS["cifar10"]
    assert mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-3)


def test_load_cifar10_round_trip(fake_cifar):
    images, labels = load_cifar(fake_cifar, "cifar10", "train")
    assert images.shape == (5 * FAKE_CIFAR10_PER_BATCH, 32, 32, 3)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    expected = np.concatenate([fake_images(FAKE_CIFAR10_PER_BATCH, seed=b) for b in range(1, 6)])
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, np.arange(len(labels)) % 10)
    test_images, test_labels = load_cifar(fake_cifar, "CIFAR10", "test")
    np.testing.assert_array_equal(test_images, fake_images(20, seed=0))
    assert test_labels.shape == (20,)


def test_load_cifar100_round_trip_and_folder_forms(fake_cifar):
    images, labels = load_cifar(fake_cifar, "cifar100", "train")
    np.testing.assert_array_equal(images, fake_images(FAKE_CIFAR100_TRAIN, seed=100))
    np.testing.assert_array_equal(labels, np.arange(FAKE_CIFAR100_TRAIN) % 100)
    # The extracted folder itself is accepted too, and gives the same data.
    inner, inner_labels = load_cifar(fake_cifar / "cifar-100-python", "cifar100", "train")
    np.testing.assert_array_equal(inner, images)
    np.testing.assert_array_equal(inner_labels, labels)


def test_load_cifar_caches_read_only_arrays(fake_cifar):
    a, _ = load_cifar(fake_cifar, "cifar100", "test")
    b, _ = load_cifar(str(fake_cifar), "cifar100", "test")
    assert a is b
    with pytest.raises(ValueError):
        a[0, 0, 0, 0] = 1


def test_load_cifar_missing_names_path_and_download(tmp_path):
    with pytest.raises(DiswotError) as err:
        load_cifar(tmp_path, "cifar100")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "cifar-100-python") in msg
    assert "cifar-100-python.tar.gz" in msg and str(tmp_path) in msg


def test_load_cifar_missing_single_file(fake_cifar):
    (fake_cifar / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DiswotError, match="data_batch_3"):
        load_cifar(fake_cifar, "cifar10", "train")


def test_load_cifar_corrupt_files(fake_cifar):
    folder = fake_cifar / "cifar-100-python"
    (folder / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(DiswotError, match="cannot read CIFAR file"):
        load_cifar(fake_cifar, "cifar100", "test")
    with (folder / "test").open("wb") as fh:
        pickle.dump({b"data": np.zeros((3, 10), np.uint8), b"fine_labels": [0, 1, 2]}, fh)
    with pytest.raises(DiswotError, match="corrupt"):
        load_cifar(fake_cifar, "cifar100", "test")


def test_load_cifar_refuses_code_in_pickle(fake_cifar):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with (fake_cifar / "cifar-100-python" / "test").open("wb") as fh:
        pickle.dump({b"data": Evil(), b"fine_labels": []}, fh)
    with pytest.raises(DiswotError, match="refusing"):
        load_cifar(fake_cifar, "cifar100", "test")


def test_load_cifar_bad_arguments(fake_cifar):
    with pytest.raises(DiswotError, match="accepted: cifar10, cifar100"):
        load_cifar(fake_cifar, "mnist")
    with pytest.raises(DiswotError, match="accepted: train, test"):
        load_cifar(fake_cifar, "cifar10", "val")


def test_synthetic_batch_shapes_labels_and_determinism():
    x, y = synthetic_batch(10, 4, image_size=8, seed=3)
    assert x.shape == (10, 3, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    counts = torch.bincount(y, minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]  # as even as 10 over 4 allows
    x2, y2 = synthetic_batch(10, 4, image_size=8, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = synthetic_batch(10, 4, image_size=8, seed=4)
    assert not torch.equal(x, x3)
    # Distinct labels when the batch is smaller than the class count.
    _, y4 = synthetic_batch(5, 100, seed=0)
    assert len(set(y4.tolist())) == 5
    xg, _ = synthetic_batch(2, 2, image_size=4, channels=1)
    assert xg.shape == (2, 1, 4, 4)


def test_synthetic_batch_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    synthetic_batch(4, 2)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synthetic_batch_same_on_cuda():
    x, y = synthetic_batch(8, 10, seed=1)
    xc, yc = synthetic_batch(8, 10, seed=1, device="cuda")
    assert xc.is_cuda and torch.equal(xc.cpu(), x) and torch.equal(yc.cpu(), y)


def test_probe_batch_synthetic_matches_synthetic_batch():
    x, y = probe_batch("synthetic", batch_size=6, num_classes=10, seed=2, image_size=16)
    x2, y2 = synthetic_batch(6, 10, image_size=16, seed=2)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_probe_batch_cifar_normalised_subset(fake_cifar):
    x, y = probe_batch("cifar100", batch_size=16, num_classes=100, seed=5, data_root=fake_cifar)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    images, labels = load_cifar(fake_cifar, "cifar100")
    idx = np.random.default_rng(5).choice(len(images), 16, replace=False)
    mean, std = (np.array(v).reshape(1, 3, 1, 1) for v in CIFAR_STATS["cifar100"])
    expected = (images[idx].transpose(0, 3, 1, 2) / 255.0 - mean) / std
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), labels[idx])
    assert len(set(idx.tolist())) == 16  # without replacement
    x2, y2 = probe_batch("cifar100", batch_size=16, num_classes=100, seed=5, data_root=fake_cifar)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = probe_batch("cifar100", batch_size=16, num_classes=100, seed=6, data_root=fake_cifar)
    assert not torch.equal(x, x3)


def test_probe_batch_cifar_bits_are_torch_normalisation(fake_cifar):
    """The CIFAR probe is scaled and normalised in float32 by torch, in this order, bit for bit
    (scores are reproducible to the last digit only if the batch is)."""
    x, _ = probe_batch("cifar10", batch_size=8, num_classes=10, seed=3, data_root=fake_cifar)
    images, _ = load_cifar(fake_cifar, "cifar10")
    idx = np.random.default_rng(3).choice(len(images), 8, replace=False)
    ref = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in CIFAR_STATS["cifar10"])
    assert torch.equal(x, (ref - mean) / std)


def test_data_root_without_a_dataset_probe_names_every_source():
    with pytest.raises(DiswotError) as info:
        check_root_is_read("synthetic", "/data")
    assert "--data cifar10 or --data cifar100 or --data imagefolder" in str(info.value)
    check_root_is_read("imagefolder", "/data")
    assert SOURCES == ("synthetic", "cifar10", "cifar100", "imagefolder")


def test_probe_batch_cifar10_resized(fake_cifar):
    x, y = probe_batch("cifar10", 4, num_classes=10, data_root=fake_cifar, image_size=16)
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()
    assert y.max() < 10


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 1}, "at least 2 samples"),
        ({"source": "imagenet"}, "accepted: synthetic, cifar10, cifar100, imagefolder"),
        ({"source": "cifar10", "num_classes": 100}, "has 10 classes"),
        ({"source": "cifar100"}, "needs --data-root"),
        ({"num_classes": 0}, "--num-classes must be a positive integer"),
        ({"device": "nosuchdevice"}, "device 'nosuchdevice'"),
    ],
)
def test_probe_batch_errors(kwargs, pattern):
    with pytest.raises(DiswotError, match=pattern):
        probe_batch(**kwargs)


def test_probe_batch_too_large_for_split(fake_cifar):
    with pytest.raises(DiswotError, match="exceeds"):
        probe_batch("cifar100", batch_size=FAKE_CIFAR100_TRAIN + 1, data_root=fake_cifar)
