"""Grouped scoring against the one-at-a-time loop, side by side in one run on one machine.

Three stages, each timing both paths in the same process (issue 19):

* ``engine``: ``--cells`` seeded NB201 cells scored with ``Scorer.score`` one by one, then with
  ``Scorer.score_many`` in groups of each ``--groups`` size: candidates per second, peak memory
  (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS so far, which only grows) and the
  ratio to the loop, plus the largest relative difference of any grouped value from the loop's;
* ``search``: a ``--cycles``-candidate aging-evolution search with ``--in-flight`` candidates
  proposed at a time, scored one by one (``group=1``) and grouped (``group=G``): the same
  proposals, so the same winner is expected; wall time and ratio;
* ``full`` (GPU): every NB201 cell through ``score_many`` in groups of ``G``, with the loop's
  per-candidate time from the engine stage beside it.

CPU (2 cores, the figures in docs/scale.md)::

    python benchmarks/batched.py --stages engine,search --cells 60 --cycles 300 --json

GPU, one short lease (the command in docs/scale.md)::

    python benchmarks/batched.py --device cuda --stages engine,search,full --cells 300 \\
        --cycles 1000 --groups 8,32,64 --group 32 --out $OUT

The last stdout line is one JSON object when ``--json`` is given; ``--out DIR`` also writes it to
``DIR/batched.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import resource
import tempfile
import time
from pathlib import Path

import torch

from diswot.scoring import Scorer
from diswot.search import run_search
from diswot.spaces import get_space


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scorer(args: argparse.Namespace) -> Scorer:
    return Scorer.for_space(
        get_space("nb201"), args.teacher, num_classes=args.num_classes,
        batch_size=args.batch_size, device=args.device,
    )  # fmt: skip


def _max_rel(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for k, v in x.items():
            w = y[k]
            if math.isfinite(v) and math.isfinite(w):
                worst = max(worst, abs(v - w) / max(abs(w), 1e-12))
    return worst


def stage_engine(args: argparse.Namespace, proxies: list[str]) -> dict:
    """Per-candidate rates of the loop and of each group size on the same cells."""
    scorer = _scorer(args)
    device = scorer.device
    space = get_space("nb201")
    rng = random.Random(args.seed)
    cells = [space.sample(rng) for _ in range(args.cells)]
    scorer.score(cells[0], proxies)  # warm-up: teacher cache, supernet, first kernels
    scorer.score_many(cells[:2], proxies)
    _reset_peak(device)
    t0 = time.perf_counter()
    loop = [scorer.score(c, proxies).values for c in cells]
    _sync(device)
    loop_s = time.perf_counter() - t0
    rows = [{"group": 1, "cand_per_s": len(cells) / loop_s, "peak_mib": _peak_mib(device),
             "ratio": 1.0, "max_rel_diff": 0.0}]  # fmt: skip
    for g in args.groups:
        _reset_peak(device)
        t0 = time.perf_counter()
        got = []
        for i in range(0, len(cells), g):
            got += [r.values for r in scorer.score_many(cells[i : i + g], proxies)]
        _sync(device)
        sec = time.perf_counter() - t0
        rows.append({"group": g, "cand_per_s": len(cells) / sec, "peak_mib": _peak_mib(device),
                     "ratio": loop_s / sec, "max_rel_diff": _max_rel(got, loop),
                     "grouped": scorer.last_group.text()})  # fmt: skip
    return {"cells": len(cells), "loop_ms_per_cand": 1e3 * loop_s / len(cells), "rows": rows}


def stage_search(args: argparse.Namespace, proxy: str) -> dict:
    """The same search (seed, in-flight) scored one by one and grouped."""
    out: dict = {"cycles": args.cycles, "in_flight": args.in_flight, "group": args.group}
    with tempfile.TemporaryDirectory() as tmp:
        for name, group in (("loop", 1), ("grouped", args.group)):
            t0 = time.perf_counter()
            res = run_search(
                space="nb201", teacher=args.teacher, proxy=proxy, cycles=args.cycles,
                batch_size=args.batch_size, device=args.device, seed=args.seed,
                in_flight=args.in_flight, group=group, out_dir=Path(tmp) / name,
            )  # fmt: skip
            out[name] = {"seconds": time.perf_counter() - t0, "winner": res.winner["arch"],
                         "score": res.winner["score"]}  # fmt: skip
    out["ratio"] = out["loop"]["seconds"] / out["grouped"]["seconds"]
    out["same_winner"] = out["loop"]["winner"] == out["grouped"]["winner"]
    return out


def stage_full(args: argparse.Namespace, proxies: list[str]) -> dict:
    """Every NB201 cell, grouped."""
    scorer = _scorer(args)
    cells = get_space("nb201").enumerate()[: args.full_limit]
    scorer.score_many(cells[:2], proxies)
    _reset_peak(scorer.device)
    t0 = time.perf_counter()
    for i in range(0, len(cells), args.group):
        scorer.score_many(cells[i : i + args.group], proxies)
    _sync(scorer.device)
    sec = time.perf_counter() - t0
    return {"cells": len(cells), "seconds": sec, "cand_per_s": len(cells) / sec,
            "group": args.group, "peak_mib": _peak_mib(scorer.device)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", default="engine,search")
    p.add_argument("--device", default="cpu")
    p.add_argument("--proxy", default="diswot", help="diswot (with ms, mr) or zico")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cells", type=int, default=60)
    p.add_argument("--groups", default="4,16", help="group sizes of the engine stage")
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--group", type=int, default=16, help="group of the search and full stages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--full-limit", type=int, default=None, help="first N cells of the full stage (a dry run)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.groups = [int(g) for g in args.groups.split(",") if g]
    if args.threads:
        torch.set_num_threads(args.threads)
    proxies = ["diswot", "ms", "mr"] if args.proxy == "diswot" else [args.proxy]
    report: dict = {
        "benchmark": "batched", "device": args.device, "proxy": args.proxy,
        "batch_size": args.batch_size, "num_classes": args.num_classes, "teacher": args.teacher,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "processor": platform.processor(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }  # fmt: skip
    stages = args.stages.split(",")
    if "engine" in stages:
        report["engine"] = stage_engine(args, proxies)
        print("engine", json.dumps(report["engine"]), flush=True)
    if "search" in stages:
        report["search"] = stage_search(args, args.proxy)
        print("search", json.dumps(report["search"]), flush=True)
    if "full" in stages:
        report["full"] = stage_full(args, proxies)
        print("full", json.dumps(report["full"]), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batched.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
