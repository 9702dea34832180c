"""The published zero-cost scores reproduced: raw terms per architecture, correlations, cost.

Run ``OMP_NUM_THREADS=1 python benchmarks/sota_proxies.py [--jobs dev,c100,in16,s1] [--families
az,vkdnw,...] [--limit N] [--limit-vkdnw N]`` to measure, ``--report`` to print the tables.

**Measure** (cached, resumable): every (job, architecture, family) is one line of
``benchmarks/results/sota/<job>.jsonl`` (a :class:`~diswot.runfolder.Journal`: fsynced per line, a
torn last line cut on the next read), holding the family's RAW term values (not ranks), any extra
raw quantities (every SWAP draw, the entropy of the Fisher information proper next to the release's
VKDNW), the family's seconds and, measured on the same student just before, the seconds of one
train-mode forward+backward of the cross-entropy at the probe batch (``base_seconds``, on every
:data:`BASE_EVERY`-th record). A rerun
computes only what is missing, so the lead can extend a job with a larger ``--limit``. Families:

======  ===========================================================================
base    params, FLOPs (the AZ-NAS complexity term) and the forward+backward time
az      az_expressivity, az_progressivity, az_trainability (one pass)
vkdnw   vkdnw, trainable_layers, vkdnw_single (one Fisher pass)
jacov   vkdnw_jacov
meco    meco
swap    swap (+ every draw's count)
zico    zico
======  ===========================================================================

Jobs (synthetic N(0, 1) probe batch of 64, seed 0, the probe's classes = the target's):

* ``dev``: NB201, the development split ``nb201_sample(500, 0)``, CIFAR-10 (10 classes, 32 px);
* ``c100``, ``in16``: NB201, the first 300 held-out cells of ``protocol.heldout_cells``, CIFAR-100
  (100 classes, 32 px) and ImageNet16-120 (120 classes, 16 px);
* ``s1``: the 64 S1 students (100 classes, 32 px), targets KD and plain (``cls``) CIFAR-100 accuracy.

**Report**: Kendall (with its bootstrap standard error over the architectures) and Spearman
(:func:`diswot.rankstats.correlate`) of every term and of the papers' aggregates (``az_nas``, ``vkdnw_agg``: :mod:`diswot.proxies.aggregate`, computed on the architectures
that have every term) per target; ``swap_reg`` with the registered ``SWAP_MU``/``SWAP_SIGMA``; a
grid of those two on the development split only (``--choose-swap``); and the cost table: median
seconds per candidate of each family next to the forward+backward of the same students; and, for
the NB201 jobs, FLOPs' Kendall on the job's cells next to all 15,625 cells (how typical the sample
is, since the papers report on the whole space).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from protocol import heldout_cells

from diswot import bench
from diswot.proxies import swap as swap_module
from diswot.proxies._shared import first_tensor
from diswot.proxies.aggregate import PAPER_AGGREGATES, paper_aggregate
from diswot.proxies.swap import swap_counts
from diswot.proxies.vkdnw import fisher_spectrum
from diswot.rankstats import correlate
from diswot.runfolder import Journal, json_float
from diswot.scoring import Scorer, proxy_value
from diswot.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "results" / "sota"
BATCH = 64
SEED = 0
#: The forward+backward baseline is timed on every this many-th record of a family (it would
#: otherwise add a third to the cheap families' cost).
BASE_EVERY = 5

FAMILIES: dict[str, tuple[str, ...]] = {
    "base": (),
    "az": ("az_expressivity", "az_progressivity", "az_trainability"),
    "vkdnw": ("vkdnw", "trainable_layers", "vkdnw_single"),
    "jacov": ("vkdnw_jacov",),
    "meco": ("meco",),
    "swap": ("swap",),
    "zico": ("zico",),
}


@dataclass
class Job:
    """One measured population: a space, the probe's classes and resolution, its targets."""

    space: str
    num_classes: int
    image_size: int
    archs: list[str]
    targets: dict[str, dict[str, float]] = field(default_factory=dict)


