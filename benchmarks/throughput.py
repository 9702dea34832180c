"""Candidates per second of ``diswot rank`` on NB201: one process against ``--workers`` and Ray.

CPU mode (default) scores the same seeded NB201 sample with the DisWOT proxy (plus the free
``params``/``flops``) three ways and reports wall time and candidates per second of each, start-up
included (spawning workers and building each worker's teacher cache is part of what a user waits
for): the serial in-process path pinned to one intra-op thread, ``--workers W`` local processes
(one thread each), and, when Ray is importable, ``W`` local Ray actors. It also checks that every
backend returns the serial scores bit for bit.

The GPU path has its own script, ``benchmarks/gpu.py`` (per-candidate time, workers sharing a
GPU, all 15,625 cells, a 1,000-candidate search).

    python benchmarks/throughput.py [--sample 16] [--workers 2] [--no-ray] [--json]

With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import machine

from diswot.rank import run_rank


def cpu(args: argparse.Namespace) -> dict:
    common = dict(
        teacher=args.teacher,
        proxies=args.proxy,
        batch_size=args.batch_size,
        sample=args.sample,
        sample_seed=args.sample_seed,
        progress=False,
    )
    torch.set_num_threads(1)  # the serial baseline gets one core, as each worker does
    runs: dict[str, dict] = {}
    reference = None
    configs = [("serial", dict()), (f"workers{args.workers}", dict(workers=args.workers))]
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            configs.append((f"ray{args.workers}", dict(backend="ray", workers=args.workers)))
        except ImportError:
            runs["ray"] = {"skipped": "ray not installed (pip install 'diswot[ray]')"}
    for name, extra in configs:
        t0 = time.perf_counter()
        res = run_rank("nb201", **common, **extra)
        wall = time.perf_counter() - t0
        n = len(res.archs)
        if reference is None:
            reference = res.scores
        runs[name] = {
            "candidates": n,
            "wall_s": round(wall, 2),
            "candidates_per_s": round(n / wall, 3),
            "identical_to_serial": res.scores == reference,
        }
        print(f"{name:10s} {n} candidates in {wall:7.1f} s = {n / wall:6.3f} cand/s", flush=True)
    base = runs["serial"]["candidates_per_s"]
    for r in runs.values():
        if "candidates_per_s" in r:
            r["speedup"] = round(r["candidates_per_s"] / base, 2)
    return {"mode": "cpu", "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=16, help="NB201 cells to score (default 16)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--teacher", default="resnet56", help="teacher (default resnet56, NB201's)")
    p.add_argument("--proxy", default="diswot", help="proxies (default diswot)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="local processes / Ray actors")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = cpu(args)
    result.update(
        sample=args.sample, teacher=args.teacher, batch_size=args.batch_size, machine=machine("cpu")
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
