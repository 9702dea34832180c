"""A finished Pareto search: the front, its files (``pareto.json``, ``pareto.csv``) and summary.

The winner is the same as every search's: the best score within the budgets (every candidate
scored was within them), which is the front's highest-score end. The front is what a user chooses
from when the best score is not what they want to pay for.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from diswot.runfolder import atomic_write_json, atomic_write_text, json_float
from diswot.search.budget import format_count
from diswot.search.pareto.plot import PARETO_PLOT
from diswot.search.result import SearchResult

#: The front's files in the run folder.
PARETO_JSON = "pareto.json"
PARETO_CSV = "pareto.csv"

#: How the winner of a Pareto search is chosen, as result.json and the summary state it.
WINNER_RULE = "the best score within the budgets (the front's highest-score end)"

#: Front rows the summary prints before pointing at pareto.csv.
SHOWN = 12


def front_row(rec: dict) -> dict:
    """One member of the front as the files hold it."""
    return {
        "step": rec.get("step"),
        "arch": rec["arch"],
        "score": json_float(rec.get("score")),
        "params": rec.get("params"),
        "flops": rec.get("flops"),
        "latency_ms": rec.get("latency_ms"),
    }


@dataclass
class ParetoResult(SearchResult):
    """:class:`SearchResult` plus the front, what it trades off and how latency was measured."""

    front: list[dict] = field(default_factory=list)
    costs: tuple[str, ...] = ()
    latency: str | None = None  # the measurement's conditions, when latency was measured

    def pareto_dict(self) -> dict:
        """What ``pareto.json`` holds, and ``result.json`` under ``pareto``."""
        return {
            "maximise": f"score ({self.settings['objective']})",
            "minimise": list(self.costs),
            "winner_rule": WINNER_RULE,
            "winner": front_row(self.winner),
            "budget": self.budget,
            "cost_convention": self.cost_convention,
            "latency": self.latency,
            "n_candidates": self.n_scored,
            "front": [front_row(r) for r in self.front],
        }

    def to_dict(self) -> dict:
        return {**super().to_dict(), "pareto": self.pareto_dict()}

    def write(self, out: Path) -> None:
        atomic_write_json(out / PARETO_JSON, self.pareto_dict())
        buf = io.StringIO()
        rows = [front_row(r) for r in self.front]
        writer = csv.DictWriter(buf, fieldnames=list(front_row(self.winner)), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / PARETO_CSV, buf.getvalue())

    def summary(self) -> str:
        lines = [super().summary()]
        lines.append(
            f"pareto  {len(self.front)} of {self.n_scored} candidates on the front: maximise "
            f"{self.settings['objective']}, minimise {', '.join(self.costs)}; the winner is "
            f"{WINNER_RULE}"
        )
        if self.latency:
            lines.append(f"latency {self.latency}")
        head = f"  {'score':>10}  {'params':>8}  {'FLOPs':>8}"
        head += f"  {'latency':>10}" if self.latency else ""
        lines.append(head + "  arch")
        for r in self.front[:SHOWN]:
            row = f"  {r['score']:>10.5g}  {format_count(r['params']):>8}  "
            row += f"{format_count(r['flops']):>8}"
            if self.latency:
                row += f"  {r['latency_ms']:>7.3f} ms" if r.get("latency_ms") is not None else ""
            mark = "  <- winner" if r["arch"] == self.winner["arch"] else ""
            lines.append(f"{row}  {r['arch']}{mark}")
        if len(self.front) > SHOWN:
            lines.append(f"  ... {len(self.front) - SHOWN} more in {PARETO_CSV}")
        if self.out_dir is not None:
            lines.append(
                f"front   {self.out_dir}/ ({PARETO_JSON}, {PARETO_CSV}, {PARETO_PLOT}"
                + (", latency.jsonl)" if self.latency else ")")
            )
        return "\n".join(lines)


__all__ = ["PARETO_CSV", "PARETO_JSON", "WINNER_RULE", "ParetoResult", "front_row"]
