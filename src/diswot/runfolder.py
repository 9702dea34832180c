"""One run-folder implementation for ``search``, ``rank``, ``train`` and ``distill``.

A long run must never lose results and must be resumable after ``kill -9``. Three pieces give that,
and every command uses the same ones:

* :func:`atomic_write_text` / :func:`atomic_write_json`: a temporary file in the same folder,
  flushed and fsynced, then ``os.replace``'d over the target, so a kill leaves either the old or the
  new file, never half of one.
* :class:`Journal`: an append-only JSON-lines log (one record per line, flush + fsync per append).
  On open, a torn last line (the process died mid-write) is dropped *and cut from the file*, so the
  next append starts on a clean line; an unreadable line anywhere else is corruption and raises.
  This is the scheme of Optuna's file journal storage.
* :func:`write_settings` / :func:`read_settings` / :func:`settings_diff`: ``settings.json`` holds
  ``{"settings": ..., "versions": ...}``; a resume compares the fields that must match.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from diswot.errors import DiswotError

SETTINGS = "settings.json"

#: Values of run settings added after run folders were first written: a folder that lacks one was
#: written with this value (before ``--precision`` existed, everything was fp32; before
#: ``--teacher-init``, every teacher was re-initialised).
SETTINGS_ADDED: dict[str, object] = {"precision": "fp32", "teacher_init": "random"}


def stored_setting(settings: Mapping[str, Any], key: str) -> object:
    """``settings[key]`` of a run folder, or what a folder written before ``key`` existed used."""
    return settings.get(key, SETTINGS_ADDED.get(key))


def json_float(v: float | None) -> float | None:
    """A float for JSON: NaN and infinities become ``null`` (JSON has no spelling for them)."""
    return None if v is None or not math.isfinite(v) else float(v)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill leaves the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON (unknown types via ``str``)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def versions() -> dict[str, str]:
    """Package versions a run folder records, so a result can be traced to the code that made it."""
    import numpy as np
    import torch

    from diswot import __version__

    return {
        "diswot": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_settings(out: str | Path, settings: Mapping[str, Any]) -> None:
    """``out/settings.json`` = ``{"settings": settings, "versions": versions()}``, atomically."""
    atomic_write_json(Path(out) / SETTINGS, {"settings": dict(settings), "versions": versions()})


def read_settings(out: str | Path, what: str = "run") -> dict:
    """The ``settings`` stored in run folder ``out``; a one-line error when missing or unreadable.

    ``what`` names the kind of run in the message (``"search run"``, ``"rank run"``).
    """
    path = Path(out) / SETTINGS
    if not path.is_file():
        raise DiswotError(f"{out} holds no {what} ({SETTINGS} missing); check the folder path")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DiswotError(f"{path} is corrupt; delete it or use another --out folder") from exc
    settings = meta.get("settings", meta) if isinstance(meta, dict) else None
    if not isinstance(settings, dict):
        raise DiswotError(f"{path} is corrupt; delete it or use another --out folder")
    return settings


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The ``keys`` whose stored values differ between two settings (missing keys read through
    :func:`stored_setting`)."""
    return [k for k in keys if stored_setting(old, k) != stored_setting(new, k)]


def refuse_other_settings(
    out: str | Path,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    keys: Iterable[str],
    what: str = "a run",
) -> None:
    """A one-line error when a resume's settings differ from the folder's in one of ``keys``
    (the first three differences shown with their stored and new values)."""
    diff = settings_diff(old, new, keys)
    if diff:
        shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in diff[:3])
        raise DiswotError(
            f"{out} holds {what} with other settings: {shown}; resume with the same settings "
            "or use another --out"
        )


class Journal:
    """An append-only JSON-lines file of records: flushed and fsynced per append, torn tail cut.

    Args:
        path: the ``.jsonl`` file (created on the first append).
        check: optional ``check(record, index) -> bool`` for each parsed line (``index`` counts the
            good records before it); a line it rejects is treated like an unparsable one.
        fix: what a corruption message tells the user to do.

    :meth:`read` returns the good records and truncates a torn last line away, so a run killed
    mid-write resumes, appends, and resumes again without ever meeting the fragment.
    """

    def __init__(
        self,
        path: str | Path,
        check: Callable[[Any, int], bool] | None = None,
        fix: str = "delete that line (and those after it) or the file, or use another --out",
    ) -> None:
        self.path = Path(path)
        self.check = check
        self.fix = fix
        self._fh: IO[bytes] | None = None

    def read(self) -> list[Any]:
        """The records in file order; cuts a torn last line; raises on corruption before it."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        records: list[Any] = []
        good = 0  # bytes of the verified prefix
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
                ok = self.check(rec, len(records)) if self.check is not None else True
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                if i == len(lines) - 1:
                    break  # torn tail: cut below
                raise DiswotError(f"{self.path} line {i + 1} is corrupt; {self.fix}")
            records.append(rec)
            good += len(line) + 1
        if good < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        elif good > len(data):  # the last record is whole but its newline was never written
            with self.path.open("ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        return records

    def append(self, record: Any) -> None:
        """Write one record as one line and make it durable before returning."""
        if self._fh is None:
            self._fh = self.path.open("ab")
        self._fh.write(json.dumps(record).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "SETTINGS",
    "SETTINGS_ADDED",
    "Journal",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "json_float",
    "read_settings",
    "refuse_other_settings",
    "settings_diff",
    "stored_setting",
    "versions",
]
