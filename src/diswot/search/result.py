"""A finished search: the winner, the top candidates and what ``result.json`` and the summary say.

The winner is decided from the scores alone (ranked by score, ties to the earlier candidate); the
space's ground-truth table is read only afterwards, for the report, so it can never steer a search.
The report then says how good the pick was (:func:`pick_report`): the winner's rank by accuracy
among every admissible architecture of the space (enumerated where that is cheap, else among the
candidates the search scored) and its regret, the best of them minus the winner's accuracy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from diswot.errors import DiswotError
from diswot.runfolder import SETTINGS, json_float, versions
from diswot.search.budget import format_count
from diswot.search.ledger import CANDIDATES, Admission, score_key
from diswot.search.plot import PLOT
from diswot.spaces import SearchSpace

#: The run folder's result file (what :meth:`SearchResult.to_dict` holds).
RESULT = "result.json"

#: Enumerable spaces of at most this many architectures rank the pick among all admissible ones
#: (each needs its cost; NB201's 15,625 have closed forms); larger spaces among the scored.
PICK_ENUMERATE_UP_TO = 20_000


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
    #: The winner's rank and regret by ground truth (:func:`pick_report`), ``None`` without one.
    pick: dict | None = None
    #: The objective as it was asked for (``default``, say); ``settings["objective"]`` resolves it.
    proxy: str | None = None

    @property
    def n_scored(self) -> int:
        return len(self.candidates)

    def to_dict(self) -> dict:
        return {
            "winner": self.winner,
            "top": self.top,
            "ground_truth": self.ground_truth,
            "pick": self.pick,
            "proxy": self.proxy if self.proxy is not None else self.settings.get("objective"),
            "resolved": self.settings.get("objective"),
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
            f"{self.rejected} rejected by budget, stop: {self.stop_reason}, {self.seconds:.1f} s"
            + (f", {s['group']} per pass" if (s.get("group") or 1) > 1 else ""),
        ]
        if self.ground_truth:
            acc = ", ".join(f"{t} {v:.2f}%" for t, v in self.ground_truth.items())
            lines.append(f"truth   {acc} (shipped table, looked up after the search)")
        if self.pick:
            lines.append(f"pick    {pick_text(self.pick)}")
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


def admissible_pool(admission: Admission) -> list[str] | None:
    """Every admissible architecture when the space enumerates at most
    :data:`PICK_ENUMERATE_UP_TO` of them, else ``None`` (the pick is then ranked among the scored)."""
    n = admission.space.size()
    return admission.admissible() if n is not None and n <= PICK_ENUMERATE_UP_TO else None


def pick_report(
    winner: str,
    space: SearchSpace,
    target: str | None,
    admissible: list[str] | None,
    scored: list[str],
) -> dict | None:
    """How good the pick ``winner`` is by the space's shipped ground truth, after the decision.

    For every target of the search target's dataset (S1: ``kd`` and ``cls``; NB201: the target
    alone): the winner's rank by accuracy (1 = best; ties share the better rank) among
    ``admissible`` (every admissible architecture) or, when that is ``None``, among ``scored``
    (the candidates the search scored), counting those with ground truth, and its regret (the best
    of them minus the winner's accuracy, in points). ``None`` when no target has the winner.
    """
    if not space.targets:
        return None
    spec = space.dataset(target)
    pool = list(dict.fromkeys(admissible if admissible is not None else scored))
    report: dict = {"among": "admissible" if admissible is not None else "scored", "n": len(pool)}
    per_target: dict[str, dict] = {}
    for t in space.targets:
        if space.dataset(t) != spec:
            continue
        table = space.ground_truth(t)
        known = [a for a in pool if a in table]
        if winner not in table or not known:
            continue
        best = max(known, key=table.__getitem__)  # the first of equals, in pool order
        acc = table[winner]
        per_target[t] = {
            "rank": 1 + sum(table[a] > acc for a in known),
            "of": len(known),
            "accuracy": acc,
            "best": table[best],
            "best_arch": best,
            "regret": round(table[best] - acc, 6),
        }
    if not per_target:
        return None
    report["targets"] = per_target
    return report


def pick_text(pick: dict) -> str:
    """The summary's ``pick`` line (after the ``truth`` line)."""
    parts = [
        f"{t}: rank {p['rank']} of {p['of']}, regret {p['regret']:.2f} "
        f"(best {p['best']:.2f}%, {p['best_arch']})"
        for t, p in pick["targets"].items()
    ]
    among = (
        "all admissible architectures"
        if pick["among"] == "admissible"
        else f"the {pick['n']} scored candidates (the space is too large to enumerate)"
    )
    return f"{'; '.join(parts)}; among {among}, looked up after the decision"


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


__all__ = [
    "PICK_ENUMERATE_UP_TO",
    "RESULT",
    "SearchResult",
    "admissible_pool",
    "check_scores",
    "decide",
    "pick_report",
    "pick_text",
    "public",
]
