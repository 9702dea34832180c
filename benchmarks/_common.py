"""What the NB201 speed benchmarks share (imported by the scripts beside it): the scoring set-up
they all time, the record of where they ran, and small measuring helpers."""

from __future__ import annotations

import json
import os
import platform
import statistics

import torch

from diswot.scoring import Scorer
from diswot.spaces import get_space

#: The set-up every NB201 speed figure uses: a ResNet-56 teacher at CIFAR-100's class count.
TEACHER = "resnet56"
TARGET = "cifar100"


def nb201_scorer(device: str, batch_size: int, **kwargs: object) -> Scorer:
    """The NB201 :class:`Scorer` of the figures (``kwargs``: seeds, init, channels_last...).

    The ``modules`` engine unless ``engine`` is given: the per-candidate figures of build, recycling,
    precision and stacking are about built networks (``engine.py`` compares the engines)."""
    kwargs.setdefault("engine", "modules")
    space = get_space("nb201")
    spec = space.dataset(TARGET)
    return Scorer.for_space(
        space,
        TEACHER,
        num_classes=spec.num_classes,
        batch_size=batch_size,
        image_size=spec.image_size,
        device=device,
        **kwargs,
    )


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a timer stops when the work is done (no-op on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def ms_stats(seconds: list[float]) -> dict:
    """Median and 90th percentile of per-candidate seconds, in milliseconds."""
    xs = sorted(seconds)
    return {
        "median_ms": round(1000 * statistics.median(xs), 2),
        "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 2),
    }


def emit(report: dict, out: str | None) -> None:
    """Print the report as one JSON line, and write it to ``out`` too when given."""
    text = json.dumps(report)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")
    print(text)


def rel_diff(a: float, b: float) -> float:
    """Relative difference of ``a`` from ``b``."""
    return abs(a - b) / max(abs(b), 1e-30)


def machine(device: str = "cpu") -> dict:
    """The device, cores, intra-op threads, load and versions behind a measurement."""
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
