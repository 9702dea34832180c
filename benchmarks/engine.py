"""Per-candidate time of the two scoring engines on NB201, and whether their scores are identical.

``--engine modules`` builds each student as an ``nn.Module`` (a finished network is retargeted to
the next cell in place, as ``rank`` and ``search`` do); ``--engine supernet`` (the NB201 default)
slices the same weights out of one draw per seed (its weight stream) and runs the candidate's ops
functionally; ``supernet_drawn`` is the supernet drawing each candidate's weights into its store
instead (its path where streams are off). This times ``Scorer.evaluate(cell, ["diswot"], seed 0)``,
the call ``rank`` and ``search`` make per candidate (teacher ResNet-56 cached, CIFAR-100 class
count, batch 64): median and p90 over ``--sample`` seeded cells after one warm-up cell, for each
engine (taking turns cell by cell); then ``load`` alone, streamed and drawn (the supernet's CPU
side). It reports how many scores equal the modules engine's exactly (they should all).

    python benchmarks/engine.py --sample 100 --threads 1                 # CPU
    python benchmarks/engine.py --sample 100 --threads 1 --contiguous    # CPU, CUDA's layout
    PYTHONPATH=src python3 benchmarks/engine.py --device cuda            # a GPU machine

The last line is one JSON object (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from _common import emit, machine, ms_stats, nb201_scorer, sync

from diswot.models.nb201 import all_archs
from diswot.scoring import Scorer


def _scorer(
    engine: str,
    device: str,
    batch_size: int,
    options: dict[str, bool],
    cells: list[str],
    channels_last: bool | None,
) -> Scorer:
    scorer = nb201_scorer(device, batch_size, engine=engine, channels_last=channels_last)
    scorer.teacher(0)
    supernet = scorer.supernet_for(cells[0])
    for name, value in options.items():  # streams off: to compare
        setattr(supernet, name, value)
    return scorer


def measure(
    cells: list[str], device: str, batch_size: int, channels_last: bool | None = None
) -> dict:
    """Every engine on ``cells``, the supernet with and without weight streams.

    The engines take turns cell by cell, so a machine that slows down or speeds up during the run
    (a shared host) weighs on all of them alike. The first cell is a warm-up for each (cuDNN
    heuristics, the allocator). ``channels_last``: the Scorer's layout (``None``:
    its default, channels-last on the CPU only; weight streams need the contiguous one).
    """
    runs: dict[str, tuple[str, dict[str, bool]]] = {
        "modules": ("modules", {}),
        "supernet": ("supernet", {}),
        "supernet_drawn": ("supernet", {"streams": False}),
    }
    scorers = {
        name: _scorer(e, device, batch_size, o, cells, channels_last)
        for name, (e, o) in runs.items()
    }
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    values: dict[str, dict[str, float]] = {name: {} for name in runs}
    for i, arch in enumerate(cells):
        for name, scorer in scorers.items():
            t0 = time.perf_counter()
            # Reading the score synchronises, so the time is the whole candidate's.
            values[name][arch] = scorer.evaluate(arch, ["diswot"], 0)["diswot"]
            if i:
                seconds[name].append(time.perf_counter() - t0)
    out: dict = {"cells": len(cells) - 1}
    ref = values["modules"]
    for name in runs:
        out[name] = {**ms_stats(seconds[name]), "equal_to_modules": sum(
            values[name][a] == ref[a] for a in cells
        )}  # fmt: skip
    # The CPU side of a supernet candidate alone: slicing its weights out of the stream, or
    # drawing them (on CUDA, and copying them over).
    for name in ("supernet", "supernet_drawn"):
        supernet = scorers[name].supernet_for(cells[0])
        assert supernet is not None
        loads = []
        for arch in cells[1:]:
            t0 = time.perf_counter()
            supernet.load(arch, 0)
            loads.append(time.perf_counter() - t0)
        sync(device)
        out[name]["load"] = ms_stats(loads)
    for name in runs:
        print(f"{name}: {out[name]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample", type=int, default=100, help="timed cells (one more warms up)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument(
        "--contiguous",
        action="store_true",
        help="score in the contiguous layout (CUDA's; on the CPU the default is channels-last)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cells = all_archs()
    random.Random(0).shuffle(cells)
    report = {
        "command": "python benchmarks/engine.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.device),
        "batch_size": args.batch_size,
        "channels_last": not args.contiguous and args.device == "cpu",
        **measure(
            cells[: args.sample + 1],
            args.device,
            args.batch_size,
            False if args.contiguous else None,
        ),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
