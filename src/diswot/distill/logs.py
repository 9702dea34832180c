"""Per-epoch logs of a training run: ``log.csv`` and ``log.jsonl``, one row per epoch.

Both are rewritten whole from the checkpoint's history after every epoch (atomically, through
:func:`diswot.runfolder.atomic_write_text`), not appended to: a kill between the checkpoint and the
log leaves the log one epoch behind at worst, and the resumed run rewrites it from the history it
restored, so the logs never disagree with ``last.pt``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from diswot.runfolder import atomic_write_text

__all__ = ["EpochLog"]


class EpochLog:
    """``log.csv`` and ``log.jsonl`` in the run folder ``out``."""

    def __init__(self, out: Path) -> None:
        self.csv = out / "log.csv"
        self.jsonl = out / "log.jsonl"

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        """Write both files from ``history`` (a CSV header from the first row's keys)."""
        buf = io.StringIO()
        if history:
            w = csv.DictWriter(buf, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
        atomic_write_text(self.csv, buf.getvalue())
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in history))
