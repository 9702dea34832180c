"""Per-candidate forward time of NB201 cells run G at a time (``GroupedNB201``) against one at a time
(``NB201Supernet``), under ``no_grad``.

The same ``--sample`` seeded cells (standard C=16, N=5 skeleton, 100 classes, batch 64, 32x32, init
seeds 0-3, weight streams) go through the supernet one by one and through ``GroupedNB201`` in
groups of 1, 4 and 16, at each ``--threads`` count; a pass includes fetching the candidates'
weights. Each figure is the best of ``--repeats`` passes over the sample, divided by the sample
size, after a warm-up on one group. The grouped pass is made for a GPU (its gain is fewer, larger kernel
launches); on a CPU the arithmetic dominates either way, so expect little from it there.

    python benchmarks/grouped_nb201.py                          # this CPU, 1 and 2 threads
    PYTHONPATH=src python3 benchmarks/grouped_nb201.py --device cuda --threads 1

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable

import torch

from diswot.models.nb201 import all_archs
from diswot.models.nb201_grouped import GroupedNB201, gaussian_weights
from diswot.models.nb201_supernet import NB201Supernet

CLASSES, BATCH, SIZE = 100, 64, 32


def _best(run: Callable[[int], None], warm: int, repeats: int, device: str) -> float:
    """Best seconds of ``repeats`` calls of ``run(0)`` (the whole sample) after ``run(warm)``
    (only its first group: enough to draw the streams and pick the kernels)."""
    run(warm)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sample", type=int, default=16)
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    cells = random.Random(0).sample(all_archs(), args.sample)
    seeds = [i % 4 for i in range(len(cells))]
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    x = x.to(args.device)
    sn = NB201Supernet(CLASSES, device=args.device)
    grouped = GroupedNB201(CLASSES, device=args.device)

    def one_at_a_time(limit: int) -> None:
        for arch, seed in zip(cells[: limit or None], seeds):
            sn.load(arch, seed)
            sn.features(x)

    def in_groups(g: int) -> Callable[[int], None]:
        def run(limit: int) -> None:
            chosen = cells[: limit or None]
            for start in range(0, len(chosen), g):
                archs = chosen[start : start + g]
                weights = [gaussian_weights(sn, a, s) for a, s in zip(archs, seeds[start:])]
                grouped.features(archs, weights, x)

        return run

    rows = []
    threads_before = torch.get_num_threads()
    with torch.no_grad():
        for threads in args.threads:
            torch.set_num_threads(threads)
            cases = [("supernet", 1, one_at_a_time)]
            cases += [(f"grouped G={g}", g, in_groups(g)) for g in args.groups]
            for name, warm, run in cases:
                ms = 1000 * _best(run, warm, args.repeats, args.device) / len(cells)
                rows.append({"threads": threads, "case": name, "ms_per_candidate": round(ms, 2)})
                print(f"threads {threads}  {name:<14} {ms:8.2f} ms/candidate", flush=True)
    torch.set_num_threads(threads_before)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    where = {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__}
    print(json.dumps({"machine": where, "sample": len(cells), "batch": BATCH, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
