"""Training data for ``diswot train`` / ``diswot distill``: whole datasets as uint8 tensors.

Why not ``torch.utils.data.DataLoader``? CIFAR is 150 MB as uint8, so it fits on any GPU. Keeping the
whole split as one ``(N, C, H, W)`` uint8 tensor on the training device and doing the standard
augmentation (random crop with zero padding, horizontal flip, normalisation) as a few batched tensor
ops removes worker processes, PIL round trips and host-to-device copies from the step, so data
loading stops being the bottleneck (``benchmarks/distill_throughput.py`` times the pipeline alone;
docs/distill.md has its numbers).

Determinism: every random choice (the epoch's order, crop offsets, flips) is drawn on the CPU from one
:class:`torch.Generator` owned by the caller. Checkpointing that generator's state is enough to
continue a run exactly, on any device.

Sources (:data:`DATASETS`):

* ``cifar10`` / ``cifar100`` - the standard python-pickle folders, via :func:`diswot.data.load_cifar`.
* ``imagefolder`` - ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*``, decoded once with Pillow,
  resized (shorter side) and centre-cropped to ``image_size`` and then kept in memory like CIFAR. This
  is for small ImageNet-style sets (ImageNet16-120, Tiny-ImageNet, a few-class subset): memory is
  ``N * 3 * image_size**2`` bytes.
* ``synthetic`` - seeded class prototypes plus noise, CIFAR-shaped: a learnable task for tests, demos and
  benchmarks that needs no download.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.errors import DiswotError, flag
from diswot.imagefolder import (
    IMAGE_EXTENSIONS,
    IMAGENET_STATS,
    class_folders,
    images_by_class,
    load_images,
)

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "IMAGENET_STATS",
    "BatchLoader",
    "DataConfig",
    "ImageData",
    "load_dataset",
    "load_imagefolder",
    "make_synthetic",
]

#: Accepted ``--dataset`` values.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagefolder", "synthetic")

#: Above this many bytes a split stays in (pinned) host memory and batches are copied over instead.
_DEVICE_RESIDENT_LIMIT = 4 * 1024**3


@dataclass(frozen=True)
class DataConfig:
    """Which data to train on; stored in checkpoints so ``evaluate`` and ``--resume`` can reload it.

    ``synthetic_seed`` is deliberately separate from the training seed: a teacher and its students
    trained with different seeds must still see the same synthetic task.
    """

    name: str = "cifar100"
    root: str | None = None
    image_size: int = 32
    synthetic_train: int = 5000
    synthetic_test: int = 1000
    synthetic_classes: int = 10
    synthetic_seed: int = 0
    synthetic_noise: float = 0.6

    def normalized(self) -> DataConfig:
        """Canonical form: lower-case name, absolute root, fields irrelevant to the source reset."""
        name = str(self.name).lower().replace("-", "").replace("_", "")
        if name not in DATASETS:
            raise DiswotError(f"unknown dataset '{self.name}'; accepted: {', '.join(DATASETS)}")
        if name == "synthetic":
            for key in ("synthetic_train", "synthetic_test", "synthetic_classes", "image_size"):
                least = 2 if key == "synthetic_classes" else 1
                if int(getattr(self, key)) < least:
                    raise DiswotError(
                        f"{flag(key)} must be at least {least}, got {getattr(self, key)}"
                    )
            if not 0.0 <= float(self.synthetic_noise) <= 10.0:
                raise DiswotError(
                    f"--synthetic-noise must lie in [0, 10], got {self.synthetic_noise}"
                )
            return DataConfig(
                name=name,
                root=None,
                image_size=int(self.image_size),
                synthetic_train=int(self.synthetic_train),
                synthetic_test=int(self.synthetic_test),
                synthetic_classes=int(self.synthetic_classes),
                synthetic_seed=int(self.synthetic_seed),
                synthetic_noise=float(self.synthetic_noise),
            )
        if self.root is None:
            raise DiswotError(f"dataset {name} needs --data-root (the folder holding the data)")
        root = str(Path(self.root).expanduser().resolve())
        size = 32 if name.startswith("cifar") else int(self.image_size)
        if size < 8:
            raise DiswotError(f"--image-size must be at least 8, got {size}")
        return DataConfig(name=name, root=root, image_size=size)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ImageData:
    """One split held in memory: uint8 ``(N, C, H, W)`` images, int64 labels and how to normalise."""

    images: Tensor
    labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DiswotError(
                f"{self.name}: images must be a uint8 (N, C, H, W) tensor, got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DiswotError(
                f"{self.name}: {len(self.labels)} labels for {len(self.images)} images"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


# -- synthetic ------------------------------------------------------------------------------------
def _prototypes(num_classes: int, size: int, gen: torch.Generator) -> Tensor:
    """Smooth random class templates in [0, 1]: a colour plus a low-frequency pattern.

    Low frequencies keep a class recognisable after a 4-pixel random crop, so the standard CIFAR
    augmentation does not destroy the signal; the per-class colour gives a linearly separable cue and
    the spatial pattern a convolutional one.
    """
    coarse = torch.rand((num_classes, 3, 4, 4), generator=gen)
    pattern = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    colour = torch.rand((num_classes, 3, 1, 1), generator=gen)
    return (0.5 * pattern + 0.5 * colour).clamp(0.0, 1.0)


def make_synthetic(
    num_images: int,
    num_classes: int = 10,
    image_size: int = 32,
    seed: int = 0,
    noise: float = 0.6,
    split: str = "train",
) -> ImageData:
    """A seeded, learnable, CIFAR-shaped task: image = prototype[label] + noise, stored as uint8.

    The prototypes depend only on ``seed`` (so train and test share them); the labels and the noise
    also depend on ``split``, so the test split is new samples of the same classes. ``noise`` is the
    standard deviation of the Gaussian pixel noise on the 0-1 scale; 0.6 makes single pixels useless
    while the class stays easy to learn from the whole image.
    """
    gen = torch.Generator().manual_seed(int(seed))
    protos = _prototypes(num_classes, image_size, gen)
    split_gen = torch.Generator().manual_seed(int(seed) * 1000003 + (1 if split == "train" else 2))
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=split_gen)]
    images = protos[labels] + noise * torch.randn(
        (num_images, 3, image_size, image_size), generator=split_gen
    )
    images = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    mean = tuple(float(v) for v in images.float().div(255).mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in images.float().div(255).std(dim=(0, 2, 3)).clamp_min(1e-3))
    return ImageData(
        images,
        labels.to(torch.int64),
        num_classes,
        mean,
        std,
        f"synthetic-{split}",
        [f"class{i}" for i in range(num_classes)],
    )


# -- image folders ---------------------------------------------------------------------------------
def load_imagefolder(
    root: str | Path, split: str = "train", image_size: int = 32, classes: list[str] | None = None
) -> ImageData:
    """Read ``root/<split>/<class>/<image>`` (split ``train`` or ``val``) into memory at ``image_size``.

    Class indices follow the sorted class-folder names of ``train/``; ``val/`` must use a subset of
    them (``classes`` passes the train list so both splits agree). Images are decoded on a thread pool.
    """
    root = Path(root).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        raise DiswotError(
            f"image folder {root} has no {split}/ subfolder; expected {root}/train/<class>/<image> "
            f"and {root}/val/<class>/<image>"
        )
    names = class_folders(split_dir)
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DiswotError(
            f"{split_dir} has class folders not present in train/: {', '.join(unknown[:5])}"
        )
    index = {c: i for i, c in enumerate(classes)}
    files = [(p, index[c]) for c, paths in images_by_class(split_dir, names).items() for p in paths]
    if not files:
        raise DiswotError(
            f"{split_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class subfolders"
        )
    arrays = load_images([p for p, _ in files], image_size)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([f[1] for f in files], dtype=torch.int64)
    mean, std = IMAGENET_STATS
    return ImageData(images, labels, len(classes), mean, std, f"imagefolder-{split}", list(classes))


# -- entry point ----------------------------------------------------------------------------------
def load_dataset(config: DataConfig) -> tuple[ImageData, ImageData]:
    """Return ``(train, test)`` splits for a :class:`DataConfig` (``val/`` is the test split of a folder)."""
    cfg = config.normalized()
    if cfg.name == "synthetic":
        train = make_synthetic(
            cfg.synthetic_train,
            cfg.synthetic_classes,
            cfg.image_size,
            cfg.synthetic_seed,
            cfg.synthetic_noise,
            "train",
        )
        test = make_synthetic(
            cfg.synthetic_test,
            cfg.synthetic_classes,
            cfg.image_size,
            cfg.synthetic_seed,
            cfg.synthetic_noise,
            "test",
        )
        # Normalise both splits with the training statistics, as for real data.
        test.mean, test.std = train.mean, train.std
        return train, test
    if cfg.name == "imagefolder":
        train = load_imagefolder(cfg.root, "train", cfg.image_size)
        test = load_imagefolder(cfg.root, "val", cfg.image_size, classes=train.classes)
        return train, test
    from diswot.data import CIFAR_STATS, load_cifar

    mean, std = CIFAR_STATS[cfg.name]
    k = 10 if cfg.name == "cifar10" else 100
    out = []
    for split in ("train", "test"):
        x, y = load_cifar(cfg.root, cfg.name, split)
        images = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
        out.append(
            ImageData(images, torch.from_numpy(np.array(y)), k, mean, std, f"{cfg.name}-{split}")
        )
    return out[0], out[1]


class BatchLoader:
    """Iterate over an :class:`ImageData` in (augmented, normalised) float batches on ``device``.

    Args:
        data: the split.
        batch_size: images per batch; a trailing batch of a single image is dropped in training,
            because BatchNorm cannot normalise one sample with 1x1 feature maps.
        device: where batches (and, when it fits, the whole uint8 split) live.
        train: shuffle and augment (random crop with ``padding`` zero pixels, horizontal flip).
        generator: CPU generator for order, crops and flips; its state is the loader's whole state.
        padding: crop padding; ``None`` means ``image_size // 8`` (4 for 32-pixel images, as in CIFAR).
        channels_last: return batches in channels-last memory format (faster convolutions on CUDA).
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool = False,
        generator: torch.Generator | None = None,
        padding: int | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise DiswotError(f"batch size must be a positive integer, got {batch_size}")
        self.data = data
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.train = train
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        h = data.images.shape[-1]
        self.padding = h // 8 if padding is None else int(padding)
        self.channels_last = channels_last
        nbytes = data.images.numel()
        if self.device.type == "cpu" or nbytes <= _DEVICE_RESIDENT_LIMIT:
            self._images = data.images.to(self.device)
            self._labels = data.labels.to(self.device)
        else:  # too big for the device: stream batches (pinned per batch) from host memory
            self._images = data.images
            self._labels = data.labels
        c = data.images.shape[1]
        self._mean = torch.tensor(data.mean, device=self.device).view(1, c, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(data.std, device=self.device).view(1, c, 1, 1) * 255.0)

    def __len__(self) -> int:
        n = len(self.data)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and not self.train) else 0)

    def _augment(self, x: Tensor, oy: Tensor, ox: Tensor, flip: Tensor) -> Tensor:
        """Random crop (zero padding) and horizontal flip as one batched gather on uint8 data.

        ``oy``/``ox`` are the crop offsets into the padded image and ``flip`` the mirror flags, one per
        image, already on ``x``'s device.
        """
        n, c, h, w = x.shape
        p = self.padding
        if p > 0:
            x = F.pad(x, (p, p, p, p))
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        rows = oy[:, None] + ar_h[None, :]  # (n, h)
        cols = torch.where(flip[:, None], ar_w.flip(0)[None, :], ar_w[None, :]) + ox[:, None]
        bi = torch.arange(n, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        return x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch. All of the epoch's random draws (order, offsets, flips) are made up front on the
        CPU generator and moved to the device once, so no step waits on a host-to-device copy."""
        n = len(self.data)
        p = self.padding
        if self.train:
            g = self.generator
            order = torch.randperm(n, generator=g)
            oy = torch.randint(0, 2 * p + 1, (n,), generator=g).to(self.device)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=g).to(self.device)
            flip = (torch.rand((n,), generator=g) < 0.5).to(self.device)
        else:
            order = torch.arange(n)
        on_device = self._images.device == self.device
        if on_device:
            order = order.to(self.device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl]
            if on_device:
                x, y = self._images[idx], self._labels[idx]
            else:
                x = self._images[idx].pin_memory().to(self.device, non_blocking=True)
                y = self._labels[idx].pin_memory().to(self.device, non_blocking=True)
            if self.train:
                x = self._augment(x, oy[sl], ox[sl], flip[sl])
            x = (x.float() - self._mean) * self._inv_std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    @property
    def steps_per_epoch(self) -> int:
        return len(self)

    def images_per_epoch(self) -> int:
        """Images one epoch yields (a dropped trailing single image in training is not counted)."""
        n = len(self.data)
        return n - 1 if self.train and n % self.batch_size == 1 else n
