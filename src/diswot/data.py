"""Probe batches: the one mini-batch every training-free score is computed on.

DisWOT (and every zero-cost proxy) scores a network from a single forward/backward pass on one
mini-batch. Which batch that is matters for reproducibility, so this module makes it explicit:

* :func:`synthetic_batch` - seeded N(0, 1) images with labels spread evenly over the classes. Needs no
  data on disk, and is bit-identical across devices because it is drawn on the CPU with a local
  :class:`torch.Generator` (never the global RNG) and only then moved.
* :func:`load_cifar` - CIFAR-10/100 from the standard *python pickle* release (no torchvision needed).
* :func:`probe_batch` - one entry point for all: ``source="synthetic"``, ``"cifar10"`` or ``"cifar100"``
  (a seeded random subset of the training split, normalised with :data:`CIFAR_STATS`), or
  ``"imagefolder"`` (a seeded class-balanced draw from ``DIR/<class>/<image>`` or
  ``DIR/train/<class>/<image>``, decoded by :mod:`diswot.imagefolder` at the network's resolution and
  normalised with ImageNet's statistics).

The CIFAR pickles are read with a restricted unpickler that only resolves the few numpy names those
files need, so a tampered download cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diswot import imagefolder
from diswot.errors import DiswotError, flag

#: Per-channel (mean, std) of the CIFAR training sets on the 0-1 scale, as used by NAS-Bench-201 and
#: the DisWOT code (std is the true per-pixel standard deviation, not the 0.2023-style values some
#: repositories copy).
CIFAR_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

#: Everything that differs between the two releases: folder, files per split, label key, classes.
_LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": b"labels",
        "classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "label_key": b"fine_labels",
        "classes": 100,
    },
}

#: Accepted probe sources (``--data``); every one but ``synthetic`` reads ``--data-root``.
SOURCES: tuple[str, ...] = ("synthetic", "cifar10", "cifar100", "imagefolder")

# (folder, dataset, split) -> (file signature, images, labels). The signature (size, mtime) makes a
# rewritten file reload instead of serving stale arrays.
_CACHE: dict[tuple[str, str, str], tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray]] = {}

# The only globals a CIFAR pickle needs: numpy array reconstruction (old and numpy-2 module paths)
# and ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for ``bytes`` objects.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the handful a CIFAR batch file references."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _dataset_name(name: str) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _LAYOUT:
        raise DiswotError(f"unknown CIFAR dataset '{name}'; accepted: cifar10, cifar100")
    return key


def _resolve_folder(root: str | Path, name: str) -> Path:
    """Accept either the parent folder or the extracted ``cifar-*-py*`` folder itself."""
    layout = _LAYOUT[name]
    root = Path(root).expanduser()
    nested = root / layout["folder"]
    if nested.is_dir():
        return nested
    if root.is_dir() and all((root / f).is_file() for f in layout["train"] + layout["test"]):
        return root
    raise DiswotError(
        f"{name} not found: expected folder {nested} (or {root} holding "
        f"{', '.join(layout['train'] + layout['test'])}); download {layout['archive']} from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root}"
    )


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickle batch file into (N, 3072) uint8 data and int64 labels, validating shapes."""
    if not path.is_file():
        raise DiswotError(
            f"CIFAR file missing: {path}; re-extract the CIFAR archive into its parent"
        )
    try:
        with path.open("rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle means the file is not a CIFAR batch
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DiswotError(f"cannot read CIFAR file {path} ({msg}); re-download it") from exc
    if not isinstance(obj, dict):
        raise DiswotError(f"corrupt CIFAR file {path}: expected a dict, got {type(obj).__name__}")
    # Accept str keys too, in case a user re-pickled the batches under Python 3.
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(label_key, obj.get(label_key.decode()))
    if data is None or labels is None:
        raise DiswotError(
            f"corrupt CIFAR file {path}: needs keys b'data' and {label_key!r}; re-download it"
        )
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DiswotError(
            f"corrupt CIFAR file {path}: data shape {data.shape} with {labels.shape[0]} labels, "
            "expected (N, 3072) and N labels; re-download it"
        )
    return data.astype(np.uint8, copy=False), labels


def load_cifar(
    root: str | Path, name: str = "cifar100", split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR split as ``(images, labels)``: uint8 NHWC ``(N, 32, 32, 3)`` and int64 ``(N,)``.

    ``root`` is the folder that holds ``cifar-10-batches-py/`` / ``cifar-100-python/``, or that folder
    itself. Arrays are cached per (folder, dataset, split) for the life of the process and returned
    **read-only** so a caller cannot corrupt the cache; copy them before modifying.
    """
    name = _dataset_name(name)
    split = str(split).lower()
    layout = _LAYOUT[name]
    if split not in ("train", "test"):
        raise DiswotError(f"unknown CIFAR split '{split}'; accepted: train, test")
    folder = _resolve_folder(root, name)
    files = [folder / f for f in layout[split]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DiswotError(
            f"CIFAR file missing: {missing[0]}; download {layout['archive']} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {folder.parent}"
        )
    signature = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(folder.resolve()), name, split)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1], hit[2]
    parts = [_read_batch(f, layout["label_key"]) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= layout["classes"]):
        raise DiswotError(
            f"corrupt {name} labels in {folder}: values must lie in 0..{layout['classes'] - 1}"
        )
    # Rows are channel-major (1024 R, 1024 G, 1024 B); NHWC is what image libraries expect.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    images.flags.writeable = False
    labels.flags.writeable = False
    _CACHE[key] = (signature, images, labels)
    return images, labels


def _move(t: Tensor, device: str | torch.device) -> Tensor:
    """Move to ``device``, turning an unusable device into a one-line user error."""
    try:
        return t.to(torch.device(device))
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        raise DiswotError(
            f"device '{device}' is not usable here ({str(exc).splitlines()[0]}); use cpu or cuda"
        ) from exc


def _normalise(
    images: np.ndarray, stats: tuple[tuple[float, float, float], tuple[float, float, float]]
) -> Tensor:
    """uint8 NHWC images -> float32 NCHW on the 0-1 scale, normalised per channel by ``stats``
    (mean, std)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)
    x = x.div_(255.0)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in stats)
    return ((x - mean) / std).contiguous()


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DiswotError(f"{flag(key)} must be a positive integer, got {value!r}")


