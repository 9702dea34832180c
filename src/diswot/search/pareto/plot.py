"""``pareto.png``: the trade-off a Pareto search found, one panel per cost against the score.

Every scored candidate is a grey dot; the front's members (non-dominated over *all* the costs
searched) are coloured; the line is the best score reachable at each cost of that panel, which is
the front itself when one cost is searched. Budget bounds are dashed lines, the winner (the best
score within the budgets) a star. Axes say their units, the title what was searched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from diswot.search.budget import format_count
from diswot.search.pareto.front import COSTS, pareto_front

#: The plot's file name in the run folder.
PARETO_PLOT = "pareto.png"


def plot_front(
    records: Sequence[dict],
    front: Sequence[dict],
    winner: dict,
    costs: Sequence[str],
    path: Path,
    *,
    title: str,
    objective: str,
    bounds: dict[str, tuple[float | None, float | None]],
    labels: dict[str, str] | None = None,
    searched: Sequence[str] | None = None,
) -> None:
    """Write the plot to ``path``.

    Args:
        costs: the panels, in order (the searched costs, and latency when only budgeted).
        bounds: cost name -> (minimum, maximum) of the budget, in the record's unit.
        labels: cost name -> axis label overriding :data:`COSTS`' one (latency's conditions).
        searched: the costs the front is non-dominated over (default: ``costs``).
    """
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: searches run on headless machines
    import matplotlib.pyplot as plt

    labels = labels or {}
    searched = list(searched or costs)
    width = max(7.0, 5.2 * len(costs))
    fig, axes = plt.subplots(1, len(costs), figsize=(width, 4.8), squeeze=False)
    on_front = {r["arch"] for r in front}
    for ax, name in zip(axes[0], costs):
        cost = COSTS[name]
        pts = [
            r for r in records
            if r.get(cost.key) is not None and r.get("score") is not None
            and math.isfinite(r["score"])
        ]  # fmt: skip
        x = [cost.shown(r[cost.key]) for r in pts]
        y = [r["score"] for r in pts]
        ax.scatter(x, y, s=14, c="0.72", label=f"all candidates ({len(pts)})", zorder=1)
        members = [r for r in pts if r["arch"] in on_front]
        ax.scatter(
            [cost.shown(r[cost.key]) for r in members],
            [r["score"] for r in members],
            s=34, c="tab:orange", edgecolors="black", linewidths=0.6, zorder=3,
            label=f"on the Pareto front over {', '.join(searched)} ({len(front)})",
        )  # fmt: skip
        stair = pareto_front(pts, [name])  # the best score at each cost of this panel
        if stair:
            sx = [cost.shown(r[cost.key]) for r in stair]
            sy = [r["score"] for r in stair]
            ax.plot(
                sx + [max(x)], sy + [sy[-1]], drawstyle="steps-post", c="tab:orange", lw=1.4,
                zorder=2,
                label="best score for at most this cost",
            )  # fmt: skip
        lo, hi = bounds.get(name, (None, None))
        for value, style, word in ((hi, "--", "max"), (lo, ":", "min")):
            if value is not None:
                shown = f"{value:g} ms" if name == "latency" else format_count(value)
                ax.axvline(
                    cost.shown(value), ls=style, c="tab:red", lw=1.2,
                    label=f"budget: {word} {shown}",
                )  # fmt: skip
        if winner.get(cost.key) is not None:
            ax.scatter(
                [cost.shown(winner[cost.key])], [winner["score"]], marker="*", s=260,
                c="tab:blue", edgecolors="black", linewidths=0.7, zorder=4,
                label="winner (best score within budget)",
            )  # fmt: skip
        ax.set_xlabel(labels.get(name, cost.label))
        ax.set_ylabel(f"score: {objective} (larger is better)")
        ax.grid(alpha=0.25)
    shown: dict[str, object] = {}  # one legend for every panel: same entries, budgets of each
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            shown.setdefault(label, handle)
    fig.legend(
        list(shown.values()), list(shown), loc="lower center", ncol=min(3, len(shown)),
        fontsize=8, frameon=False,
    )  # fmt: skip
    fig.suptitle(title, fontsize=9.5)
    fig.tight_layout(rect=(0, 0.055 * (1 + (len(shown) - 1) // 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["PARETO_PLOT", "plot_front"]