def jobs() -> dict[str, Job]:
    held = heldout_cells(300)
    s1 = sorted(bench.s1_accuracy("kd"))
    return {
        "dev": Job(
            "nb201",
            10,
            32,
            bench.nb201_sample(500, 0),
            {"cifar10": bench.nb201_accuracy("cifar10")},
        ),
        "c100": Job("nb201", 100, 32, held, {"cifar100": bench.nb201_accuracy("cifar100")}),
        "in16": Job(
            "nb201", 120, 16, held, {"ImageNet16-120": bench.nb201_accuracy("ImageNet16-120")}
        ),
        "s1": Job("s1", 100, 32, s1, {t: bench.s1_accuracy(t) for t in ("kd", "cls")}),
    }


# ------------------------------------------------------------------------------------ measure


def fwd_bwd_seconds(scorer: Scorer, arch: str) -> float:
    """One train-mode forward+backward of the cross-entropy at the probe batch (default init)."""
    probe = scorer.probe(arch, SEED)
    model = probe.fresh_model()
    model.train()
    t0 = time.perf_counter()
    with torch.enable_grad():
        loss = F.cross_entropy(first_tensor(model(probe.inputs)), probe.labels)
        torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return time.perf_counter() - t0


def measure_one(scorer: Scorer, arch: str, family: str, time_base: bool) -> dict:
    base = fwd_bwd_seconds(scorer, arch) if time_base else None
    probe = scorer.probe(arch, SEED)
    t0 = time.perf_counter()
    values = {t: proxy_value(t, probe) for t in FAMILIES[family]}
    extra: dict = {}
    if family == "base":
        values = {"params": float(probe.cost.params), "flops": float(probe.cost.flops)}
    elif family == "vkdnw" and math.isfinite(values["vkdnw"]):
        extra["vkdnw_fisher_proper"] = json_float(fisher_spectrum(probe).entropy_fisher)
    elif family == "swap" and math.isfinite(values["swap"]):
        extra["swap_draws"] = swap_counts(probe)
    seconds = time.perf_counter() - t0
    return {
        "arch": arch,
        "family": family,
        "values": {k: json_float(v) for k, v in values.items()},
        "extra": extra,
        "seconds": seconds,
        "base_seconds": base,
    }


def measure(name: str, job: Job, families: list[str], limit: int, limit_vkdnw: int) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    journal = Journal(CACHE / f"{name}.jsonl")
    done = {(r["arch"], r["family"]) for r in journal.read()}
    space = get_space(job.space)
    scorer = Scorer.for_space(
        space,
        None,
        num_classes=job.num_classes,
        batch_size=BATCH,
        seeds=(SEED,),
        image_size=job.image_size,
    )
    with journal:
        for fam in families:
            n = min(limit, limit_vkdnw) if fam == "vkdnw" else limit
            todo = [a for a in job.archs[:n] if (a, fam) not in done]
            t0 = time.perf_counter()
            for i, arch in enumerate(todo):
                journal.append(measure_one(scorer, arch, fam, i % BASE_EVERY == 0))
                if (i + 1) % 25 == 0 or i + 1 == len(todo):
                    rate = (time.perf_counter() - t0) / (i + 1)
                    print(f"{name} {fam}: {i + 1}/{len(todo)} ({rate:.2f} s each)", flush=True)


# ------------------------------------------------------------------------------------- report


def load(name: str) -> dict[str, dict]:
    """arch -> {"values": merged term values, "extra": ..., "seconds": {family: (s, base)}}."""
    rows: dict[str, dict] = {}
    for r in Journal(CACHE / f"{name}.jsonl").read():
        row = rows.setdefault(r["arch"], {"values": {}, "extra": {}, "seconds": {}})
        row["values"].update(
            {k: math.nan if v is None else float(v) for k, v in r["values"].items()}
        )
        row["extra"].update(r.get("extra", {}))
        row["seconds"][r["family"]] = (r["seconds"], r["base_seconds"])
    return rows


