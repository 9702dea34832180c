"""The costs a Pareto search minimises, and the non-dominated front of a set of scored candidates.

A candidate *dominates* another when its score is at least as high, each cost named is at most as
large, and one of these is strictly better. The front is every candidate no other one dominates:
the trade-off a user shrinking a model chooses from. It is computed here directly from the records
(a brute-force comparison of every pair, vectorised), not read back from Optuna, so that the files a
run folder holds are a function of its ``candidates.jsonl`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from diswot.errors import DiswotError


@dataclass(frozen=True)
class Cost:
    """A minimised quantity: where a record holds it, and how a plot and a table show it."""

    name: str  # as --pareto spells it
    key: str  # the record field
    label: str  # an axis label with its unit
    scale: float  # record value * scale = the value shown on that axis

    def shown(self, value: float) -> float:
        return value * self.scale


#: ``--pareto`` name -> the cost. FLOPs follow the space's convention (multiply-adds by default).
COSTS: dict[str, Cost] = {
    "params": Cost("params", "params", "parameters (millions)", 1e-6),
    "flops": Cost("flops", "flops", "FLOPs (millions of multiply-adds)", 1e-6),
    "latency": Cost("latency", "latency_ms", "latency (ms)", 1.0),
}


def parse_costs(costs: str | Iterable[str]) -> tuple[str, ...]:
    """``"params,latency"`` or ``["params", "latency"]`` -> ``("params", "latency")``, checked."""
    names = costs.split(",") if isinstance(costs, str) else list(costs)
    out = tuple(str(n).strip().lower() for n in names if str(n).strip())
    if not out:
        raise DiswotError(f"--pareto needs one or more of {', '.join(COSTS)}, comma-separated")
    for n in out:
        if n not in COSTS:
            raise DiswotError(f"--pareto: unknown cost '{n}'; known: {', '.join(COSTS)}")
    if len(set(out)) != len(out):
        raise DiswotError(f"--pareto names a cost twice: {','.join(out)}")
    return out


def _finite(rec: dict, keys: Sequence[str]) -> bool:
    vals = [rec.get("score"), *(rec.get(k) for k in keys)]
    return all(v is not None and math.isfinite(v) for v in vals)


def pareto_front(records: Sequence[dict], costs: Sequence[str]) -> list[dict]:
    """The records no other record dominates (score maximised, ``costs`` minimised), sorted by
    the first cost (cheapest first), then by score (best first), then by step.

    A record with a NaN score or a missing cost takes no part: it cannot be compared. Records with
    equal objectives do not dominate each other, so both stay.
    """
    keys = [COSTS[c].key for c in costs]
    recs = [r for r in records if _finite(r, keys)]
    if not recs:
        return []
    # Every objective as "smaller is better": the negated score, then the costs.
    m = np.array([[-float(r["score"]), *(float(r[k]) for k in keys)] for r in recs])
    dominated = np.zeros(len(recs), dtype=bool)
    for start in range(0, len(recs), 512):  # blocks keep the pairwise table small
        block = m[start : start + 512]
        no_worse = (m[None, :, :] <= block[:, None, :]).all(axis=2)
        better = (m[None, :, :] < block[:, None, :]).any(axis=2)
        dominated[start : start + len(block)] = (no_worse & better).any(axis=1)
    front = [r for r, d in zip(recs, dominated) if not d]
    return sorted(front, key=lambda r: (float(r[keys[0]]), -float(r["score"]), r.get("step", 0)))


__all__ = ["COSTS", "Cost", "parse_costs", "pareto_front"]
