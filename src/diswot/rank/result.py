"""The result of a rank run: every proxy's correlation with every target, the raw scores, and the
Markdown table ``diswot rank`` prints.

Statistics per proxy and target (see :mod:`diswot.rankstats`): Kendall, Spearman, Pearson, P@top-5%
and BR@5%, each computed per seed and reported as mean and population std over seeds. Non-finite
scores are kept, ranked last, and counted. Ensembles ``"a+b"`` are rank averages of their members,
formed per seed over the ranked set (:func:`diswot.proxies.rank_average`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diswot import rankstats
from diswot.proxies import get_proxy, rank_average
from diswot.rank.store import Scores

#: Statistics reported per proxy and target, in table order (keys of :func:`rankstats.correlate`).
STATS = ("kendall", "spearman", "pearson", "precision_at_top", "best_rank_at_top")


@dataclass
class RankResult:
    """Correlations of every proxy with every target, plus the raw per-architecture scores."""

    space: str
    archs: list[str]
    proxies: list[str]  # scored proxies, then ensembles
    ensembles: dict[str, list[str]]
    targets: list[str]
    seeds: list[int]
    scores: Scores
    truth: dict[str, dict[str, float]]  # target -> arch -> accuracy
    seconds_per_arch: dict[str, float] = field(default_factory=dict)  # exclusive, per evaluation
    pass_seconds: dict[str, float] = field(default_factory=dict)  # shared passes, per evaluation
    total_seconds_per_arch: float = math.nan  # everything, per (architecture, seed)
    correlations: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0
    shard: tuple[int, int] | None = None

    def column(self, proxy: str, seed: int) -> list[float]:
        """One seed's values of ``proxy`` (an ensemble: its rank average) in ``archs`` order."""
        if proxy in self.ensembles:
            return rank_average({m: self.column(m, seed) for m in self.ensembles[proxy]})
        return [self.scores[a][seed][proxy] for a in self.archs]

    def mean_column(self, proxy: str) -> list[float]:
        """Seed-mean values of ``proxy`` (NaN when any seed is non-finite)."""
        cols = np.array([self.column(proxy, s) for s in self.seeds], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return cols.mean(axis=0).tolist()

    def table(self, target: str | None = None) -> str:
        """Markdown tables, one per target: proxies as rows, sorted by mean Kendall."""
        return "\n\n".join(self._table(t) for t in ([target] if target else self.targets))

    def _table(self, target: str) -> str:
        rows = [c for c in self.correlations if c["target"] == target]
        rows.sort(key=lambda c: -nan_low(c["kendall"]))
        with_ref = any("reference_kendall" in c for c in rows)
        evals = len(self.archs) * len(self.seeds)
        seeds = f"{len(self.seeds)} seed" + (
            "s, mean ± std over seeds" if len(self.seeds) > 1 else ""
        )
        title = f"**{self.space} / {target}**: {len(self.archs)} architectures, {seeds}"
        if self.shard:
            title += f" (shard {self.shard[0]}/{self.shard[1]} only)"
        head = [
            "proxy",
            "Kendall",
            "Spearman",
            "Pearson",
            "P@top5%",
            "BR@5%",
            f"non-finite (of {evals})",
            "s/arch",
        ]
        if with_ref:
            head.append("reference Kendall (cells)")
        lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in rows:
            cells = [f"`{c['proxy']}`"]
            for key in STATS:
                digits = 0 if key == "best_rank_at_top" else 3
                cells.append(_pm(c[key], c[f"{key}_std"], digits))
            cells.append(str(int(c["n_nonfinite"])))
            sec = self.seconds_per_arch.get(c["proxy"])
            cells.append("" if sec is None else f"{sec:.3f}")
            if with_ref:
                ref = c.get("reference_kendall")
                cells.append(
                    ""
                    if ref is None
                    else f"{ref:.3f} ({c['reference_source']}, {c['reference_n']})"
                )
            lines.append("| " + " | ".join(cells) + " |")
        if self.pass_seconds:
            shared = ", ".join(f"{k} {v:.3f}" for k, v in self.pass_seconds.items())
            lines += [
                "",
                f"s/arch: seconds per (architecture, seed), the proxy's own work; shared passes "
                f"(s/arch): {shared}; everything: {self.total_seconds_per_arch:.2f} s/arch.",
            ]
        return "\n".join(lines)


def nan_low(x: float) -> float:
    """``x``, or minus infinity when it is not finite (sorts NaN correlations last)."""
    return -math.inf if not math.isfinite(x) else x


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "nan"
    # A std that rounds to zero (e.g. float noise of identical seeds) is not shown.
    if round(std, digits) == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def correlate_all(result: RankResult) -> list[dict]:
    """Per proxy and target: each statistic per seed, then mean and population std over seeds.

    ``n_nonfinite`` counts non-finite scores over all (architecture, seed) pairs.
    """
    rows = []
    for proxy in result.proxies:
        sign = 1.0 if proxy in result.ensembles else get_proxy(proxy).sign
        columns = {s: np.asarray(result.column(proxy, s), dtype=np.float64) for s in result.seeds}
        for target in result.targets:
            true = np.array([result.truth[target][a] for a in result.archs])
            per_seed = [rankstats.correlate(columns[s] * sign, true) for s in result.seeds]
            row: dict = {"proxy": proxy, "target": target}
            for key in STATS:
                mean, std = rankstats.mean_std([c[key] for c in per_seed])
                row[key], row[f"{key}_std"] = mean, std
            row["n"] = int(per_seed[0]["n"])
            row["n_nonfinite"] = int(sum(c["n_nonfinite"] for c in per_seed))
            row["seeds"] = len(result.seeds)
            rows.append(row)
    return rows
