"""Search speed: wall time per 100 scored NB201 candidates, and where the time goes.

Runs the real search (:func:`diswot.search.run_search`: aging evolution, the DisWOT objective, a
randomly initialised teacher, ``candidates.jsonl`` written as it goes) and reports

* ``seconds_per_100``: wall time of the search loop per 100 scored candidates; the one-off set-up
  (teacher forward per probe seed, cost-term profiling) is reported apart as ``setup_seconds``;
* ``score_seconds_mean`` / ``_median``: time inside the objective per candidate (build, init, one
  forward, metrics), so ``seconds_per_100 - 100 * score_seconds_mean`` is the search's own overhead
  (budget checks, bookkeeping, JSONL appends);
* ``budget_checks_per_s``: closed-form cost look-ups of fresh NB201 cells per second.

The default is the paper's probe (batch 64) on CIFAR-100 with a ResNet56 teacher. On a shared 2-core
CPU time fewer candidates (the figure is per 100 either way)::

    python benchmarks/search_speed.py --cycles 20 --json
    python benchmarks/search_speed.py --cycles 40 --workers 2 --json  # asynchronous, 2 processes

The last stdout line is one JSON object when ``--json`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from diswot.search.api import run_search
from diswot.search.ledger import CANDIDATES, load_candidates
from diswot.spaces import get_space


def budget_check_rate(n: int = 5000, seed: int = 0) -> float:
    """Fresh (uncached) NB201 cost look-ups per second, after the one-off term profiling."""
    space = type(get_space("nb201"))()  # a private instance: an empty cost cache
    space.cost(space.enumerate()[0], 100, 32)  # profiles the closed form's terms once
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    t0 = time.perf_counter()
    for a in archs:
        space.cost(a, 100, 32)
    return n / (time.perf_counter() - t0)


def measure(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        res = run_search(
            "nb201",
            teacher=args.teacher,
            target=args.target,
            algorithm="evolution",
            cycles=args.cycles,
            max_flops=args.max_flops,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            out_dir=out,
            workers=args.workers,
            backend=args.backend,
        )
        per = [r["seconds"] for r in load_candidates(out / CANDIDATES)]
    n = res.n_scored
    return {
        "benchmark": "search_speed",
        "space": "nb201",
        "target": args.target,
        "teacher": args.teacher,
        "batch_size": args.batch_size,
        "max_flops": args.max_flops,
        "device": args.device,
        "scored": n,
        "seconds_per_100": round(res.loop_seconds / n * 100, 2),
        "setup_seconds": round(res.seconds - res.loop_seconds, 2),
        "score_seconds_mean": round(statistics.fmean(per), 4),
        "score_seconds_median": round(statistics.median(per), 4),
        # Serial only: with workers the objective's seconds overlap, so wall minus them is no
        # overhead figure.
        "overhead_seconds_per_100": (
            round((res.loop_seconds - sum(per)) / n * 100, 3) if args.workers == 1 else None
        ),
        "workers": args.workers,
        "backend": args.backend,
        "budget_checks_per_s": round(budget_check_rate(), 1),
        "winner": res.winner["arch"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=100, help="scored candidates to time")
    p.add_argument("--batch-size", type=int, default=64, help="probe batch (paper: 64)")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--target", default="cifar100")
    p.add_argument("--max-flops", default="100M")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes / Ray actors (async search)")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    report = measure(args)
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>26}: {v}")
    return report


if __name__ == "__main__":
    main()
