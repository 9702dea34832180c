"""The files a rank run leaves for people: ``scores.csv`` (one row per architecture),
``correlations.json``, ``table.md`` and ``scatter.png``."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from diswot.proxies import get_proxy
from diswot.rank.result import RankResult, nan_low
from diswot.runfolder import atomic_write_bytes, atomic_write_text


def write_outputs(result: RankResult) -> None:
    """scores.csv (one row per architecture), correlations.json, table.md and scatter.png."""
    out = result.out_dir
    assert out is not None
    atomic_write_text(out / "scores.csv", scores_csv(result))
    atomic_write_text(out / "correlations.json", json.dumps(result.correlations, indent=2))
    atomic_write_text(out / "table.md", result.table() + "\n")
    plot_scatter(result, out / "scatter.png")


def scores_csv(result: RankResult) -> str:
    """Seed-mean score of every proxy per architecture, per-seed columns when there are several
    seeds, and the targets' accuracies."""
    many = len(result.seeds) > 1
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    seed_cols = [(p, s) for p in result.proxies for s in result.seeds] if many else []
    w.writerow(
        [
            "arch",
            *result.proxies,
            *(f"{p}@seed{s}" for p, s in seed_cols),
            *(f"acc_{t}" for t in result.targets),
        ]
    )
    means = {p: result.mean_column(p) for p in result.proxies}
    per_seed = {(p, s): result.column(p, s) for p, s in seed_cols}
    for i, a in enumerate(result.archs):
        w.writerow(
            [
                a,
                *(_csv(means[p][i]) for p in result.proxies),
                *(_csv(per_seed[k][i]) for k in seed_cols),
                *(result.truth[t][a] for t in result.targets),
            ]
        )
    return fh.getvalue()


def _csv(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else "nan"


def plot_scatter(result: RankResult, path: Path) -> None:
    """A grid with one panel per proxy: seed-mean score against the first target's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = result.targets[0]
    corr = {c["proxy"]: c for c in result.correlations if c["target"] == target}
    order = sorted(result.proxies, key=lambda p: -nan_low(corr[p]["kendall"]))
    n = len(order)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.7 * rows), squeeze=False)
    true = np.array([result.truth[target][a] for a in result.archs])
    for ax, proxy in zip(axes.flat, order):
        pred = np.array(result.mean_column(proxy))
        ok = np.isfinite(pred)
        ax.scatter(pred[ok], true[ok], s=7, alpha=0.6)
        bad = f", {int((~ok).sum())} non-finite" if (~ok).any() else ""
        low = proxy not in result.ensembles and get_proxy(proxy).sign < 0
        arrow = " (lower better)" if low else ""
        ax.set_title(f"{proxy}{arrow}  τ={corr[proxy]['kendall']:.2f}{bad}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_offset_text().set_fontsize(6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supylabel(f"{target} accuracy (%)", fontsize=9)
    fig.suptitle(f"{result.space}: proxy score vs {target} accuracy", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
