"""A rank run folder on disk: ``scores.jsonl``, ``settings.json`` and ``archs.txt``.

``scores.jsonl`` is a :class:`~diswot.runfolder.Journal`: one record per (architecture, seed)
evaluation, fsynced as it is scored, and a torn last line (a killed run) cut on reload, so a resumed
run appends on a clean line and can be killed and resumed again. ``settings.json`` and ``archs.txt``
are written atomically, so a kill leaves the old file or the new one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diswot.errors import DiswotError
from diswot.rank.config import FIXED_SETTINGS
from diswot.runfolder import (
    SETTINGS,
    Journal,
    atomic_write_text,
    json_float,
    read_settings,
    settings_diff,
    write_settings,
)
from diswot.runtime import run_folder

Scores = dict[str, dict[int, dict[str, float]]]  # arch -> seed -> proxy -> value
#: Exclusive seconds of the same records: arch -> seed -> proxy or ``pass:<name>`` -> seconds.
Times = dict[str, dict[int, dict[str, float]]]

SCORES = "scores.jsonl"
ARCHS = "archs.txt"


def score_record(
    arch: str, seed: int, values: Mapping[str, float], seconds: Mapping[str, float]
) -> dict[str, Any]:
    """One line of ``scores.jsonl`` (non-finite values as ``null``, seconds to 10 µs)."""
    return {
        "arch": arch,
        "seed": seed,
        "values": {k: json_float(v) for k, v in values.items()},
        "seconds": {k: round(v, 5) for k, v in seconds.items()},
    }


def _parse(rec: Any) -> tuple[str, int, dict[str, float]]:
    """``(arch, seed, values)`` of a record; a malformed one raises (KeyError, TypeError, ValueError)."""
    values = rec["values"]
    if not isinstance(values, dict):
        raise TypeError("values is not an object")
    vals = {k: (math.nan if v is None else float(v)) for k, v in values.items()}
    return rec["arch"], int(rec["seed"]), vals


def _valid(rec: Any, _index: int) -> bool:
    _parse(rec)
    return True


class ScoreLog:
    """``scores.jsonl``: read once when a run starts, then appended to as evaluations arrive."""

    def __init__(self, path: str | Path) -> None:
        self.journal = Journal(path, check=_valid, fix="delete that line or the file to rescore")

    def load(self, times: Times | None = None) -> Scores:
        """The cached scores (a torn last line is cut from the file); ``times``, when given,
        receives the records' seconds."""
        scores: Scores = {}
        for rec in self.journal.read():
            arch, seed, vals = _parse(rec)
            scores.setdefault(arch, {}).setdefault(seed, {}).update(vals)
            if times is not None and isinstance(rec.get("seconds"), dict):
                times.setdefault(arch, {}).setdefault(seed, {}).update(rec["seconds"])
        return scores

    def append(
        self, arch: str, seed: int, values: Mapping[str, float], seconds: Mapping[str, float]
    ) -> None:
        """Persist one evaluation before returning."""
        self.journal.append(score_record(arch, seed, values, seconds))

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> ScoreLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_scores(path: str | Path, times: Times | None = None) -> Scores:
    """Read ``scores.jsonl`` (see :meth:`ScoreLog.load`); a missing file holds no scores."""
    return ScoreLog(path).load(times)


def write_scores(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``scores.jsonl`` by ``records`` at once (a merge writes a whole cache)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to mix scores from different settings in one folder (proxies and seeds may grow)."""
    if not (out / SETTINGS).exists():
        return
    diff = settings_diff(read_settings(out, "rank run"), settings, FIXED_SETTINGS)
    if diff:
        raise DiswotError(
            f"{out} holds a run with different {', '.join(diff)}; use another --out folder"
        )


def write_run_folder(out: Path, settings: Mapping[str, Any], archs: list[str]) -> None:
    """Create ``out`` with the run's ``settings.json`` and ``archs.txt`` (after
    :func:`check_settings`)."""
    run_folder(out)
    write_settings(out, settings)
    atomic_write_text(out / ARCHS, "\n".join(archs) + "\n")


def read_run_folder(folder: str | Path) -> tuple[dict, list[str]]:
    """The settings and architecture list of a rank run folder, for :func:`~diswot.rank.merge_runs`."""
    p = Path(folder)
    if not (p / SETTINGS).is_file() or not (p / ARCHS).is_file():
        raise DiswotError(f"{p} is not a rank run folder (no settings.json/archs.txt)")
    return read_settings(p, "rank run"), (p / ARCHS).read_text().split()
