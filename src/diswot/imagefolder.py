"""Image folders (``DIR/<class>/<image>``): the one place that scans class folders and decodes images.

Two readers share it, so both agree on what a class, an image and a decoded image are:

* the probe batch (:func:`diswot.data.probe_batch` with ``source="imagefolder"``): a seeded, balanced
  handful of images, the only ones decoded, so a 1.28 M-image ImageNet folder costs a directory scan;
* training data (:func:`diswot.distill.datasets.load_imagefolder`): a whole split held in memory.

Classes are the sorted names of the non-hidden subfolders, so class index ``i`` means the same class
to every command and on every machine. An image is any non-hidden file below a class folder whose
suffix is in :data:`IMAGE_EXTENSIONS` (other files, e.g. a ``labels.txt``, are ignored). Decoding is
Pillow's (a hard dependency; torchvision stays optional): any mode is converted to RGB, the shorter
side resized to the target size and the centre cropped square, the evaluation transform of ImageNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from diswot.errors import DiswotError

__all__ = [
    "IMAGENET_STATS",
    "IMAGE_EXTENSIONS",
    "balanced_pick",
    "check_class_count",
    "class_folders",
    "images_by_class",
    "load_image",
    "load_images",
    "probe_files",
    "probe_folder",
]

#: File suffixes an image folder may hold (lower case); other files are ignored.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".ppm",
    ".webp",
    ".tif",
    ".tiff",
)

#: Normalisation for image folders: ImageNet's statistics, which is what ImageNet-style data expects.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# folder -> (signature, images per class). A probe asks once per seed; ImageNet's train split is
# 1.28 M files, so the listing is kept. The signature (the class folders' mtimes, which change when
# a file is added to or removed from them) makes an edited folder scan anew.
_SCANS: dict[str, tuple[tuple[int, ...], dict[str, list[Path]]]] = {}


def _visible(path: Path) -> bool:
    # macOS leaves "._x.jpg" resource forks and ".DS_Store" beside images: never images themselves.
    return not path.name.startswith(".")


def probe_folder(root: str | Path) -> Path:
    """The folder whose subfolders are the classes: ``root/train`` when it exists (the ImageNet
    release's layout, ``train/`` beside ``val/``), else ``root`` itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DiswotError(
            f"image folder {root} {what}; pass --data-root the folder holding <class>/<image> "
            "subfolders (or train/<class>/<image>)"
        )
    train = root / "train"
    return train if train.is_dir() else root


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the class subfolders of ``folder``; an error when it has none."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not names:
        raise DiswotError(
            f"{folder} holds no class subfolders; expected {folder}/<class>/<image files>"
        )
    return names


def images_by_class(folder: Path, classes: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted, searched recursively), for ``classes`` (default: all
    class folders of ``folder``). Only names are read here, no image."""
    names = list(classes) if classes is not None else class_folders(folder)
    key = str(folder.resolve())
    signature = tuple(
        [(folder / c).stat().st_mtime_ns for c in names] + [folder.stat().st_mtime_ns]
    )
    hit = _SCANS.get(key)
    if hit is not None and hit[0] == signature and all(c in hit[1] for c in names):
        return {c: hit[1][c] for c in names}
    found = {
        c: sorted(
            p
            for p in (folder / c).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and _visible(p) and p.is_file()
        )
        for c in names
    }
    _SCANS[key] = (signature, found)
    return found


def check_class_count(folder: Path, found: int, num_classes: int) -> None:
    """Refuse a folder whose class count differs from the networks' classifier: its labels would
    index the wrong classes (or none)."""
    if found != num_classes:
        raise DiswotError(
            f"{folder} has {found} class folders but the teacher has {num_classes} classes; pass "
            f"--num-classes {found} (score) or a --target with {found} classes (search, rank), "
            f"or a --data-root with {num_classes} class folders"
        )


def probe_files(root: str | Path, num_classes: int) -> tuple[Path, dict[str, list[Path]]]:
    """The class folder of ``root`` (see :func:`probe_folder`) and its images per class, checked:
    ``num_classes`` class folders, each holding at least one image."""
    folder = probe_folder(root)
    names = class_folders(folder)
    check_class_count(folder, len(names), num_classes)
    files = images_by_class(folder, names)
    if not any(files.values()):
        raise DiswotError(
            f"the class folders of {folder} hold no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    empty = [c for c in names if not files[c]]
    if empty:
        raise DiswotError(
            f"class folder {folder / empty[0]} holds no images"
            + (f" (nor do {len(empty) - 1} others)" if len(empty) > 1 else "")
            + "; add images or remove the folder"
        )
    return folder, files


def balanced_pick(
    files: dict[str, list[Path]], batch_size: int, seed: int
) -> list[tuple[Path, int]]:
    """``batch_size`` (image, label) pairs spreading the classes evenly, drawn from ``seed`` alone.

    Slot ``i`` gets class ``perm[i % k]`` for a seeded permutation of the ``k`` classes (as the
    synthetic batch does), so every class appears ``batch_size // k`` or one more times, and a batch
    smaller than ``k`` has distinct classes; each class's images are a seeded draw without
    replacement. Labels are the classes' indices in sorted order.
    """
    names = list(files)
    k = len(names)
    rng = np.random.default_rng(int(seed))
    perm = rng.permutation(k)
    slots = [int(perm[i % k]) for i in range(batch_size)]
    need = np.bincount(slots, minlength=k)
    for label in range(k):
        have = len(files[names[label]])
        if need[label] > have:
            fits = k * min(len(v) for v in files.values())
            raise DiswotError(
                f"cannot balance a batch of {batch_size} over {k} classes: class "
                f"{names[label]!r} has {have} image(s) but needs {need[label]}; lower --batch-size "
                f"to {fits} or less, or add images"
            )
    picks = [
        [files[names[label]][j] for j in rng.choice(len(files[names[label]]), n, replace=False)]
        for label, n in enumerate(need)
    ]
    taken = [0] * k
    out = []
    for label in slots:
        out.append((picks[label][taken[label]], label))
        taken[label] += 1
    return out


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode ``path`` to RGB, resize the shorter side to ``size`` and centre-crop to ``size`` x
    ``size``: a ``(size, size, 3)`` uint8 array; any failure names the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "P":  # a palette may carry transparency, which RGB cannot
                im = im.convert("RGBA")
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.array(im, dtype=np.uint8)  # writable: callers may hand it to torch
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises, the file is unreadable
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DiswotError(
            f"cannot read image {path} ({type(exc).__name__}: {first}); remove or replace the file"
        ) from exc


def load_images(paths: Sequence[Path], size: int) -> np.ndarray:
    """Decode ``paths`` (on a thread pool: Pillow releases the GIL) into uint8 ``(N, size, size, 3)``."""
    if not paths:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        return np.stack(list(pool.map(lambda p: load_image(p, size), paths)))
