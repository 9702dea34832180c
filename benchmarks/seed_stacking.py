"""Is scoring several seeds of one architecture together cheaper than one at a time?

``--seeds S`` scores each student under S seeds (its own probe batch, teacher init and student
init each). They share one architecture, so the S forward passes could run as one: the S weight
sets stacked along a new leading dimension and the forward vectorised over it with
``torch.func.vmap`` (convolutions become one grouped convolution, BatchNorm keeps per-seed
statistics). On a GPU, where a small network's forward is bound by kernel launches, that divides
the launches by S; on a CPU it changes only how the arithmetic is grouped.

This measures both ways on a seeded NB201 sample (teacher ResNet-56, CIFAR-100 classes, batch
``--batch-size``) with the network recycled across seeds as ``rank`` does, and reports
milliseconds per (cell, seed) and how far the stacked DisWOT scores are from the one-at-a-time ones
(vmap groups the reductions differently, so they agree to rounding, not bit for bit). ``diswot``
scores seeds one at a time; this decides whether a stacked path is worth adding.

    python benchmarks/seed_stacking.py --sample 20 --seeds 3 --threads 1
    PYTHONPATH=src python3 benchmarks/seed_stacking.py --device cuda --sample 100

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import torch
from _common import machine, nb201_scorer, rel_diff, sync
from torch import Tensor, nn
from torch.func import functional_call, vmap

from diswot import bench
from diswot.features import FeatureExtractor, Features
from diswot.metrics import classifier_gradient, diswot_score
from diswot.models import init_weights
from diswot.scoring import Scorer, strict_fp32


class _Probe(nn.Module):
    """Wraps a network so that one call returns its :class:`Features` (for ``functional_call``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.fx = FeatureExtractor(net)

    def forward(self, x: Tensor) -> Features:
        return self.fx(x)


def one_at_a_time(scorer: Scorer, cells: list[str]) -> tuple[dict[str, list[float]], list[float]]:
    """The shipped path: each seed re-initialises the recycled network and runs its own forward."""
    scores, seconds = {}, []
    for arch in cells:
        sync(str(scorer.device))
        t0 = time.perf_counter()
        scores[arch] = [scorer.evaluate(arch, ["diswot"], s)["diswot"] for s in scorer.seeds]
        seconds.append(time.perf_counter() - t0)
    return scores, seconds


def stacked(scorer: Scorer, cells: list[str]) -> tuple[dict[str, list[float]], list[float]]:
    """All seeds of a cell in one vmapped forward over stacked weight sets (network recycled)."""
    seeds = scorer.seeds
    x = torch.stack([scorer.batch(s)[0] for s in seeds])
    scores, seconds, net = {}, [], None
    for arch in cells:
        sync(str(scorer.device))
        t0 = time.perf_counter()
        if net is not None and scorer.rebuilder is not None:
            net = scorer.rebuilder(net, arch, scorer.num_classes)
        if net is None:
            net = scorer.build(arch, 0)
        net.train()
        probe = _Probe(net)  # its first (vmapped) call finds the classifier and feature map
        with torch.no_grad(), strict_fp32():
            sets = []
            for s in seeds:  # the same draws as the one-at-a-time path's student init
                init_weights(net, scorer.init, scorer.probe(arch, s).init_seed)
                sets.append(
                    {k: v.clone() for k, v in (*net.named_parameters(), *net.named_buffers())}
                )
            state = {f"net.{k}": torch.stack([w[k] for w in sets]) for k in sets[0]}
            f = vmap(partial(functional_call, probe))(state, (x,))
            values = []
            for i, s in enumerate(seeds):
                t = scorer.teacher(s)
                g = classifier_gradient(f.logits[i], f.pooled[i], scorer.batch(s)[1])
                values.append(diswot_score(t.grad, t.feature_map, g, f.feature_map[i])["score"])
        scores[arch] = values
        seconds.append(time.perf_counter() - t0)
    return scores, seconds


def measure(cells: list[str], seeds: int, device: str, batch_size: int) -> dict:
    """Both ways on ``cells`` (the first pays warm-up and is left out of the times)."""
    scorer = nb201_scorer(device, batch_size, seeds=range(seeds))
    for s in scorer.seeds:
        scorer.teacher(s)
    ref, t_ref = one_at_a_time(scorer, cells)
    got, t_got = stacked(scorer, cells)
    rel = [rel_diff(a, b) for arch in cells for a, b in zip(got[arch], ref[arch])]
    return {
        "cells": len(cells) - 1,
        "seeds": seeds,
        "batch_size": batch_size,
        "one_at_a_time_ms_per_seed": round(1000 * statistics.median(t_ref[1:]) / seeds, 2),
        "stacked_ms_per_seed": round(1000 * statistics.median(t_got[1:]) / seeds, 2),
        "max_rel_diff": float(f"{max(rel):.3g}"),
        "median_rel_diff": float(f"{statistics.median(rel):.3g}"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=20, help="NB201 cells (seeded sample)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "command": "python benchmarks/seed_stacking.py " + " ".join(os.sys.argv[1:]),
        "machine": machine(args.device),
        **measure(bench.nb201_sample(args.sample + 1, 0), args.seeds, args.device, args.batch_size),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
