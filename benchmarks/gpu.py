"""GPU throughput of DisWOT on NB201: per candidate, all 15,625 cells, and a 1,000-candidate search.

One script, sized to run once inside a short GPU lease (projected 6-8 minutes on an H100/H200
with 16 CPU cores; the first lease, with 4/8/15 workers, ran out at 8.4 minutes inside the full
pass). Every stage appends its figures to ``--out/gpu.json`` as soon as it ends, so a run cut short
still reports what it measured, and a stage that raises is recorded with its traceback while the
others still run. Stages:

1. ``serial_fresh_builds`` and ``serial``: the in-process path on the GPU with built networks
   (the ``modules`` engine; teacher ResNet-56 cached, batch 64, CIFAR-100 class count), first
   building every student from scratch, then as ``rank``/``search`` ran it before the supernet
   (each finished network retargeted to the next cell in place). Per candidate: *build*
   (construct or retarget, initialise on the CPU, move to the GPU), *score* (one forward of the
   resident student plus the metric; reading the floats synchronises), and the total, as median
   and p90 over ``--sample`` cells after a warm-up candidate; and how many scores the two ways
   agree on exactly.
2. ``engine``: ``benchmarks/engine.py``: the same cells scored per candidate by each engine as
   ``rank``/``search`` call it (``modules``; ``supernet``, the NB201 default, slicing weights out
   of per-seed streams; ``supernet_drawn``, drawing them per candidate), median and p90, and how
   many scores equal the modules engine's exactly. Every later stage runs ``rank`` or
   ``search`` with the default engine (the supernet on NB201).
3. ``search``: ``diswot search --device cuda`` for ``--search-cycles`` (1,000) candidates, serial
   (aging evolution, population 36, tournament 8, no budget): the <= 15 s target. It writes its
   run folder as ``diswot search`` does (``candidates.jsonl``, ``progress.png``: the wall time
   includes the plot, which the runs of 2026-11-26 did not write), and reports the median
   candidate as the objective timed it and the loop's time outside candidates (proposals and
   the first call's set-up: FLOP terms, teacher, supernet).
4. ``full``: all 15,625 cells with ``--full-workers`` processes (default 1, the fast path on one
   GPU; ``--no-full`` skips it): the <= 2 minute target, and Kendall tau of DisWOT, M_s, M_r
   against CIFAR-100 accuracy.
5. ``cpu_agreement``: the serial stage's cells scored on the CPU. Kendall tau between the CPU and
   GPU scores and the largest relative difference (GPU kernels reduce in another order).
6. ``precision`` and ``seed_stacking``: ``benchmarks/precision.py``'s fp32-vs-bf16 comparison
   (agreement, Kendall vs accuracy, ms per candidate) under the gaussian init on ``--agree``
   cells, and fp32 in the channels-last layout (the CPU default, off on CUDA); and
   ``benchmarks/seed_stacking.py``'s one seed at a time against vmapped seeds (3 seeds); both
   with built networks.
7. ``workers``: ``diswot rank --device cuda --workers K`` (K processes scoring on the shared GPU)
   on ``--rank-sample`` cells for each K in ``--workers``: wall time (start-up included),
   candidates/s, and whether the scores equal the serial GPU ones where the cells overlap; then
   ``search`` with K in flight for the largest K (``--search-cycles`` candidates).

The targets come first, so a lease that runs out still measures them.

    PYTHONPATH=src python3 benchmarks/gpu.py --out runs/gpu          # on a GPU machine
    python benchmarks/gpu.py --device cpu --threads 1 --batch-size 16 --sample 120 --only-serial
    python benchmarks/gpu.py --device cpu --quick --out runs/gpu-cpu  # a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from _common import TARGET, TEACHER, machine, ms_stats, nb201_scorer, rel_diff, sync

from diswot import bench, rankstats
from diswot.models.nb201 import all_archs
from diswot.rank import RankResult, run_rank
from diswot.scoring import proxy_value
from diswot.search import CANDIDATES, load_candidates, run_search


def serial(
    args: argparse.Namespace, cells: list[str], recycle: bool = True
) -> tuple[dict, dict[str, float]]:
    """Per-candidate times of the in-process path; ``recycle`` hands each finished network to the
    next candidate (NB201 networks are retargeted in place, as ``rank``/``search`` do) instead of
    building every student from scratch."""
    t0 = time.perf_counter()
    scorer = nb201_scorer(args.device, args.batch_size)
    scorer.teacher(0)
    sync(args.device)
    setup = time.perf_counter() - t0
    build, score, total, values = [], [], [], {}
    proxies = ["diswot"]
    for i, arch in enumerate(cells):
        t0 = time.perf_counter()
        probe = scorer.evaluation_probe(arch, proxies, 0) if recycle else scorer.probe(arch, 0)
        probe.model  # noqa: B018  (construct or retarget, initialise, move)
        sync(args.device)
        t1 = time.perf_counter()
        values[arch] = proxy_value("diswot", probe)  # forward + metric; the read synchronises
        t2 = time.perf_counter()
        if recycle:
            scorer.release(probe, proxies)
        if i:  # the first candidate pays cuDNN heuristics and the allocator's warm-up
            build.append(t1 - t0)
            score.append(t2 - t1)
            total.append(t2 - t0)
    out = {
        "candidates": len(total),
        "recycled": recycle,
        "setup_s": round(setup, 3),
        "build": ms_stats(build),
        "score_resident": ms_stats(score),
        "total": ms_stats(total),
    }
    if args.device.startswith("cuda"):
        out["max_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out, values


def cpu_agreement(args: argparse.Namespace, gpu: dict[str, float], n: int) -> dict:
    cells = list(gpu)[:n]
    scorer = nb201_scorer("cpu", args.batch_size)
    cpu = {a: float(scorer.probe(a, 0).diswot["score"]) for a in cells}
    x = [gpu[a] for a in cells]
    y = [cpu[a] for a in cells]
    rel = max(rel_diff(a, b) for a, b in zip(x, y))
    return {"cells": len(cells), "kendall": round(rankstats.kendall(x, y), 4), "max_rel_diff": rel}


def precision_stage(args: argparse.Namespace, cells: list[str]) -> dict:
    """fp32 against bf16 (gaussian init) on the GPU: agreement, Kendall vs accuracy, speed."""
    import precision  # benchmarks/precision.py, beside this script

    truth = bench.nb201_accuracy(TARGET)
    acc = [truth[a] for a in cells]
    ref, ref_s = precision.score_all(cells, "gaussian", "fp32", args.device, args.batch_size)
    low, low_s = precision.score_all(cells, "gaussian", "bf16", args.device, args.batch_size)
    # Channels-last is the CPU default and off on CUDA: is it worth turning on there too?
    cl, cl_s = precision.score_all(cells, "gaussian", "fp32", args.device, args.batch_size, True)
    return {
        "cells": len(cells),
        "fp32_ms_per_candidate": round(1000 * ref_s, 2),
        "bf16_ms_per_candidate": round(1000 * low_s, 2),
        "fp32_channels_last_ms_per_candidate": round(1000 * cl_s, 2),
        "bf16": precision.compare(ref, low, acc),
        "channels_last": precision.compare(ref, cl, acc),
    }


def engine_stage(args: argparse.Namespace, cells: list[str]) -> dict:
    """Modules against the supernet (streamed and drawn weights), per candidate."""
    import engine  # benchmarks/engine.py, beside this script

    return engine.measure(cells, args.device, args.batch_size)


def stacking_stage(args: argparse.Namespace, cells: list[str]) -> dict:
    """Three seeds of a cell one at a time against one vmapped forward (ms per cell and seed)."""
    import seed_stacking  # benchmarks/seed_stacking.py, beside this script

    return seed_stacking.measure(cells, 3, args.device, args.batch_size)


def _rank(
    args: argparse.Namespace, cells: list[str], proxies: str, k: int, **kw: object
) -> tuple[RankResult, float]:
    """``diswot rank --device ... --workers k`` on ``cells`` and its wall time (start-up included)."""
    t0 = time.perf_counter()
    res = run_rank(
        "nb201",
        teacher=TEACHER,
        proxies=proxies,
        batch_size=args.batch_size,
        target=TARGET,
        archs=cells,
        device=args.device,
        progress=False,
        workers=k,
        **kw,
    )
    return res, time.perf_counter() - t0


def workers(args: argparse.Namespace, cells: list[str], ref: dict[str, float]) -> dict:
    out = {}
    for k in args.workers:
        res, wall = _rank(args, cells, "diswot", k)
        got = dict(zip(res.archs, res.mean_column("diswot")))
        shared = [a for a in ref if a in got]
        out[str(k)] = {
            "candidates": len(res.archs),
            "wall_s": round(wall, 2),
            "candidates_per_s": round(len(res.archs) / wall, 1),
            "ms_per_candidate": round(1000 * wall / len(res.archs), 2),
            "equal_to_serial": sum(got[a] == ref[a] for a in shared),
            "compared": len(shared),
            "max_rel_diff_to_serial": max((rel_diff(got[a], ref[a]) for a in shared), default=0.0),
        }
        print(f"workers {k}: {out[str(k)]}", flush=True)
    return out


def full(
    args: argparse.Namespace, k: int, rate: float | None, seconds_left: float, reserve: float
) -> dict:
    """All ``--full-cells`` cells, or, when the search stage's rate says they would not fit in
    the lease's remaining ``--budget-s``, a seeded random subset that does (reported as such,
    with the projected time of all of them)."""
    folder = Path(args.out) / "full"
    shutil.rmtree(folder, ignore_errors=True)  # a timing must score every cell, not resume
    archs = all_archs()[: args.full_cells]
    projected = len(archs) / rate if rate else None
    room = 0.8 * (seconds_left - reserve)  # ``reserve`` s kept for the stages after this one
    if projected is not None and projected > room:
        n = max(100, int(room * rate))
        if n < len(archs):
            archs = list(archs)
            random.Random(1).shuffle(archs)
            archs = archs[:n]
    res, wall = _rank(args, archs, "diswot,ms,mr", k, out_dir=folder)
    kendall = {
        c["proxy"]: round(c["kendall"], 4) for c in res.correlations if c["target"] == TARGET
    }
    out = {
        "workers": k,
        "candidates": len(res.archs),
        "wall_s": round(wall, 1),
        "candidates_per_s": round(len(res.archs) / wall, 1),
        "kendall_cifar100": kendall,
    }
    if len(res.archs) < args.full_cells:
        out["subset_of"] = args.full_cells
        out["projected_all_cells_s"] = round(args.full_cells * wall / len(res.archs), 1)
    return out


def search(args: argparse.Namespace, k: int = 1) -> dict:
    """A ``--search-cycles`` search, serial (``k == 1``) or with ``k`` candidates in flight."""
    folder = Path(args.out) / f"search-{k}"
    shutil.rmtree(folder, ignore_errors=True)  # a timing must score every candidate, not resume
    t0 = time.perf_counter()
    res = run_search(
        "nb201",
        out_dir=folder,
        teacher=TEACHER,
        target=TARGET,
        batch_size=args.batch_size,
        device=args.device,
        algorithm="evolution",
        seed=0,
        cycles=args.search_cycles,
        workers=k,
    )
    wall = time.perf_counter() - t0
    # Per-candidate scoring seconds as the objective measured them, and the loop's time outside
    # them (proposals, bookkeeping, the first call's set-up: FLOP terms, teacher, supernet).
    each = [c["seconds"] for c in load_candidates(folder / CANDIDATES)]
    out = {
        "workers": k,
        "cycles": res.n_scored,
        "wall_s": round(wall, 2),
        "loop_s": round(res.loop_seconds, 2),
        "candidate": ms_stats(each[1:]),
        "outside_candidates_s": round(res.loop_seconds - sum(each), 2) if k == 1 else None,
        "candidates_per_s": round(res.n_scored / wall, 1),
        "winner": res.winner["arch"],
        "winner_cifar100": res.ground_truth.get(TARGET),
    }
    print(f"search workers {k}: {out}", flush=True)
    return out


def profile_search(args: argparse.Namespace) -> dict:
    """The serial search of the ``search`` stage under cProfile: where its per-candidate time
    goes beyond the engine's forward (the full listing is written to ``search_profile.txt``)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    figures = search(args)
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    (Path(args.out) / "search_profile.txt").write_text(text.getvalue())
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    figures["top_tottime"] = [
        {"function": f"{Path(f).name}:{line}({name})", "calls": nc, "tottime_s": round(tt, 3)}
        for (f, line, name), (_, nc, tt, _, _) in top
    ]
    return figures


