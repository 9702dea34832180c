"""Checkpoints: atomic writes, self-describing contents, resume checks, loading teacher weights.

A checkpoint is a ``torch.save``'d dict with ``format == FORMAT`` holding everything needed to rebuild
and continue a run without the command line that made it: the architecture name, class count, data
config, method, every training setting, the model / optimizer / scheduler / grad-scaler / distiller
states, all RNG states (including the data-order generator), the epoch just completed and the history.

Writes go through :func:`diswot.runfolder.atomic_write_bytes` (a temporary file, fsync, then
``os.replace``), so a crash or kill at any moment leaves either the previous complete checkpoint or
the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diswot.distill.students import build_model, resolve_arch
from diswot.errors import DiswotError
from diswot.runfolder import atomic_write_bytes

__all__ = [
    "FORMAT",
    "atomic_save",
    "check_same_run",
    "file_sha256",
    "load_checkpoint",
    "load_teacher",
    "load_torch_file",
    "load_weights_into",
    "rng_state",
    "set_rng_state",
    "state_dict_from",
]

#: Marker stored in every checkpoint this package writes.
FORMAT = "diswot-checkpoint/1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`diswot.runfolder.atomic_write_bytes`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_torch_file(path: str | Path, what: str) -> Any:
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
    obj = load_torch_file(path, what)
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


# -- teachers ---------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """A teacher file's digest: a resumed distillation, search or rank must use the very same
    weights."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_teacher(
    arch: str | None, ckpt: str | Path | None, num_classes: int
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the teacher and load its weights; the arch may come from a diswot checkpoint."""
    info: dict[str, Any] = {"arch": arch, "ckpt": None, "sha256": None}
    state = None
    if ckpt is not None:
        path = Path(ckpt).expanduser().resolve()
        obj = load_torch_file(path, "teacher checkpoint")
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            if arch is not None and resolve_arch(arch) != obj["arch"]:
                raise DiswotError(
                    f"teacher checkpoint {path} holds a {obj['arch']}, not a {arch}; "
                    f"pass --teacher {obj['arch']} or the matching checkpoint"
                )
            arch = obj["arch"]
            if int(obj["num_classes"]) != num_classes:
                raise DiswotError(
                    f"teacher checkpoint {path} predicts {obj['num_classes']} classes but the "
                    f"dataset has {num_classes}; use a teacher trained on this dataset"
                )
        try:
            state = state_dict_from(obj)
        except DiswotError as exc:
            raise DiswotError(f"teacher checkpoint {path}: {exc}") from exc
        info.update(ckpt=str(path), sha256=file_sha256(path))
    if arch is None:
        raise DiswotError("name the teacher architecture (--teacher) or pass a diswot checkpoint")
    arch = resolve_arch(arch)
    info["arch"] = arch
    teacher = build_model(arch, num_classes)
    if state is not None:
        load_weights_into(
            teacher, state, f"teacher checkpoint {info['ckpt']} ({arch}, {num_classes} classes)"
        )
    return teacher, info


# -- resuming ---------------------------------------------------------------------------------------
def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from (torch, CUDA, Python, NumPy and the data order ``gen``):
    restoring them all is what makes a resumed CPU run bit-identical to an uninterrupted one."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "data": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    """Restore :func:`rng_state`; CUDA states only onto the same number of visible devices."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    gen.set_state(state["data"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_run(ckpt: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint whose run-defining settings differ from the requested ones."""
    diffs = []
    if "optimizer" not in ckpt:
        raise DiswotError(
            f"{path} is a best-model checkpoint without optimizer state; resume from last.pt"
        )
    for key, want in identity.items():
        have = ckpt.get(key)
        if key == "dataset":  # the data may move between sessions; what it is must not change
            have = {k: v for k, v in (have or {}).items() if k != "root"}
            want = {k: v for k, v in want.items() if k != "root"}
        if key == "settings":
            for sk, sv in want.items():
                if have is None or have.get(sk) != sv:
                    diffs.append(f"{sk} {_fmt_diff(None if have is None else have.get(sk), sv)}")
        elif have != want:
            diffs.append(f"{key} {_fmt_diff(have, want)}")
    if diffs:
        raise DiswotError(
            f"resume checkpoint {path} is from a different run ({'; '.join(diffs[:3])}; "
            "checkpoint vs requested); repeat its settings or choose a new --out"
        )


def _fmt_diff(a: Any, b: Any) -> str:
    return f"{json.dumps(a, sort_keys=True)[:60]} vs {json.dumps(b, sort_keys=True)[:60]}"