def synthetic_batch(
    batch_size: int,
    num_classes: int,
    image_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    channels: int = 3,
) -> tuple[Tensor, Tensor]:
    """Seeded N(0, 1) images (float32 NCHW) and int64 labels covering the classes evenly.

    Label ``i`` is ``perm[i % num_classes]`` for a seeded permutation ``perm``, so every class appears
    ``batch_size // num_classes`` or one more times (and a batch smaller than the class count gets
    distinct labels). Everything is drawn on the CPU from a local generator, then moved: the same seed
    gives the same batch on every device and leaves the global RNG untouched.
    """
    _check_positive(
        batch_size=batch_size, num_classes=num_classes, image_size=image_size, channels=channels
    )
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    images = torch.randn(
        (batch_size, channels, image_size, image_size), generator=gen, dtype=torch.float32
    )
    perm = torch.randperm(num_classes, generator=gen)
    labels = perm[torch.arange(batch_size) % num_classes].to(torch.int64)
    return _move(images, device), _move(labels, device)


def check_root_is_read(source: str, data_root: str | Path | None) -> None:
    """Refuse ``--data-root`` with the synthetic probe, which would silently ignore it (the
    command-line check; the Python API tolerates a root it does not need)."""
    if data_root is not None and str(source).lower() == "synthetic":
        raise DiswotError(
            "--data-root is read only by a dataset probe; add --data cifar10 or --data cifar100 "
            "or --data imagefolder (or drop --data-root for the synthetic batch)"
        )