STAGES = (
    "serial_fresh_builds",
    "serial",
    "engine",
    "search",
    "full",
    "cpu_agreement",
    "precision",
    "seed_stacking",
    "workers",
    "search_in_flight",
    "profile_search",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample", type=int, default=100, help="cells of the serial stage")
    p.add_argument("--agree", type=int, default=60, help="cells re-scored on the CPU")
    p.add_argument("--rank-sample", type=int, default=1000, help="cells per worker count")
    # One H200 lease measured 4/8/15 processes at 23 cand/s against 36 serial: 1 and 2 suffice to
    # see whether that still holds; the full pass and the search use the fastest.
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--full-cells", type=int, default=15625)
    p.add_argument("--no-full", action="store_true")
    p.add_argument("--search-cycles", type=int, default=1000)
    p.add_argument("--full-workers", type=int, default=1, help="processes of the full pass")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    p.add_argument(
        "--only-serial",
        action="store_true",
        help="stop after the serial stages (fresh vs recycled)",
    )
    p.add_argument(
        "--stages",
        default=",".join(s for s in STAGES if s != "profile_search"),
        help=f"comma-separated stages to run, in this order: {','.join(STAGES)}",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="seconds the whole script may take (0: no limit): later stages are skipped, and the "
        "full pass shrinks to a random subset, rather than be cut off mid-stage",
    )
    p.add_argument("--out", default="runs/gpu")
    args = p.parse_args()
    if args.quick:
        args.sample, args.agree, args.rank_sample, args.workers = 6, 4, 8, [1, 2]
        args.full_cells, args.search_cycles = 12, 8
    wanted = set(args.stages.split(","))
    if wanted - set(STAGES):
        raise SystemExit(f"unknown stages {sorted(wanted - set(STAGES))}; known: {STAGES}")
    if args.only_serial:
        wanted &= {"serial_fresh_builds", "serial"}
    if args.no_full:
        wanted.discard("full")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu --quick for a smoke test")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "command": "python benchmarks/gpu.py " + " ".join(os.sys.argv[1:]),
        "machine": machine(args.device),
        "teacher": TEACHER,
        "target": TARGET,
        "batch_size": args.batch_size,
    }

    def save(stage: str, value: object) -> None:
        report[stage] = value
        (out_dir / "gpu.json").write_text(json.dumps(report, indent=2))
        print(f"{stage}: {json.dumps(value)}", flush=True)

    started = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started) if args.budget_s else float("inf")

    def stage(name: str, fn: Callable[[], object], needs_s: float = 10.0) -> object:
        """Run and save one stage; a stage that fails is recorded with its traceback and the
        script goes on, so one broken stage does not cost a lease the others' figures. A stage
        is skipped when less than ``needs_s`` of the budget is left, or not asked for."""
        if name not in wanted:
            return None
        if left() < needs_s:
            save(name, {"skipped": f"{left():.0f} s of --budget-s left"})
            return None
        try:
            value = fn()
        except Exception:
            save(name, {"error": traceback.format_exc(limit=8)[-3000:]})
            return None
        save(name, value)
        return value

    cells = all_archs()
    random.Random(0).shuffle(cells)
    scored: dict[str, dict[str, float]] = {}

    def serial_stage(recycle: bool) -> dict:
        figures, scored["recycled" if recycle else "fresh"] = serial(
            args, cells[: args.sample + 1], recycle
        )
        return figures

    stage("serial_fresh_builds", lambda: serial_stage(False))
    stage("serial", lambda: serial_stage(True))
    values = scored.get("recycled") or scored.get("fresh") or {}
    if len(scored) == 2:
        save("recycled_equals_fresh", sum(values[a] == scored["fresh"][a] for a in values))
    stage("engine", lambda: engine_stage(args, cells[: args.sample + 1]))
    found = stage("search", lambda: search(args))
    ok = isinstance(found, dict) and found.get("loop_s", 0) > 0
    rate = found["cycles"] / found["loop_s"] if ok else None  # type: ignore[index]
    later = wanted & set(STAGES[STAGES.index("full") + 1 :])
    reserve = 100.0 if later else 10.0
    stage("full", lambda: full(args, args.full_workers, rate, left(), reserve), needs_s=30.0)
    stage("cpu_agreement", lambda: cpu_agreement(args, values, args.agree))
    stage("precision", lambda: precision_stage(args, cells[: args.agree]))
    stage("seed_stacking", lambda: stacking_stage(args, cells[: args.agree // 3 + 1]))
    stage("workers", lambda: workers(args, cells[: args.rank_sample], values), needs_s=60.0)
    if max(args.workers) > 1:
        stage("search_in_flight", lambda: search(args, max(args.workers)), needs_s=40.0)
    stage("profile_search", lambda: profile_search(args), needs_s=30.0)


if __name__ == "__main__":
    main()
