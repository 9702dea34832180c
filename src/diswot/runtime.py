"""Where torch runs, shared by every command: the ``--device`` check and the ``--threads`` cap.

One definition of both keeps ``score``/``rank``/``search`` and ``train``/``distill``/``evaluate``
accepting the same devices with the same one-line errors, and applying ``--threads`` the same way.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from diswot.errors import DiswotError

#: What ``--device`` accepts, as the error messages list it.
ACCEPTED_DEVICES = "auto, cpu, cuda, cuda:N"


def parse_device(device: str | torch.device) -> str:
    """Check the *name* of a device, not its availability: ``auto`` or a CPU/CUDA device string.

    For a device that is resolved elsewhere (a Ray worker may have the GPU its head lacks).
    """
    if str(device) == "auto":
        return "auto"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DiswotError(f"unknown device '{device}'; accepted: {ACCEPTED_DEVICES}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise DiswotError(f"device '{device}' is not supported; accepted: {ACCEPTED_DEVICES}")
    return str(dev)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unknown or unusable device is a one-line error."""
    if parse_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiswotError(
                f"--device {device} was asked but CUDA is not available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DiswotError(
                f"device '{device}' does not exist: {count} CUDA device(s) visible; "
                f"use cuda:0..cuda:{count - 1}"
            )
    return dev


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU in ``cpus`` from ``/proc/stat`` (Linux); empty elsewhere."""
    out: dict[int, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu, ticks = int(name[3:]), [int(f) for f in fields]
        except ValueError:
            continue
        if cpu in cpus and len(ticks) >= 5:
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[cpu] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cpus(window: float = 0.1) -> float:
    """How many of this process's CPUs other work kept busy over ``window`` seconds (0 if unknown).

    Sampled from ``/proc/stat`` before any of our own threads start, so the busy share is other
    processes'. Where the counters cannot be read (not Linux), 0: torch's default then applies.
    """
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    before = _cpu_times(cpus)
    if not before:
        return 0.0
    time.sleep(window)
    after = _cpu_times(cpus)
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command uses and why (printed, so a slow run explains itself)."""

    threads: int
    usable: int
    busy: float
    given: bool

    def text(self) -> str:
        if self.given:
            return f"threads {self.threads} (--threads)"
        return (
            f"threads {self.threads} (auto: {self.usable} CPUs usable, {self.busy:.1f} busy with "
            "other work; --threads N overrides)"
        )


def choose_threads(threads: int | None = None, *, workers: int = 1) -> ThreadChoice:
    """``threads`` when given, else one thread per CPU that other work leaves free, split over
    ``workers`` processes (at least 1 each).

    torch's default of one thread per core spins against any other busy process, and a run then
    collapses (measured by ``benchmarks/threads.py``, figures in docs/scale.md). Counting the CPUs
    other work keeps busy avoids that cliff; on an idle machine it gives torch's own default.
    """
    if threads is not None:
        if isinstance(threads, bool) or int(threads) < 1:
            raise DiswotError(f"--threads must be at least 1, got {threads}")
        return ThreadChoice(int(threads), usable_cpus(), 0.0, True)
    usable = usable_cpus()
    # One thread each is all there is to choose when the CPUs cannot cover the workers: no need
    # to spend the sampling window on start-up.
    busy = busy_cpus() if usable > max(1, workers) else 0.0
    free = max(1, usable - math.floor(busy + 0.5))
    per_worker = max(1, free // max(1, workers))
    return ThreadChoice(min(per_worker, torch.get_num_threads()), usable, busy, False)


@contextmanager
def torch_threads(threads: int | None | ThreadChoice) -> Iterator[None]:
    """Run the block at ``threads`` intra-op CPU threads (``None``: :func:`choose_threads`).

    The previous count is restored on exit, so the Python API leaves the process as it found it.
    """
    choice = threads if isinstance(threads, ThreadChoice) else choose_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def refuse_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a Path, refused in one line when it exists and is not a folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DiswotError(f"{flag} {out} is a file, not a folder; pass {flag} a folder path")
    return out


def run_folder(path: str | Path, flag: str = "--out") -> Path:
    """Create the run folder ``path`` (parents too) or raise a one-line error naming ``flag``.

    Every command that writes results makes its folder through this, so a path that is a file,
    sits under a file or is not writable is a user error naming the fix, not an ``OSError``.
    """
    out = refuse_file(path, flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DiswotError(
            f"cannot create the run folder {out} ({reason}); pass {flag} a writable folder"
        ) from exc
    return out