def swap_reg(values: dict, mu: float, sigma: float) -> float:
    params_k = values["params"] / 1e3
    return values["swap"] * math.exp(-((params_k - mu) ** 2) / sigma)


def columns(rows: dict[str, dict], archs: list[str]) -> dict[str, list[float]]:
    """Every term's column over ``archs`` (which all have it), plus swap_reg and the aggregates."""
    names = sorted(set.intersection(*(set(rows[a]["values"]) for a in archs)))
    cols = {k: [rows[a]["values"].get(k, math.nan) for a in archs] for k in names}
    if {"swap", "params"} <= set(cols):
        mu, sigma = swap_module.SWAP_MU, swap_module.SWAP_SIGMA
        cols["swap_reg"] = [swap_reg(rows[a]["values"], mu, sigma) for a in archs]
    if all("vkdnw_fisher_proper" in rows[a]["extra"] for a in archs) and archs:
        cols["vkdnw_fisher_proper"] = [
            math.nan if (v := rows[a]["extra"]["vkdnw_fisher_proper"]) is None else v for a in archs
        ]
    for agg, terms in PAPER_AGGREGATES.items():
        if set(terms) <= set(cols):
            cols[agg] = paper_aggregate(agg, cols)
    return cols


def _complete(rows: dict[str, dict], job: Job, need: set[str]) -> list[str]:
    return [a for a in job.archs if a in rows and need <= set(rows[a]["values"])]


def bootstrap_se(pred: list[float], true: list[float], draws: int = 200) -> float:
    """Standard error of Kendall's tau over resamples of the architectures (seeded)."""
    rng = np.random.default_rng(0)
    p, t = np.asarray(pred), np.asarray(true)
    taus = [correlate(p[i], t[i])["kendall"] for i in rng.integers(0, len(p), (draws, len(p)))]
    return float(np.std(taus))


def population_check(job: Job) -> list[str]:
    """FLOPs' Kendall on the job's cells and on all 15,625 NB201 cells: how typical the sample is."""
    if job.space != "nb201":
        return []
    space = get_space(job.space)
    out = []
    for target, acc in job.targets.items():
        for label, archs in (("sample", job.archs), ("all cells", bench.nb201_archs())):
            flops = [space.cost(a, job.num_classes, job.image_size).flops for a in archs]
            c = correlate(flops, [acc[a] for a in archs])
            out.append(
                f"| {target} | {label} | {len(archs)} | {c['kendall']:.3f} | {c['spearman']:.3f} |"
            )
    return out


def correlation_table(name: str, job: Job, rows: dict[str, dict]) -> list[str]:
    """Markdown rows ``| job | target | term | n | kendall | spearman |`` for every term/aggregate."""
    out = []
    cheap = {t for f, ts in FAMILIES.items() if f != "vkdnw" for t in ts} | {"params", "flops"}
    groups = [_complete(rows, job, cheap), _complete(rows, job, cheap | set(FAMILIES["vkdnw"]))]
    seen: set[tuple[str, str, int]] = set()  # a smaller complete subset repeats every term
    for archs in groups:
        if len(archs) < 10:
            continue
        cols = columns(rows, archs)
        for target, acc in job.targets.items():
            truth = [acc[a] for a in archs]
            for term, col in cols.items():
                if (target, term, len(archs)) in seen:
                    continue
                seen.add((target, term, len(archs)))
                c = correlate(col, truth)
                out.append(
                    f"| {name} | {target} | {term} | {len(archs)} | "
                    f"{c['kendall']:.3f} | {bootstrap_se(col, truth):.3f} | {c['spearman']:.3f} |"
                )
    return out


