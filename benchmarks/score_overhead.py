"""Per-candidate cost of DisWOT scoring against one plain student forward pass.

For each student the wall time splits into construction (build + init), the forward pass with
feature hooks, and the metric math; the teacher side is computed once and reported separately (the
metric is timed as the Scorer runs it, with the teacher's half of it kept, and with that half
recomputed per candidate as before 2026-11-26). The
ratio divides the whole per-candidate time (construction included) by a plain ``no_grad`` forward of
the already-built student at the same batch size. For contrast, ``public_way`` times what the paper's
public code does per candidate: rebuild the teacher, forward both networks with autograd and
backpropagate both cross-entropies to read the classifier gradients.

    python benchmarks/score_overhead.py [--batch-size 64] [--repeats 3] [--json]

The last line with ``--json`` is one JSON object with at least ``ratio``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from diswot.features import FeatureExtractor
from diswot.metrics import classifier_gradient, diswot_score
from diswot.models import create_model, init_weights
from diswot.scoring import Scorer

S1 = ["111", "333", "535", "777"]
NB201 = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
]


def _best(fn, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def measure(
    space: str, archs: list[str], teacher: str, classes: int, bs: int, repeats: int
) -> dict:
    scorer = Scorer(teacher, num_classes=classes, batch_size=bs)
    t0 = time.perf_counter()
    t_cache = scorer.teacher(0)
    teacher_s = time.perf_counter() - t0
    x, y = scorer.batch(0)
    rows = []
    for arch in archs:

        def build(arch: str = arch) -> torch.nn.Module:
            torch.manual_seed(2)
            m = create_model(arch, num_classes=classes)
            init_weights(m, "gaussian", 2)
            return m

        model = build()
        model.train()
        construct = _best(build, repeats)

        def plain(model: torch.nn.Module = model) -> None:
            with torch.no_grad():
                model(x)

        forward = _best(plain, repeats)

        def hooked(model: torch.nn.Module = model):
            with torch.no_grad():
                return FeatureExtractor(model)(x)

        feats = hooked()
        hooked_s = _best(hooked, repeats)

        def metric(feats=feats) -> None:  # as the Scorer does: the teacher's terms kept
            g = classifier_gradient(feats.logits, feats.pooled, y)
            diswot_score(t_cache.reference, None, g, feats.feature_map)

        def metric_recomputed(feats=feats) -> None:  # the teacher's half redone per candidate
            g = classifier_gradient(feats.logits, feats.pooled, y)
            diswot_score(t_cache.grad, t_cache.feature_map, g, feats.feature_map)

        metric_s = _best(metric, repeats)
        recomputed_s = _best(metric_recomputed, repeats)

        def whole(arch: str = arch) -> None:
            scorer.evaluate(arch, ["diswot"], 0)

        whole_s = _best(whole, repeats)

        def public_way(arch: str = arch) -> None:
            t = create_model(teacher, num_classes=classes)
            init_weights(t, "gaussian", 1)
            s = build(arch)
            for net in (t, s):
                net.train()
                F.cross_entropy(net(x), y).backward()

        public_s = _best(public_way, max(1, repeats // 2))
        rows.append(
            {
                "space": space,
                "arch": arch,
                "construct_ms": construct * 1e3,
                "forward_hooked_ms": hooked_s * 1e3,
                "metric_ms": metric_s * 1e3,
                "metric_teacher_recomputed_ms": recomputed_s * 1e3,
                "per_candidate_ms": whole_s * 1e3,
                "plain_forward_ms": forward * 1e3,
                "ratio": whole_s / forward,
                "public_way_ms": public_s * 1e3,
                "public_ratio": public_s / whole_s,
            }
        )
    return {"teacher": teacher, "teacher_once_ms": teacher_s * 1e3, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = [
        measure("s1", S1, "resnet110", 100, args.batch_size, args.repeats),
        measure("nb201", NB201, "resnet56", 100, args.batch_size, args.repeats),
    ]
    print(
        f"batch {args.batch_size}, {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print(
        "| space | student | construct ms | hooked fwd ms | metric ms (teacher's half redone) "
        "| per-candidate ms | plain fwd ms | ratio | public-code way ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    all_rows = []
    for res in results:
        for r in res["rows"]:
            all_rows.append(r)
            name = r["arch"] if len(r["arch"]) < 12 else r["arch"][:22] + "..."
            print(
                f"| {r['space']} | `{name}` | {r['construct_ms']:.1f} | {r['forward_hooked_ms']:.1f} | "
                f"{r['metric_ms']:.2f} ({r['metric_teacher_recomputed_ms']:.2f}) | "
                f"{r['per_candidate_ms']:.1f} | {r['plain_forward_ms']:.1f} | "
                f"{r['ratio']:.2f} | {r['public_way_ms']:.0f} ({r['public_ratio']:.1f}x) |"
            )
        print(f"teacher {res['teacher']} once: {res['teacher_once_ms']:.0f} ms")
    total = sum(r["per_candidate_ms"] for r in all_rows)
    plain = sum(r["plain_forward_ms"] for r in all_rows)
    summary = {
        "ratio": total / plain,
        "max_ratio": max(r["ratio"] for r in all_rows),
        "public_ratio": sum(r["public_way_ms"] for r in all_rows) / total,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "results": results,
    }
    print(
        f"overall ratio {summary['ratio']:.2f} (max {summary['max_ratio']:.2f}); public-code way {summary['public_ratio']:.1f}x slower"
    )
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
