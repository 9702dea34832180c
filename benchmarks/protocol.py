"""The honest protocol for DisWOT-X: choose on a development split, report on held-out data only.

Run ``python benchmarks/protocol.py [--reduced]``. Stages:

1. **Measure** (cached): for every (job, architecture, seed) one probe is scored and its raw parts
   are appended to ``<cache>/<job>.jsonl``: params, FLOPs, the DisWOT score and its components,
   NASWOT's log-det, SynFlow and the DisWOT-X parts (:func:`diswot.proxies.diswotx.xparts`). A
   rerun reads the cache and computes only what is missing, so an interrupted run resumes.
2. **Development** (``dev``): NB201 CIFAR-10, the fixed 500-cell sample ``nb201_sample(500, 0)``.
   Every candidate rule in :data:`CANDIDATES` is scored there; this table is how the frozen rule
   (:func:`diswot.proxies.diswotx.combine`) was chosen. Nothing else was looked at to choose it.
3. **Held-out**: S1 (all 64 students, KD and vanilla targets), NB201 CIFAR-100 and ImageNet16-120 on
   cells drawn (rng seed 1) from the 15,125 cells *not* in the development sample. Kendall,
   Spearman, P@top-5% and BR@5% are computed per seed and shown as mean +- std over seeds; the
   S1 within-budget pick (params <= ResNet20's and FLOPs <= 40.82 M) is shown for every scorer.

The tables are printed and written between the ``PROTOCOL-TABLE-REDUCED`` (or ``-FULL``) markers of
``docs/protocol.md``.
Everything runs on CPU; ``--jobs dev,s1`` restricts the measuring to some jobs (to run several in
parallel processes), ``--no-measure`` only reports from the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from diswot import bench
from diswot.models import create_model
from diswot.proxies import get_proxy
from diswot.proxies.diswotx import XParts, combine, xparts
from diswot.rankstats import correlate
from diswot.scoring import Scorer
from diswot.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
BATCH = 32
DEV_CELLS = 500
RESNET20_PARAMS = 278_324
FLOPS_BUDGET = 40.82e6


@dataclass(frozen=True)
class Job:
    """One measured population: a space, a dataset/target, a teacher and an architecture list."""

    name: str
    space: str
    dataset: str
    teacher: str
    num_classes: int
    image_size: int
    seeds: tuple[int, ...]


def heldout_cells(n: int) -> list[str]:
    """``n`` NB201 cells disjoint from the development sample (prefix-stable: 300 is in 1000)."""
    dev = set(bench.nb201_sample(DEV_CELLS, 0))
    order = bench.nb201_sample(bench.NB201_SIZE, 1)
    return [a for a in order if a not in dev][:n]


def plan(reduced: bool) -> list[tuple[Job, list[str]]]:
    n_held = 300 if reduced else 1000
    held = heldout_cells(n_held)
    s1 = sorted(bench.s1_accuracy("kd"))
    # CPU budget: the full run covers 1000 held-out cells with one seed; the reduced run 300 cells
    # (a prefix of the same list) with two seeds, for the spread over seeds.
    held_seeds = (0, 1) if reduced else (0,)
    return [
        (
            Job("dev", "nb201", "cifar10", "resnet56", 10, 32, (0,)),
            bench.nb201_sample(DEV_CELLS, 0),
        ),
        (Job("s1", "s1", "kd", "resnet110", 100, 32, (0, 1, 2)), s1),
        (Job("c100", "nb201", "cifar100", "resnet56", 100, 32, held_seeds), held),
        (Job("in16", "nb201", "ImageNet16-120", "resnet56", 120, 16, held_seeds), held),
    ]


def make_scorer(job: Job, seed: int) -> Scorer:
    sp = get_space(job.space)
    teacher = create_model(job.teacher, num_classes=job.num_classes)
    return Scorer(
        teacher,
        teacher_init="random",  # the paper's random teacher, as these figures were made
        num_classes=job.num_classes,
        batch_size=BATCH,
        seeds=(seed,),
        image_size=job.image_size,
        builder=sp.build,
        coster=lambda arch, k, size: sp.cost(arch, k, size[-1]),
    )


def measure_one(scorer: Scorer, arch: str, seed: int) -> dict:
    """Raw parts of one (arch, seed): the DisWOT-X forward first, so DisWOT reuses it."""
    probe = scorer.probe(arch, seed)
    t0 = time.perf_counter()
    parts = xparts(probe)
    d = probe.diswot
    t_x = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        syn = float(get_proxy("synflow").fn(probe))
    except (RuntimeError, ValueError):
        syn = math.nan
    cost = probe.cost
    return {
        "arch": arch,
        "seed": seed,
        "params": cost.params,
        "flops": cost.flops,
        "diswot": float(d["score"]),
        "ms": float(d["ms"]),
        "mr": float(d["mr"]),
        "synflow": syn,
        **{k: v for k, v in asdict(parts).items() if k not in ("log_params", "log_flops")},
        "sec_forward": t_x,
        "sec_synflow": time.perf_counter() - t0,
    }


def _num(v: object) -> float:
    """A cached number back to float: ``None`` is NaN and the +-1e308 stand-ins are +-inf."""
    if v is None:
        return math.nan
    x = float(v)  # type: ignore[arg-type]
    return math.copysign(math.inf, x) if abs(x) >= 1e300 else x


def load(path: Path) -> dict[tuple[str, int], dict]:
    out: dict[tuple[str, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["arch"], int(r["seed"]))] = r
    return out


def measure(
    job: Job, archs: list[str], cache: Path, reverse: bool = False
) -> dict[tuple[str, int], dict]:
    path = cache / f"{job.name}.jsonl"
    have = load(path)
    todo = [(a, s) for s in job.seeds for a in archs if (a, s) not in have]
    if reverse:  # a second process can work from the other end; load() drops duplicates
        todo.reverse()
    if todo:
        print(f"[{job.name}] measuring {len(todo)} of {len(archs) * len(job.seeds)}", flush=True)
    scorers: dict[int, Scorer] = {}
    t0 = time.perf_counter()
    with path.open("a") as fh:
        for i, (arch, seed) in enumerate(todo):
            if seed not in scorers:
                scorers[seed] = make_scorer(job, seed)
            rec = measure_one(scorers[seed], arch, seed)
            fh.write(json.dumps({k: _json(v) for k, v in rec.items()}) + "\n")
            fh.flush()
            have[(arch, seed)] = rec
            if (i + 1) % 50 == 0:
                rate = (time.perf_counter() - t0) / (i + 1)
                print(f"[{job.name}] {i + 1}/{len(todo)} ({rate:.2f} s each)", flush=True)
    return have


def _json(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def count_units(job: Job, arch: str) -> float:
    """ReLU units per sample of ``arch`` (the agreement kernel's diagonal; seed-independent)."""
    from diswot.proxies.activation import AgreementKernel

    sp = get_space(job.space)
    model = sp.build(arch, job.num_classes)
    model.train()
    mode = AgreementKernel(2)
    with torch.no_grad(), mode:
        model(torch.randn(2, 3, job.image_size, job.image_size))
    return float(mode.kernel[0, 0])


def add_units(job: Job, archs: list[str], rows: dict[tuple[str, int], dict], cache: Path) -> None:
    """Fill ``log_units`` of rows measured before the part existed, from a cached batch-2 pass."""
    path = cache / f"{job.name}-units.jsonl"
    units = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                units[r["arch"]] = r["units"]
    with path.open("a") as fh:
        for a in archs:
            if a not in units and any("log_units" not in rows[(a, s)] for s in job.seeds):
                units[a] = count_units(job, a)
                fh.write(json.dumps({"arch": a, "units": units[a]}) + "\n")
    for a in archs:
        for s in job.seeds:
            r = rows[(a, s)]
            if "log_units" not in r or r["log_units"] is None:
                r["log_units"] = math.log(units[a]) if units[a] > 0 else None


def _parts(r: dict) -> XParts:
    nwot = _num(r["nwot"])
    nwot = -math.inf if nwot <= -1e300 else nwot
    return XParts(
        log_params=math.log(r["params"]),
        log_flops=math.log(r["flops"]),
        nwot=nwot,
        expr=nwot / r["batch"],
        cka=_num(r["cka"]),
        batch=int(r["batch"]),
        log_units=_num(r.get("log_units")),
    )


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


#: Per-candidate rules compared on the development split (sums of fixed log-scale parts).
CANDIDATES: dict[str, Callable[[XParts, dict], float]] = {
    "logP+logF": lambda p, r: p.log_params + p.log_flops,
    "expr": lambda p, r: p.expr,
    "cka": lambda p, r: p.cka,
    "logP+expr": lambda p, r: p.log_params + p.expr,
    "logP+logCKA": lambda p, r: p.log_params + _log(p.cka),
    "expr+logCKA": lambda p, r: p.expr + _log(p.cka),
    "logP+expr+logCKA": lambda p, r: p.log_params + p.expr + _log(p.cka),
    "logP+logF+expr+logCKA": lambda p, r: p.log_params + p.log_flops + p.expr + _log(p.cka),
    "logP+expr+diswot": lambda p, r: p.log_params + p.expr + r["diswot"],
    "logP+expr+log(1-Mr N/4)": lambda p, r: p.log_params + p.expr + _log(1 - r["mr"] * p.batch / 4),
    # Added after the first S1 (held-out) table had been printed; see docs/protocol.md.
    "dec": lambda p, r: p.decorrelation,
    "logP+dec": lambda p, r: p.log_params + p.decorrelation,
    "logP+dec+logCKA": lambda p, r: p.log_params + p.decorrelation + _log(p.cka),
}

#: Population (rank) forms: ``name -> parts``; scored by :func:`log_rank_sum` within the ranked set.
POPULATION: dict[str, dict[str, Callable[[XParts, dict], float]]] = {
    "ranks(P,expr,CKA)": {
        "p": lambda p, r: p.log_params,
        "e": lambda p, r: p.expr,
        "c": lambda p, r: p.cka,
    },
}
CANDIDATES.update({name: (lambda p, r: math.nan) for name in POPULATION})

#: The candidates that use all three kinds of part (size, expressivity, teacher); the frozen rule is
#: the one of these with the best development Kendall.
ELIGIBLE = (
    "logP+expr+logCKA",
    "logP+logF+expr+logCKA",
    "logP+expr+diswot",
    "logP+expr+log(1-Mr N/4)",
    "logP+dec+logCKA",
)
#: The candidate that :func:`diswot.proxies.diswotx.combine` implements.
FROZEN = "logP+expr+logCKA"

#: Columns of the reported (held-out) tables: baselines and the frozen DisWOT-X rule.
REPORTED: dict[str, Callable[[XParts, dict], float]] = {
    "params": lambda p, r: float(r["params"]),
    "flops": lambda p, r: float(r["flops"]),
    "nwot": lambda p, r: p.nwot,
    "synflow": lambda p, r: _num(r["synflow"]),
    "diswot": lambda p, r: float(r["diswot"]),
    "diswot-x": lambda p, r: combine(p),
    "ranks(P,expr,CKA)": CANDIDATES["ranks(P,expr,CKA)"],
}


def columns(
    rules: dict[str, Callable[[XParts, dict], float]],
    rows: dict[tuple[str, int], dict],
    archs: list[str],
    seed: int,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, fn in rules.items():
        if name in POPULATION:
            out[name] = log_rank_sum(
                [columns({m: fn_m}, rows, archs, seed)[m] for m, fn_m in POPULATION[name].items()]
            )
            continue
        vals = []
        for a in archs:
            r = rows[(a, seed)]
            vals.append(float(fn(_parts(r), r)))
        out[name] = vals
    return out


def log_rank_sum(cols: list[list[float]]) -> list[float]:
    """Population form: sum over parts of ln(rank), rank 1 = worst; non-finite values rank lowest.

    The log makes a part's vote saturate at the top (being 1st vs 2nd matters less than being
    last vs median), so one part cannot lift a candidate the others place at the bottom.
    """
    total = np.zeros(len(cols[0]))
    for c in cols:
        v = np.asarray(c, dtype=np.float64)
        v = np.where(np.isfinite(v), v, -np.inf)
        total += np.log(rankdata(v, method="average"))
    return total.tolist()


def evaluate(
    rules: dict[str, Callable[[XParts, dict], float]],
    rows: dict[tuple[str, int], dict],
    archs: list[str],
    seeds: tuple[int, ...],
    truth: dict[str, float],
) -> dict[str, dict[str, tuple[float, float]]]:
    """Statistic -> (mean, std) over seeds, per rule."""
    t = [truth[a] for a in archs]
    per: dict[str, list[dict]] = {n: [] for n in rules}
    for s in seeds:
        for name, col in columns(rules, rows, archs, s).items():
            per[name].append(correlate(col, t))
    out = {}
    for name, stats in per.items():
        out[name] = {
            k: (float(np.mean([x[k] for x in stats])), float(np.std([x[k] for x in stats])))
            for k in ("kendall", "spearman", "precision_at_top", "best_rank_at_top")
        }
    return out


def _fmt(ms: tuple[float, float], digits: int = 3) -> str:
    m, s = ms
    return f"{m:.{digits}f} +- {s:.{digits}f}" if s > 1e-9 else f"{m:.{digits}f}"


def table(title: str, res: dict[str, dict[str, tuple[float, float]]], n: int, seeds: int) -> str:
    lines = [
        f"**{title}** ({n} architectures, {seeds} seed{'s' if seeds > 1 else ''})",
        "",
        "| scorer | Kendall | Spearman | P@top-5% | BR@5% |",
        "|---|---|---|---|---|",
    ]
    for name, st in res.items():
        lines.append(
            f"| {name} | {_fmt(st['kendall'])} | {_fmt(st['spearman'])} | "
            f"{_fmt(st['precision_at_top'], 2)} | {_fmt(st['best_rank_at_top'], 1)} |"
        )
    return "\n".join(lines)


def s1_picks(rows: dict[tuple[str, int], dict], archs: list[str], seeds: tuple[int, ...]) -> str:
    """Within-budget pick of each scorer (seed-averaged score) and its KD / vanilla accuracy."""
    kd, cls = bench.s1_accuracy("kd"), bench.s1_accuracy("cls")
    ok = [
        a
        for a in archs
        if rows[(a, seeds[0])]["params"] <= RESNET20_PARAMS
        and rows[(a, seeds[0])]["flops"] <= FLOPS_BUDGET
    ]
    best = max(ok, key=lambda a: kd[a])
    lines = [
        f"**S1 within budget** (params <= {RESNET20_PARAMS:,}, FLOPs <= 40.82 M: {len(ok)} "
        f"students; best possible KD pick {best} at {kd[best]:.2f}%)",
        "",
        "| scorer | pick | KD acc | vanilla acc | picks per seed |",
        "|---|---|---|---|---|",
    ]
    for name in REPORTED:
        per_seed = []
        for s in seeds:
            col = columns({name: REPORTED[name]}, rows, ok, s)[name]
            per_seed.append(ok[int(np.nanargmax(np.where(np.isfinite(col), col, -np.inf)))])
        mean = np.mean([columns({name: REPORTED[name]}, rows, ok, s)[name] for s in seeds], axis=0)
        pick = ok[int(np.argmax(np.where(np.isfinite(mean), mean, -np.inf)))]
        lines.append(
            f"| {name} | {pick} | {kd[pick]:.2f} | {cls[pick]:.2f} | {', '.join(per_seed)} |"
        )
    return "\n".join(lines)


def overhead(n: int = 20) -> str:
    """Per-candidate cost of DisWOT-X against DisWOT alone: interleaved timings on ``n`` dev cells.

    Interleaving (DisWOT, then DisWOT-X+DisWOT, on each cell in turn) keeps the comparison fair on a
    shared machine whose load drifts during the run.
    """
    job = plan(True)[0][0]
    archs = bench.nb201_sample(DEV_CELLS, 0)[:n]
    scorer = make_scorer(job, 0)
    scorer.teacher(0)
    t_d = t_x = 0.0
    for a in archs:
        t0 = time.perf_counter()
        _ = scorer.probe(a, 0).diswot
        t_d += time.perf_counter() - t0
        t0 = time.perf_counter()
        probe = scorer.probe(a, 0)
        xparts(probe)
        _ = probe.diswot
        t_x += time.perf_counter() - t0
    return (
        f"Cost per candidate (NB201 CIFAR-10, batch {BATCH}, {n} cells, CPU, 1 thread, build + "
        f"init + forward): DisWOT {t_d / n:.3f} s, DisWOT-X with DisWOT {t_x / n:.3f} s "
        f"(x{t_x / t_d:.2f})."
    )


def cost_line(rows: dict[tuple[str, int], dict]) -> str:
    fw = np.mean([r["sec_forward"] for r in rows.values()])
    sy = np.mean([r["sec_synflow"] for r in rows.values()])
    return (
        f"mean seconds per (cell, seed), CPU, 1 thread: DisWOT-X+DisWOT forward {fw:.3f}, "
        f"SynFlow {sy:.3f}"
    )


def report(results: dict[str, tuple[Job, list[str], dict]], reduced: bool) -> str:
    out = [
        f"Generated by `python benchmarks/protocol.py{' --reduced' if reduced else ''}`; "
        f"probe batch {BATCH}, synthetic N(0,1) inputs (the CLI default is 64), "
        "N(0,1) init (the default).",
        "",
    ]
    if "dev" in results:
        job, archs, rows = results["dev"]
        truth = bench.nb201_accuracy(job.dataset)
        res = evaluate({**REPORTED, **CANDIDATES}, rows, archs, job.seeds, truth)
        out += [
            table("Development: NB201 CIFAR-10, nb201_sample(500, 0)", res, len(archs), 1),
            "",
        ]
        out += [cost_line(rows), "", overhead(), ""]
        choice = max(ELIGIBLE, key=lambda n: res[n]["kendall"][0])
        same = "matches" if choice == FROZEN else "DOES NOT match"
        out += [
            f"Development choice among {', '.join(ELIGIBLE)}: **{choice}**; the frozen rule "
            f"`diswot-x` = {FROZEN} {same} it.",
            "",
        ]
    for key, title in (
        ("s1", "Held-out: S1 vs KD accuracy"),
        ("s1cls", "Held-out: S1 vs vanilla accuracy"),
        ("c100", "Held-out: NB201 CIFAR-100"),
        ("in16", "Held-out: NB201 ImageNet16-120"),
    ):
        src = "s1" if key == "s1cls" else key
        if src not in results:
            continue
        job, archs, rows = results[src]
        if job.space == "s1":
            truth = bench.s1_accuracy("cls" if key == "s1cls" else "kd")
        else:
            truth = bench.nb201_accuracy(job.dataset)
        res = evaluate(REPORTED, rows, archs, job.seeds, truth)
        out += [table(title, res, len(archs), len(job.seeds)), ""]
        if key == "s1":
            out += [s1_picks(rows, archs, job.seeds), ""]
    out += [verdict(results)]
    return "\n".join(out)


def verdict(results: dict[str, tuple[Job, list[str], dict]]) -> str:
    """The issue's default rule: beat params (Kendall) on S1 KD, NB201 CIFAR-100 and ImageNet16-120."""
    lines, wins = [], []
    for key in ("s1", "c100", "in16"):
        if key not in results:
            lines.append(f"- {key}: not measured")
            wins.append(False)
            continue
        job, archs, rows = results[key]
        truth = bench.s1_accuracy("kd") if key == "s1" else bench.nb201_accuracy(job.dataset)
        res = evaluate(REPORTED, rows, archs, job.seeds, truth)
        x, p = res["diswot-x"]["kendall"][0], res["params"]["kendall"][0]
        wins.append(x > p)
        lines.append(
            f"- {key} ({len(archs)} archs): diswot-x Kendall {x:.3f} vs params {p:.3f} "
            f"({'beats' if x > p else 'does NOT beat'} params, {x - p:+.3f})"
        )
    head = (
        "**Verdict: diswot-x beats params on all three; it earns the default.**"
        if all(wins)
        else "**Verdict: diswot-x does not beat params everywhere; DisWOT stays the default.**"
    )
    return "\n".join([head, "", *lines])


def write_doc(text: str, reduced: bool) -> None:
    """Replace the reduced or full table section of ``docs/protocol.md`` (markers are kept)."""
    tag = "PROTOCOL-TABLE-REDUCED" if reduced else "PROTOCOL-TABLE-FULL"
    begin, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    doc = DOC.read_text() if DOC.exists() else f"# Protocol\n\n{begin}\n{end}\n"
    if begin not in doc or end not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reduced", action="store_true", help="300 held-out cells instead of 1000")
    ap.add_argument("--jobs", default="dev,s1,c100,in16", help="comma-separated jobs to measure")
    ap.add_argument("--no-measure", action="store_true", help="report from the cache only")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "protocol"), help="jsonl cache folder")
    ap.add_argument("--reverse", action="store_true", help="measure the missing rows last-first")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/protocol.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = set(args.jobs.split(","))
    results = {}
    for job, archs in plan(args.reduced):
        if job.name not in wanted:
            continue
        if args.no_measure:
            rows = load(cache / f"{job.name}.jsonl")
            if any((a, s) not in rows for s in job.seeds for a in archs):
                print(f"[{job.name}] incomplete cache, skipped", file=sys.stderr)
                continue
        else:
            rows = measure(job, archs, cache, args.reverse)
        add_units(job, archs, rows, cache)
        results[job.name] = (job, archs, rows)
    text = report(results, args.reduced)
    print(text)
    if not args.no_doc and args.jobs == "dev,s1,c100,in16":
        write_doc(text, args.reduced)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
