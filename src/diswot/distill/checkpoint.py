"""Checkpoints: atomic writes, self-describing contents, friendly loading of teacher weights.

A checkpoint is a ``torch.save``'d dict with ``format == FORMAT`` holding everything needed to rebuild
and continue a run without the command line that made it: the architecture name, class count, data
config, method, every training setting, the model / optimizer / scheduler / grad-scaler / distiller
states, all RNG states (including the data-order generator), the epoch just completed and the history.

Writes go to a temporary file in the same folder, are fsync'ed and then ``os.replace``'d over the
target, so a crash or kill at any moment leaves either the previous complete checkpoint or the new one,
never a torn file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diswot.errors import DiswotError

__all__ = ["FORMAT", "atomic_save", "load_checkpoint", "load_weights_into", "state_dict_from"]

#: Marker stored in every checkpoint this package writes.
FORMAT = "diswot-checkpoint/1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace`` (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _load_any(path: str | Path, what: str) -> Any:
    """``torch.load`` on the CPU with missing/unreadable files turned into one-line errors."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pt"))
        hint = f" (it holds {', '.join(found[:3])})" if found else ""
        raise DiswotError(
            f"{what} {path} is a folder{hint}; pass the path of a .pt checkpoint file in it"
        )
    if not path.is_file():
        raise DiswotError(f"{what} {path} does not exist; pass the path of a .pt checkpoint file")
    try:
        # weights_only=False: our checkpoints hold plain dicts of settings and numpy-free RNG
        # states, but third-party teacher files may hold arbitrary (trusted) objects.
        return torch.load(path, map_location="cpu", weights_only=False)
    except ImportError as exc:  # a pickled object of a package this environment lacks
        raise DiswotError(
            f"cannot read {what} {path}: it pickles objects of a module not installed here "
            f"({exc}); install it, or save the model's state_dict() instead"
        ) from exc
    except PermissionError as exc:
        raise DiswotError(f"cannot read {what} {path}: permission denied; check its mode") from exc
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        # Only the first sentence of torch's message, and only if short: some run on for lines.
        # An OSError here (e.g. [Errno 22] seeking past a cut-off end) would only mislead.
        first = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0].strip()
        short = first and len(first) <= 100 and not isinstance(exc, OSError)
        detail = f": {first}" if short else ""
        raise DiswotError(
            f"cannot read {what} {path}: not a readable PyTorch checkpoint (truncated or "
            f"corrupt{detail}); recreate it, or point at best.pt/last.pt of a finished run"
        ) from exc


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint written by this package, or raise a one-line :class:`DiswotError`."""
    obj = _load_any(path, what)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DiswotError(
            f"{what} {path} was not written by diswot train/distill (no '{FORMAT}' marker)"
        )
    return obj


def state_dict_from(obj: Any) -> dict[str, torch.Tensor]:
    """Find the model weights in a diswot checkpoint, a ``{"model"|"state_dict"|"net": sd}`` wrapper
    (as written by RepDistiller / DisWOT / timm scripts) or a bare state dict; strip ``module.`` and
    ``_orig_mod.`` prefixes left by DataParallel and ``torch.compile``."""
    sd = obj
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                sd = obj[key]
                break
    if (
        not isinstance(sd, Mapping)
        or not sd
        or not all(isinstance(v, torch.Tensor) for v in sd.values())
    ):
        raise DiswotError("checkpoint holds no model state dict (a mapping of names to tensors)")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape:
        bits = []
        if shape:
            bits.append(f"{len(shape)} shape mismatches (e.g. {shape[0]})")
        if missing:
            bits.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            bits.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise DiswotError(f"{what} does not match the architecture: {'; '.join(bits)}")
    model.load_state_dict(state, strict=True)
