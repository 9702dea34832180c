"""What a local worker process needs before it can score: a start method that works, its own GPU
where there are several, and a warning when processes would share one GPU."""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

import torch

from diswot.errors import DiswotError


def assign_gpu(counter: Any) -> int | None:
    """Give this worker process its own GPU when the machine has several: worker ``i`` (in start
    order, from a shared counter) uses GPU ``i mod n``. Returns the GPU index, or None when
    nothing was set (no counter, or fewer than two GPUs)."""
    if counter is None:
        return None
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    n = torch.cuda.device_count()
    if n < 2:
        return None
    torch.cuda.set_device(index % n)
    return index % n


def _gpu_counter(ctx: Any, device: str) -> Any:
    """A process-shared counter for :func:`assign_gpu`, only for an unindexed ``cuda`` device."""
    return ctx.Value("i", 0) if str(device) == "cuda" else None


def check_spawnable() -> None:
    """Spawned workers re-import the main script; one read from stdin cannot be (they would die at
    start-up, and on some Pythons the pool then hangs): say so before starting any."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file):
        raise DiswotError(
            f"worker processes re-import the main script, and {main_file} is not a file; save the "
            "script to a file (with an `if __name__ == '__main__':` guard) or use --workers 1"
        )


def check_picklable(factory: Any) -> None:
    """Worker processes receive the factory pickled: refuse one that cannot be, in one line, before
    any process starts (a lambda or a local class would otherwise fail inside every worker)."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise DiswotError(
            f"the objective or teacher cannot be sent to worker processes "
            f"({type(exc).__name__}); use a module-level function or class, or --workers 1"
        ) from None


def warn_shared_gpu(device: str, workers: int) -> None:
    """More local workers than GPUs: say once that processes sharing a GPU measured slower."""
    if workers < 2 or not str(device).startswith("cuda"):
        return
    gpus = 1 if str(device) != "cuda" else max(torch.cuda.device_count(), 1)
    if workers > gpus:
        print(
            f"diswot: note: {workers} worker processes share {gpus} GPU(s); on an H200, processes "
            "sharing one GPU measured slower than one process (kernels of different processes "
            "are time-sliced, docs/scale.md); prefer one worker per GPU, CUDA MPS, or --backend "
            "ray with --gpus-per-task 1",
            file=sys.stderr,
        )
