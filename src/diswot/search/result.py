"""A finished search: the winner, the top candidates and what ``result.json`` and the summary say.

The winner is decided from the scores alone (ranked by score, ties to the earlier candidate); the
space's ground-truth table is read only afterwards, for the report, so it can never steer a search.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from diswot.errors import DiswotError
from diswot.runfolder import SETTINGS, json_float, versions
from diswot.search.budget import format_count
from diswot.search.ledger import CANDIDATES, score_key
from diswot.search.plot import PLOT
from diswot.spaces import SearchSpace

#: The run folder's result file (what :meth:`SearchResult.to_dict` holds).
RESULT = "result.json"


@dataclass
class SearchResult:
    """Outcome of :func:`~diswot.search.run_search`; :meth:`to_dict` is what ``result.json`` holds."""

    winner: dict
    top: list[dict]
    candidates: list[dict]
    history: dict[str, list]
    settings: dict
    budget: str
    cost_convention: str
    ground_truth: dict[str, float]
    stop_reason: str
    steps: int
    rejected: int
    seconds: float
    loop_seconds: float = 0.0
    out_dir: Path | None = None

    @property
    def n_scored(self) -> int:
        return len(self.candidates)

    def to_dict(self) -> dict:
        return {
            "winner": self.winner,
            "top": self.top,
            "ground_truth": self.ground_truth,
            "budget": self.budget,
            "cost_convention": self.cost_convention,
            "n_scored": self.n_scored,
            "steps": self.steps,
            "rejected_by_budget": self.rejected,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 3),
            "loop_seconds": round(self.loop_seconds, 3),
            "seed": self.settings["seed"],
            "settings": self.settings,
            "versions": versions(),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
            "history": self.history,
        }

    def summary(self) -> str:
        """A few human lines: winner, budget and convention, ground truth, where files are."""
        w = self.winner
        s = self.settings
        what = (
            f"target {s['target']}"
            if s.get("target") is not None
            else f"{s['num_classes']} classes, {s['image_size']} px"
        )
        lines = [
            f"winner  {w['arch']}",
            f"score   {w['score']:.6g} ({s['objective']}, larger is better)",
            f"size    {w['params']:,} params ({format_count(w['params'])}), "
            f"{w['flops']:,} FLOPs ({format_count(w['flops'])})",
            f"budget  {self.budget}; FLOPs = {self.cost_convention}",
            f"search  {s['algorithm']} on {s['space']} ({what}), teacher "
            f"{s['teacher']}, seed {s['seed']}: {self.n_scored} scored in {self.steps} steps, "
            f"{self.rejected} rejected by budget, stop: {self.stop_reason}, {self.seconds:.1f} s",
        ]
        if self.ground_truth:
            acc = ", ".join(f"{t} {v:.2f}%" for t, v in self.ground_truth.items())
            lines.append(f"truth   {acc} (shipped table, looked up after the search)")
        if self.out_dir is not None:
            lines.append(f"files   {self.out_dir}/ ({SETTINGS}, {CANDIDATES}, {RESULT}, {PLOT})")
        return "\n".join(lines)


def public(rec: dict) -> dict:
    """A record without timing: what results and the resume-equivalence guarantee cover."""
    return {
        "step": rec["step"],
        "arch": rec["arch"],
        "score": json_float(rec["score"]),
        "value": json_float(rec.get("value")),
        "components": dict(rec.get("components") or {}),
        "params": rec.get("params"),
        "flops": rec.get("flops"),
    }


def decide(
    records: list[dict], space: SearchSpace, top_k: int
) -> tuple[dict, list[dict], dict[str, float]]:
    """The winner, the ``top_k`` best and the winner's ground truth per target.

    Ranked by score (stable, so ties go to the earlier candidate); only then is the truth looked
    up, for the winner and for each of the top that the shipped tables hold.
    """
    ranked = sorted(records, key=score_key, reverse=True)
    winner = public(ranked[0])
    top = [public(r) for r in ranked[:top_k]]
    truth: dict[str, float] = {}
    for t in space.targets:
        table = space.ground_truth(t)
        if winner["arch"] in table:
            truth[t] = table[winner["arch"]]
            for r in top:
                if r["arch"] in table:
                    r.setdefault("ground_truth", {})[t] = table[r["arch"]]
    return winner, top, truth


def check_scores(records: list[dict], objective: str, out: Path | None) -> None:
    """Refuse a search whose scores cannot pick a winner, and warn when they barely can.

    No finite score means there is no winner to report: a one-line error (after the files are
    written, so nothing is lost). All scores equal means the "winner" is the first candidate: a
    note. Both usually mean the objective is undefined or constant for this probe; the known cases
    are in ``docs/proxies.md`` ("Known limits")."""
    finite = [
        r["score"] for r in records if r.get("score") is not None and math.isfinite(r["score"])
    ]
    kept = f"; the scored candidates are kept in {out}" if out is not None else ""
    hint = "docs/proxies.md, 'Known limits', says when each proxy is undefined"
    if not finite:
        raise DiswotError(
            f"all {len(records)} candidates scored NaN or infinite with {objective}, so there is "
            f"no winner{kept}; {hint} (epe_nas: raise --batch-size above the class count)"
        )
    if len(records) > 1 and len(finite) == len(records) and len(set(finite)) == 1:
        print(
            f"diswot: note: all {len(records)} candidates scored {finite[0]:.6g} with "
            f"{objective}, so the winner is just the first one; {hint}",
            file=sys.stderr,
        )


__all__ = ["RESULT", "SearchResult", "check_scores", "decide", "public"]
