"""Choosing the default objective: designed on the development split, chosen by a rule fixed in advance.

Run ``python benchmarks/default_rule.py`` after ``benchmarks/sota_proxies.py`` has measured its
cache (``benchmarks/results/sota/<job>.jsonl``: raw term values per architecture). Nothing is
scored here; the script only reads that cache, so it runs in seconds.

The rule, written before any held-out number was looked at (issue 17, items 4 and 5):

1. **Cost.** A candidate may cost at most 3x one train-mode forward+backward of the same student at
   the probe batch, per candidate. The cost of a term family is the median over the development
   cells of its measured seconds divided by that forward+backward (both in the cache, measured
   side by side on the same student); a composite costs the sum of its families (params and FLOPs
   are free: they are counted from shapes).
2. **Design, on the development split only** (NB201 CIFAR-10, the fixed 500-cell sample): every
   subset of the measured terms under the cost limit is aggregated the AZ-NAS way (the sum over
   terms of ``log`` of the term's rank / N) and scored by its Kendall tau there. The three best
   subsets, and the best one that contains a size term (params), become candidates.
3. **Choice, on held-out data:** among the candidates and the single terms, the default is the one
   with the best *mean* Kendall over the held-out targets measured: NB201 CIFAR-100 and
   ImageNet16-120 (the first 300 held-out cells), S1 KD and S1 plain-training accuracy (64 students).
   With ``--vit DIR`` (the ``--out`` of ``benchmarks/vit_rank.py score --proxies
   zico,meco,vkdnw_jacov,params --dataset c100``, batch 16, for ``--space pit`` and
   ``--space autoformer``), the PiT and AutoFormer CIFAR-100 KD targets vote too, for the candidates
   whose terms were measured there (AZ-NAS's and SWAP's were not: they are left out of that mean).

Aggregation here ranks within each evaluated set; the registered composite proxies rank each term
against a fixed reference sample of the space instead (``diswot.scoring.reference``), which is the
same ordering up to the sample's resolution and does not depend on the set being ranked.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr

from diswot import bench

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "results" / "sota"
MAX_COST = 3.0
#: The terms the cache holds for every architecture (VKDNW's Fisher entropy is measured on a few
#: cells only: at ~10x a forward+backward it is far over the cost limit).
TERMS = (
    "params",
    "az_expressivity",
    "az_progressivity",
    "az_trainability",
    "vkdnw_jacov",
    "meco",
    "swap",
    "zico",
)
FREE = {"params", "flops"}


def family(term: str) -> str:
    """The cache's measurement family of a term (one pass computes all of a family's terms)."""
    if term.startswith("az_"):
        return "az"
    return "jacov" if term == "vkdnw_jacov" else term


def load(job: str) -> tuple[dict[str, dict], dict[str, float]]:
    """A job's raw terms per architecture, and each family's cost (median seconds over one
    forward+backward of the same students)."""
    rows: dict[str, dict] = collections.defaultdict(dict)
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    with (CACHE / f"{job}.jsonl").open() as fh:
        for line in fh:
            r = json.loads(line)
            rows[r["arch"]].update(r["values"])
            if r.get("base_seconds"):
                seconds[r["family"]].append(r["seconds"] / r["base_seconds"])
    return dict(rows), {f: statistics.median(v) for f, v in seconds.items() if v}


def column(rows: dict[str, dict], archs: list[str], term: str) -> np.ndarray:
    c = np.array([np.nan if rows[a].get(term) is None else rows[a][term] for a in archs], float)
    return np.where(np.isfinite(c), c, -np.inf)


def aggregate(rows: dict[str, dict], archs: list[str], terms: tuple[str, ...]) -> np.ndarray:
    total = np.zeros(len(archs))
    for t in terms:
        c = column(rows, archs, t)
        total += np.log(rankdata(np.where(np.isfinite(c), c, -1e300)) / len(archs))
    return total


def cost(terms: tuple[str, ...], costs: dict[str, float]) -> float:
    return sum(costs[f] for f in {family(t) for t in terms} if f not in FREE)


def targets() -> dict[str, tuple[str, dict[str, float]]]:
    return {
        "NB201 C100": ("c100", bench.nb201_accuracy("cifar100")),
        "NB201 IN16": ("in16", bench.nb201_accuracy("ImageNet16-120")),
        "S1 KD": ("s1", bench.s1_accuracy("kd")),
        "S1 plain": ("s1", bench.s1_accuracy("cls")),
    }


def vit_targets(folder: Path) -> dict[str, tuple[dict[str, dict], dict[str, float]]]:
    """PiT and AutoFormer CIFAR-100 KD targets from ``vit_rank.py score`` runs in ``folder``."""
    from diswot.spaces import get_space

    out = {}
    for space, label in (("pit", "PiT KD"), ("autoformer", "AutoFormer KD")):
        path = folder / f"{space}-c100-b16" / "scores.jsonl"
        if not path.exists():
            continue
        rows: dict[str, dict] = collections.defaultdict(dict)
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[r["arch"]].update(r["values"])
        out[label] = (dict(rows), get_space(space).ground_truth("c100_kd"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--vit", default=None, help="vit_rank.py's --out folder (PiT, AutoFormer)")
    args = ap.parse_args(argv)
    dev, costs = load("dev")
    dev_acc = bench.nb201_accuracy("cifar10")
    archs = [a for a, v in dev.items() if all(t in v for t in TERMS)]
    y = np.array([dev_acc[a] for a in archs])

    designed = []
    for k in range(2, len(TERMS) + 1):
        for ts in itertools.combinations(TERMS, k):
            if cost(ts, costs) <= MAX_COST:
                tau = kendalltau(aggregate(dev, archs, ts), y).statistic
                designed.append((float(tau), ts))
    designed.sort(reverse=True)
    chosen = [ts for _, ts in designed[:3]]
    with_size = next(ts for _, ts in designed if "params" in ts)
    if with_size not in chosen:
        chosen.append(with_size)
    dev_tau = dict((ts, tau) for tau, ts in designed)

    candidates: dict[str, tuple[str, ...]] = {t: (t,) for t in TERMS}
    for ts in chosen:
        candidates["+".join(ts)] = ts
    held = {name: (load(job)[0], acc) for name, (job, acc) in targets().items()}
    if args.vit:
        held.update(vit_targets(Path(args.vit)))
    table = []
    for name, ts in candidates.items():
        row = {
            "candidate": name,
            "cost": cost(ts, costs),
            "dev": dev_tau[ts]
            if ts in dev_tau
            else kendalltau(aggregate(dev, archs, ts), y).statistic,
        }
        taus = []
        for tname, (rows, acc) in held.items():
            ok = [a for a, v in rows.items() if all(t in v for t in ts) and a in acc]
            if len(ok) < 10:  # a target where these terms were not measured
                row[tname] = None
                continue
            s = aggregate(rows, ok, ts)
            gt = np.array([acc[a] for a in ok])
            tau = float(kendalltau(s, gt).statistic)
            row[tname] = (tau, float(spearmanr(s, gt).statistic), len(ok))
            taus.append(tau)
        row["mean"] = float(np.mean(taus))
        row["voters"] = len(taus)
        table.append(row)
    most = max(r["voters"] for r in table)
    admissible = [r for r in table if r["cost"] <= MAX_COST and r["voters"] == most]
    default = max(admissible, key=lambda r: r["mean"])
    if args.json:
        print(json.dumps({"costs": costs, "table": table, "default": default["candidate"]}))
        return 0
    print(f"term costs (x one forward+backward, dev medians): {json.dumps(costs)}")
    print(f"dev cells: {len(archs)}; best designed subsets on dev:")
    for tau, ts in designed[:5]:
        print(f"  {tau:.3f}  {'+'.join(ts)}  (cost {cost(ts, costs):.2f}x)")
    names = list(held)
    print("\n| candidate | cost | dev C10 | " + " | ".join(names) + " | mean held-out |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    for r in sorted(table, key=lambda r: -r["mean"]):
        cells = " | ".join(f"{r[n][0]:.3f} ({r[n][1]:.3f})" if r[n] else "-" for n in names)
        print(
            f"| {r['candidate']} | {r['cost']:.2f}x | {r['dev']:.3f} | {cells} | {r['mean']:.3f} |"
        )
    print(f"\ndefault by the rule: {default['candidate']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
