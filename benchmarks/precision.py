"""Rank agreement of bf16/fp16 (and channels-last) scoring with fp32, and what each costs, on NB201.

``--precision bf16`` runs the students' forward pass under autocast (fp16 is refused). It is
only worth offering with its effect on the ranking measured, so this scores the same seeded NB201
sample (teacher ResNet-56 at CIFAR-100's 100 classes, batch 64, seed 0) once per configuration and
reports, for DisWOT, M_s and M_r:

* agreement with fp32 under the same init (``kendall_vs_ref``): Kendall tau between the two
  score lists, the median and largest relative difference, the non-finite count, and for fp16 in how many cells some
  activation of the student overflowed to inf/NaN (an untimed second pass);
* Kendall tau of each against CIFAR-100 test accuracy, oriented so that larger is better (M_s and
  M_r are distances, so their raw values are negated), as ``diswot rank`` reports it: is the
  ranking still as good?
* median milliseconds per candidate (forward + metric, the network recycled as ``rank`` does).

First, fp32 with contiguous tensors against the channels-last memory format (``Scorer``'s default
on a CPU): agreement and speed. Then, in the default format, fp32, bf16 and fp16 under the
paper's N(0,1) ``gaussian`` init, and the same three under PyTorch's ``default`` init. ``diswot`` refuses fp16; this script sets the precision past that
check to measure why (in how many cells activations overflow, and what that does to the scores).

    python benchmarks/precision.py --sample 100 --threads 1          # CPU
    PYTHONPATH=src python3 benchmarks/precision.py --device cuda     # a GPU machine

The last line is one JSON object (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import time

import torch
from _common import TARGET, TEACHER, emit, machine, nb201_scorer
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from diswot import bench, rankstats
from diswot.proxies import get_proxy
from diswot.scoring import Scorer

PROXIES = ("diswot", "ms", "mr")


def score_all(
    cells: list[str],
    init: str,
    precision: str,
    device: str,
    batch_size: int,
    channels_last: bool | None = None,
) -> tuple[dict[str, list[float]], float]:
    """Every proxy of PROXIES on every cell (seed 0) and the median seconds per candidate."""
    scorer = _scorer(init, precision, device, batch_size, channels_last)
    values: dict[str, list[float]] = {p: [] for p in PROXIES}
    seconds = []
    for arch in cells:
        t0 = time.perf_counter()
        v = scorer.evaluate(arch, PROXIES, 0)
        seconds.append(time.perf_counter() - t0)
        for p in PROXIES:
            values[p].append(v[p])
    return values, statistics.median(seconds[1:] or seconds)


def count_overflows(
    cells: list[str], init: str, precision: str, device: str, batch_size: int
) -> int:
    """Cells in which some activation of the student's forward is inf or NaN (a second, untimed
    pass: a global forward hook checks every module's output)."""
    scorer = _scorer(init, precision, device, batch_size)
    hit: list[nn.Module] = []

    def watch(module: nn.Module, inputs: object, out: object) -> None:
        floating = isinstance(out, Tensor) and out.is_floating_point()
        if floating and not hit and not torch.isfinite(out).all():
            hit.append(module)

    handle = register_module_forward_hook(watch)
    n = 0
    try:
        for arch in cells:
            hit.clear()
            scorer.evaluate(arch, PROXIES, 0)
            n += bool(hit)
    finally:
        handle.remove()
    return n


def _scorer(
    init: str, precision: str, device: str, batch_size: int, channels_last: bool | None = None
) -> Scorer:
    scorer = nb201_scorer(device, batch_size, init=init, channels_last=channels_last)
    # Past the constructor's check: fp16 is refused by diswot, and measured here.
    scorer.config = dataclasses.replace(scorer.config, precision=precision)
    scorer.teacher(0)  # before any watch: only the students' passes are checked
    return scorer


def _rel_diffs(a: list[float], b: list[float]) -> list[float]:
    return [
        abs(x - y) / max(abs(y), 1e-30)
        for x, y in zip(a, b)
        if math.isfinite(x) and math.isfinite(y)
    ]


def _oriented_kendall(proxy: str, values: list[float], acc: list[float]) -> float:
    sign = get_proxy(proxy).sign
    return round(rankstats.kendall([sign * v for v in values], acc), 4)


def compare(ref: dict[str, list[float]], low: dict[str, list[float]], acc: list[float]) -> dict:
    out: dict = {}
    for p in PROXIES:
        rel = _rel_diffs(low[p], ref[p])
        out[p] = {
            "kendall_vs_ref": round(rankstats.kendall(low[p], ref[p]), 4),
            "median_rel_diff": float(f"{statistics.median(rel):.3g}") if rel else math.nan,
            "max_rel_diff": float(f"{max(rel):.3g}") if rel else math.nan,
            "nonfinite": sum(not math.isfinite(x) for x in low[p]),
            "kendall_vs_acc": _oriented_kendall(p, low[p], acc),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=200, help="NB201 cells (seeded sample)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cells = bench.nb201_sample(args.sample, args.sample_seed)
    truth = bench.nb201_accuracy(TARGET)
    acc = [truth[a] for a in cells]
    report: dict = {
        "command": "python benchmarks/precision.py " + " ".join(os.sys.argv[1:]),
        "machine": machine(args.device),
        "cells": len(cells),
        "teacher": TEACHER,
        "batch_size": args.batch_size,
    }
    # The memory format first: fp32 with contiguous tensors against channels-last (the Scorer's
    # default on a CPU) -- the same arithmetic, grouped differently by oneDNN.
    ref, ref_s = score_all(cells, "gaussian", "fp32", args.device, args.batch_size, False)
    cl, cl_s = score_all(cells, "gaussian", "fp32", args.device, args.batch_size, True)
    report["layout"] = {
        "contiguous_ms_per_candidate": round(1000 * ref_s, 2),
        "channels_last_ms_per_candidate": round(1000 * cl_s, 2),
        **compare(ref, cl, acc),
    }
    print(f"layout: {json.dumps(report['layout'])}", flush=True)
    for init in ("gaussian", "default"):
        ref, ref_s = score_all(cells, init, "fp32", args.device, args.batch_size)
        section = {
            "fp32": {
                "ms_per_candidate": round(1000 * ref_s, 2),
                **{f"{p}_kendall_vs_acc": _oriented_kendall(p, ref[p], acc) for p in PROXIES},
            }
        }
        for precision in ("bf16", "fp16"):
            low, low_s = score_all(cells, init, precision, args.device, args.batch_size)
            section[precision] = {
                "ms_per_candidate": round(1000 * low_s, 2),
                **compare(ref, low, acc),
            }
            if precision == "fp16":  # bf16 has fp32's exponent range
                section[precision]["cells_with_inf_activations"] = count_overflows(
                    cells, init, precision, args.device, args.batch_size
                )
        report[init] = section
        print(f"{init}: {json.dumps(section)}", flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