def cost_table(name: str, rows: dict[str, dict]) -> list[str]:
    out = []
    for fam in FAMILIES:
        pairs = [r["seconds"][fam] for r in rows.values() if fam in r["seconds"]]
        pairs = [(s, b) for s, b in pairs if b is not None]
        if not pairs or fam == "base":
            continue
        sec = statistics.median(s for s, _ in pairs)
        base = statistics.median(b for _, b in pairs)
        ratio = statistics.median(s / b for s, b in pairs)
        out.append(f"| {name} | {fam} | {len(pairs)} | {sec:.3f} | {base:.3f} | {ratio:.1f} |")
    return out


def choose_swap(rows: dict[str, dict], job: Job) -> list[str]:
    """Spearman of swap_reg on the development split over a grid of (mu, sigma), best first."""
    archs = [a for a in job.archs if a in rows and {"swap", "params"} <= set(rows[a]["values"])]
    truth = [job.targets["cifar10"][a] for a in archs]
    params_k = np.array([rows[a]["values"]["params"] / 1e3 for a in archs])
    results = []
    for mu in np.quantile(params_k, [0.5, 0.75, 0.9, 1.0]).tolist() + [1_500.0, 2_000.0, 3_000.0]:
        for sigma in (1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8):
            col = [swap_reg(rows[a]["values"], mu, sigma) for a in archs]
            results.append((correlate(col, truth)["spearman"], mu, sigma))
    results.sort(reverse=True)
    return [f"| {mu:.0f} | {sigma:.0e} | {s:.3f} |" for s, mu, sigma in results[:10]]


def swap_spread(rows: dict[str, dict]) -> str:
    """How far the mean of the stored draws moves a ranking: Kendall between two halves' means."""
    draws = [r["extra"]["swap_draws"] for r in rows.values() if "swap_draws" in r["extra"]]
    if len(draws) < 10 or len(draws[0]) < 2:
        return "too few SWAP draws stored"
    half = len(draws[0]) // 2
    a = [float(np.mean(d[:half])) for d in draws]
    b = [float(np.mean(d[half:])) for d in draws]
    cv = statistics.median(float(np.std(d) / np.mean(d)) for d in draws if np.mean(d) > 0)
    return (
        f"{len(draws)} archs x {len(draws[0])} draws: Kendall between the means of the two halves "
        f"{correlate(a, b)['kendall']:.3f}; median coefficient of variation over draws {cv:.4f}"
    )


def report(names: list[str], all_jobs: dict[str, Job], choose: bool) -> str:
    lines = [
        "| job | target | term | n | Kendall | ± (bootstrap SE) | Spearman |",
        "|---|---|---|---|---|---|---|",
    ]
    population = ["| target | FLOPs on | n | Kendall | Spearman |", "|---|---|---|---|---|"]
    cost = [
        "| job | family | n | s / candidate | fwd+bwd s | ratio (median) |",
        "|---|---|---|---|---|---|",
    ]
    extra = []
    for name in names:
        path = CACHE / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = load(name)
        lines += correlation_table(name, all_jobs[name], rows)
        cost += cost_table(name, rows)
        population += population_check(all_jobs[name])
        extra.append(f"{name}: {swap_spread(rows)}")
        if choose and name == "dev":
            extra += ["", "| mu (k params) | sigma | Spearman (dev) |", "|---|---|---|"]
            extra += choose_swap(rows, all_jobs[name])
    return "\n".join(lines + [""] + cost + [""] + population + [""] + extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="dev,c100,in16,s1")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--limit", type=int, default=10**9, help="architectures per job (a prefix)")
    ap.add_argument("--limit-vkdnw", type=int, default=10**9, help="a smaller prefix for vkdnw")
    ap.add_argument("--report", action="store_true", help="print the tables, measure nothing")
    ap.add_argument("--choose-swap", action="store_true", help="report the dev (mu, sigma) grid")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    all_jobs = jobs()
    names = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [n for n in names if n not in all_jobs]
    if unknown:
        sys.exit(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(all_jobs)}")
    if not args.report:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        for name in names:
            measure(name, all_jobs[name], families, args.limit, args.limit_vkdnw)
    print(report(names, all_jobs, args.choose_swap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
