"""Why grouping does not pay on a CPU, and what did: the figures docs/scale.md ("Grouped scoring")
quotes beside ``benchmarks/batched.py``'s.

Stages (NB201 cells drawn with ``--seed``, CIFAR-100 class count, batch ``--batch-size``):

* ``threads``: DisWOT per candidate with the supernet one at a time at 2 intra-op threads, at 1,
  and two Python threads each scoring half the cells at 1 intra-op thread (two Scorers);
* ``layout``: the grouped forward alone (no_grad) per candidate at G = 1 and 4, with contiguous
  and with channels-last inputs and weights;
* ``zico``: ZiCo per candidate one at a time, and the time of its statistic over the gradients
  of one candidate with ``torch.std`` against the written-out form the proxy uses (same value).

    python benchmarks/cpu_bound.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import time

import torch

from diswot.models.nb201_grouped import GroupedNB201, gaussian_weights
from diswot.models.nb201_supernet import NB201Supernet
from diswot.proxies.zico import zico_from_gradients
from diswot.scoring import Scorer
from diswot.spaces import get_space


def _cells(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    space = get_space("nb201")
    return [space.sample(rng) for _ in range(n)]


def _ms_per(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0) / n


def stage_threads(args: argparse.Namespace) -> dict:
    cells = _cells(args.cells, args.seed)
    make = lambda: Scorer.for_space(  # noqa: E731
        get_space("nb201"), "resnet56", num_classes=100, batch_size=args.batch_size
    )
    a, b = make(), make()
    for s in (a, b):
        s.evaluate(cells[0], ["diswot"], 0)
    out = {}
    for n in (2, 1):
        torch.set_num_threads(n)
        out[f"loop_{n}_threads_ms"] = _ms_per(
            lambda: [a.evaluate(c, ["diswot"], 0) for c in cells], len(cells)
        )

    def two_python_threads() -> None:
        jobs = [
            threading.Thread(target=lambda s=s, part=part: [s.evaluate(c, ["diswot"], 0) for c in part])
            for s, part in ((a, cells[0::2]), (b, cells[1::2]))
        ]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()

    out["two_python_threads_ms"] = _ms_per(two_python_threads, len(cells))
    torch.set_num_threads(args.threads)
    return out


def stage_layout(args: argparse.Namespace) -> dict:
    cells = _cells(16, args.seed)
    supernet, net = NB201Supernet(100), GroupedNB201(100)
    x = torch.randn(args.batch_size, 3, 32, 32)
    weights = [gaussian_weights(supernet, a, 1) for a in cells]
    out = {}
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        xx = x.contiguous(memory_format=fmt)
        ws = [{k: v.contiguous(memory_format=fmt) if v.dim() == 4 else v for k, v in w.items()}
              for w in weights]  # fmt: skip
        for g in (1, 4):
            with torch.no_grad():
                net.features(cells[:g], ws[:g], xx)
                ms = _ms_per(
                    lambda g=g, ws=ws, xx=xx: [net.features(cells[i : i + g], ws[i : i + g], xx)
                                 for i in range(0, len(cells), g)],
                    len(cells),
                )  # fmt: skip
            out[f"group_{g}_{'channels_last' if cl else 'contiguous'}_ms"] = ms
    return out


def stage_zico(args: argparse.Namespace) -> dict:
    cells = _cells(args.cells // 2 or 1, args.seed)
    scorer = Scorer.for_space(get_space("nb201"), None, num_classes=100, batch_size=args.batch_size)
    scorer.evaluate(cells[0], ["zico"], 0)
    per = _ms_per(lambda: [scorer.evaluate(c, ["zico"], 0) for c in cells], len(cells))
    # Gradient stacks shaped like one large candidate's: (2 halves, weight shape) per layer.
    gen = torch.Generator().manual_seed(args.seed)
    grads = [torch.randn(2, 64, 64, 3, 3, generator=gen) for _ in range(30)]

    def with_torch_std() -> float:
        total = 0.0
        for g in grads:
            g = g.reshape(2, -1).double()
            std = g.std(dim=0, unbiased=False)
            keep = std > 0
            total += math.log(float((g.abs().mean(dim=0)[keep] / std[keep]).sum()))
        return total

    with_torch_std(), zico_from_gradients(grads)
    t0 = time.perf_counter()
    old = with_torch_std()
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = zico_from_gradients(grads)
    t_new = time.perf_counter() - t0
    return {"zico_ms_per_candidate": per, "statistic_torch_std_ms": 1e3 * t_old,
            "statistic_written_out_ms": 1e3 * t_new, "same_value": math.isclose(old, new)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", default="threads,layout,zico")
    p.add_argument("--cells", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads outside 'threads'")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"benchmark": "cpu_bound", "torch": torch.__version__}
    for stage in args.stages.split(","):
        report[stage] = {"threads": stage_threads, "layout": stage_layout, "zico": stage_zico}[
            stage
        ](args)
        print(stage, json.dumps(report[stage]), flush=True)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
