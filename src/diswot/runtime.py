"""Where torch runs, shared by every command: the ``--device`` check and the ``--threads`` cap.

One definition of both keeps ``score``/``rank``/``search`` and ``train``/``distill``/``evaluate``
accepting the same devices with the same one-line errors, and applying ``--threads`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Cap torch's intra-op CPU threads at ``threads`` inside the block (``None``: torch's default).

    The previous count is restored on exit, so the Python API leaves the process as it found it.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise DiswotError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
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