def check_probe_source(source: str, num_classes: int, data_root: str | Path | None = None) -> str:
    """The checks of :func:`probe_batch` that read no images: a known source, a positive class count
    that matches it and a ``data_root`` holding the dataset (for an image folder, as many class
    folders as classes). Returns the source's key."""
    key = str(source).lower().replace("-", "").replace("_", "")
    if key not in SOURCES:
        raise DiswotError(f"unknown probe source '{source}'; accepted: {', '.join(SOURCES)}")
    _check_positive(num_classes=num_classes)
    if key == "synthetic":
        return key
    if key == "imagefolder":
        if data_root is None:
            raise DiswotError(
                "probe source imagefolder needs --data-root: the folder holding <class>/<image> "
                "subfolders (or train/<class>/<image>)"
            )
        folder = imagefolder.probe_folder(data_root)
        imagefolder.check_class_count(
            folder, len(imagefolder.class_folders(folder)), int(num_classes)
        )
        return key
    classes = _LAYOUT[key]["classes"]
    if num_classes != classes:
        raise DiswotError(
            f"probe source {key} has {classes} classes but num_classes={num_classes}; "
            f"use num_classes={classes} or source=synthetic"
        )
    if data_root is None:
        raise DiswotError(
            f"probe source {key} needs --data-root: the folder holding {_LAYOUT[key]['folder']}/"
        )
    _resolve_folder(data_root, key)
    return key


def probe_batch(
    source: str = "synthetic",
    batch_size: int = 64,
    num_classes: int = 100,
    seed: int = 0,
    data_root: str | Path | None = None,
    image_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """The mini-batch a training-free score is computed on: ``(images NCHW float32, labels int64)``.

    ``source`` is ``synthetic`` (see :func:`synthetic_batch`) or ``cifar10`` / ``cifar100``: a seeded
    random subset (without replacement) of the training split in ``data_root``, scaled to 0-1 and
    normalised with :data:`CIFAR_STATS`; ``image_size`` other than 32 resizes bilinearly (antialiased
    when shrinking, e.g. 16 for ImageNet16-sized networks). ``imagefolder``: a seeded draw from the
    class folders of ``data_root`` with the classes spread evenly (see
    :func:`diswot.imagefolder.balanced_pick`), each image decoded at ``image_size`` and normalised
    with :data:`~diswot.imagefolder.IMAGENET_STATS`. ``num_classes`` must match the dataset,
    because a student built for another class count would silently score the wrong task.
    """
    key = check_probe_source(source, num_classes, data_root)
    _check_positive(batch_size=batch_size, image_size=image_size)
    if batch_size < 2:
        raise DiswotError(
            f"--batch-size must be at least 2, got {batch_size}: relation similarity needs at least "
            "2 samples"
        )
    if key == "synthetic":
        return synthetic_batch(batch_size, num_classes, image_size, seed, device)
    if key == "imagefolder":
        return _imagefolder_batch(data_root, batch_size, num_classes, seed, image_size, device)

    images, labels = load_cifar(data_root, key, "train")
    if batch_size > len(images):
        raise DiswotError(
            f"batch_size {batch_size} exceeds the {len(images)} images of the {key} train split"
        )
    idx = np.random.default_rng(int(seed)).choice(len(images), size=batch_size, replace=False)
    x = _normalise(images[idx], CIFAR_STATS[key])
    if image_size != 32:
        x = torch.nn.functional.interpolate(
            x,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=image_size < 32,
        )
    y = torch.from_numpy(labels[idx].copy())
    return _move(x, device), _move(y, device)


def _imagefolder_batch(
    root: str | Path | None,
    batch_size: int,
    num_classes: int,
    seed: int,
    image_size: int,
    device: str | torch.device,
) -> tuple[Tensor, Tensor]:
    """A class-balanced probe batch from an image folder, decoded and normalised on the CPU (so
    the batch is the same on every device) and only then moved."""
    assert root is not None  # check_probe_source refused a missing root
    _, files = imagefolder.probe_files(root, num_classes)
    picked = imagefolder.balanced_pick(files, batch_size, seed)
    images = imagefolder.load_images([p for p, _ in picked], image_size)
    x = _normalise(images, imagefolder.IMAGENET_STATS)
    y = torch.tensor([label for _, label in picked], dtype=torch.int64)
    return _move(x, device), _move(y, device)
