"""Latency in a search: measured once per candidate, journaled, a budget and a recorded field.

A candidate's latency is measured in the search's own process, before it is scored (a budget must
be checked first), on the search's device, by :func:`diswot.latency.measure_arch`. Measurements are
noisy, so a resumed run must not measure again what the first process measured: a different number
could admit a candidate the first run turned away and the replay would part from the record. Every
measurement is therefore appended to ``latency.jsonl`` (fsynced, as ``candidates.jsonl``) and read
back on resume, the ones that turned a candidate away included.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from diswot.errors import DiswotError
from diswot.latency import Latency, measure_arch
from diswot.runfolder import Journal
from diswot.search.budget import Budget
from diswot.search.ledger import Admission, Ledger
from diswot.spaces import SearchSpace

#: The run folder's journal of latency measurements, one JSON record per measured architecture.
LATENCIES = "latency.jsonl"

#: Budget-admissible random samples measured before a latency budget that admits none is refused.
CHECK_SAMPLES = 20


def _is_measurement(rec: Any, index: int) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("arch"), str) and "median_ms" in rec


def latency_journal(path: str | Path) -> Journal:
    return Journal(path, check=_is_measurement)


class LatencyMeter:
    """Each architecture's latency, measured once (``known``: those read back from the journal).

    Measurements made before the run folder exists (the budget check runs first) wait in memory
    and are written when :meth:`open` is called.
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        image_size: int,
        *,
        batch: int,
        warmup: int,
        repeats: int,
        device: str,
        known: dict[str, dict] | None = None,
    ) -> None:
        self.space = space
        self.num_classes = num_classes
        self.image_size = image_size
        self.options = {"batch": batch, "warmup": warmup, "repeats": repeats, "device": device}
        self.known: dict[str, dict] = dict(known or {})
        self.pending: list[dict] = []
        self.journal: Journal | None = None
        self.last: Latency | None = None  # the newest fresh measurement (its conditions)

    @classmethod
    def read(cls, path: Path) -> dict[str, dict]:
        """The measurements of a run folder's ``latency.jsonl`` (empty when there is none)."""
        return {r["arch"]: r for r in latency_journal(path).read()} if path.exists() else {}

    def ms(self, arch: str) -> float:
        """``arch``'s median latency in milliseconds, measured now unless already known."""
        rec = self.known.get(arch)
        if rec is None:
            lat = measure_arch(self.space, arch, self.num_classes, self.image_size, **self.options)
            self.last = lat
            rec = self.known[arch] = {"arch": arch, **lat.to_dict()}
            if self.journal is not None:
                self.journal.append(rec)
            else:
                self.pending.append(rec)
        return float(rec["median_ms"])

    def open(self, path: Path) -> None:
        """Start journaling to ``path``, writing what was measured before the folder existed."""
        self.journal = latency_journal(path)
        for rec in self.pending:
            self.journal.append(rec)
        self.pending.clear()

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


class LatencyAdmission(Admission):
    """The size budget, then the latency budget: a candidate within size is measured (once), and
    turned away when slower than ``max_latency_ms``. Every admitted candidate has its latency
    known before it is scored, which is what the ledger records."""

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        num_classes: int,
        image_size: int,
        max_retries: int,
        *,
        meter: LatencyMeter,
        max_latency_ms: float | None,
    ) -> None:
        super().__init__(space, budget, num_classes, image_size, max_retries)
        self.meter = meter
        self.max_latency_ms = max_latency_ms
        self._timing = True

    def admits(self, arch: str) -> bool:
        if not super().admits(arch):
            return False
        if not self._timing:
            return True
        if self.max_latency_ms is not None and self.meter.ms(arch) > self.max_latency_ms:
            self.rejected += 1
            return False
        if self.max_latency_ms is None:
            self.meter.ms(arch)
        return True

    def check(self, seed: int, exhaustive: bool) -> None:
        """The size budget's check, then: one of at most :data:`CHECK_SAMPLES` random samples
        within size meets the latency budget, or a one-line error with the latencies seen."""
        self._timing = False  # the size check draws up to max_retries samples: no timing there
        try:
            super().check(seed, exhaustive)
            if self.max_latency_ms is None:
                return
            rng = random.Random(f"latency-check-{seed}")
            seen: list[float] = []
            while len(seen) < CHECK_SAMPLES and (not seen or min(seen) > self.max_latency_ms):
                seen.append(self.meter.ms(self.sample(rng)))
        finally:
            self._timing = True
            self.rejected = 0
        if min(seen) > self.max_latency_ms:
            o = self.meter.options
            raise DiswotError(
                f"--max-latency-ms {self.max_latency_ms:g} admits none of {CHECK_SAMPLES} random "
                f"samples of space '{self.space.name}' within the size budget (latency "
                f"{min(seen):.3g}..{max(seen):.3g} ms at batch {o['batch']} on {o['device']}); "
                "raise it, or lower --latency-batch"
            )


class LatencyLedger(Ledger):
    """The ledger, with each new record's latency (measured at admission) and batch size."""

    def __init__(self, *args: Any, meter: LatencyMeter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter

    def _append(self, rec: dict) -> None:
        rec["latency_ms"] = self.meter.ms(rec["arch"])
        rec["latency_batch"] = self.meter.options["batch"]
        super()._append(rec)


__all__ = ["LATENCIES", "LatencyAdmission", "LatencyLedger", "LatencyMeter", "latency_journal"]
