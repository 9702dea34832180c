"""Shared fixtures.

``REFERENCE_DATA`` is the reference data folder (benchmark tables the shipped data is built from):
``shared/data`` beside the repository root, found from this file's location so any checkout finds
its own. A test that reads it carries ``@pytest.mark.reference_data(path, ...)`` and *fails*, naming
the missing path, when the data is absent: a silently skipped cross-check is a check nobody ran.

``fake_cifar`` writes tiny CIFAR-10 and CIFAR-100 folders in the real python-pickle layout (same
file names, same byte-string keys, (N, 3072) channel-major uint8 rows, list labels), so code that
reads CIFAR can be tested without the 160 MB downloads.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

#: ``<repository root>/../shared/data``; tests never name an absolute path.
REFERENCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Images per file in the fake folders; labels are ``i % classes`` so every class appears.
FAKE_CIFAR10_PER_BATCH = 20
FAKE_CIFAR10_TEST = 20
FAKE_CIFAR100_TRAIN = 200
FAKE_CIFAR100_TEST = 100


def fake_images(n: int, seed: int) -> np.ndarray:
    """Deterministic uint8 images, NHWC (n, 32, 32, 3); what the loader should give back."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _rows(images: np.ndarray) -> np.ndarray:
    # The CIFAR release stores each image as 1024 R, then 1024 G, then 1024 B values.
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072).copy()


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_fake_cifar(root: Path) -> Path:
    """Write ``root/cifar-10-batches-py`` and ``root/cifar-100-python``; return ``root``.

    CIFAR-10 train image ``i`` of batch ``b`` (1-based) is ``fake_images(20, seed=b)[i]``, test uses
    seed 0; CIFAR-100 train uses seed 100, test seed 101. Labels are ``i % classes``, counted over the
    whole split.
    """
    c10 = root / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    for b in range(1, 6):
        labels = [
            (i + (b - 1) * FAKE_CIFAR10_PER_BATCH) % 10 for i in range(FAKE_CIFAR10_PER_BATCH)
        ]
        _dump(
            c10 / f"data_batch_{b}",
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": labels,
                b"data": _rows(fake_images(FAKE_CIFAR10_PER_BATCH, seed=b)),
                b"filenames": [f"img_{b}_{i}.png".encode() for i in range(len(labels))],
            },
        )
    _dump(
        c10 / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [i % 10 for i in range(FAKE_CIFAR10_TEST)],
            b"data": _rows(fake_images(FAKE_CIFAR10_TEST, seed=0)),
            b"filenames": [f"test_{i}.png".encode() for i in range(FAKE_CIFAR10_TEST)],
        },
    )
    _dump(c10 / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})

    c100 = root / "cifar-100-python"
    c100.mkdir(parents=True)
    for split, n, seed in (("train", FAKE_CIFAR100_TRAIN, 100), ("test", FAKE_CIFAR100_TEST, 101)):
        _dump(
            c100 / split,
            {
                b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
                b"batch_label": f"{split} batch".encode(),
                b"fine_labels": [i % 100 for i in range(n)],
                b"coarse_labels": [(i % 100) // 5 for i in range(n)],
                b"data": _rows(fake_images(n, seed=seed)),
            },
        )
    _dump(c100 / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return root


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    """Root folder holding tiny ``cifar-10-batches-py/`` and ``cifar-100-python/`` (real format)."""
    return write_fake_cifar(tmp_path / "cifar")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``).

    Small batches of small nets only lose from intra-op threads on a shared 2-core machine; worker
    processes run one thread each, so single-threaded parents agree with them bit for bit; and the
    SIGKILL test's subprocess (OMP_NUM_THREADS=1) runs exactly like the in-process runs.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[object]:
    """A real local Ray runtime with 2 CPUs for a test module (skips when Ray is not installed)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'diswot[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def reference_data(*parts: str | Path) -> Path:
    """``REFERENCE_DATA / parts``, failing the calling test with the path when it is missing."""
    path = REFERENCE_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"reference data missing: {path} (tests read shared/data beside the repository "
            f"root, {REFERENCE_DATA}); put the reference data there to run this test",
            pytrace=False,
        )
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference_data(*paths): the test reads these paths (absolute, or relative to "
        "shared/data beside the repository root) and fails when one is missing",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    # In the call phase, not setup, so a missing file is reported as this test FAILED.
    for mark in item.iter_markers("reference_data"):
        for path in mark.args:
            reference_data(path)


def sigkill_after_lines(cmd: list[str], path: Path, lines: int, timeout: float = 120.0) -> int:
    """Run ``cmd`` (one thread) and SIGKILL it once ``path`` holds ``lines`` complete lines: the
    way a user's run dies mid-search. Returns the lines written when it died; fails the test if
    the run ended first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return path.read_bytes().count(b"\n")
