"""``diswot rank``: score every student of a space and correlate with shipped ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from diswot.cli._common import add_probe_args, print_json
from diswot.rank import run_rank


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "rank",
        help="rank a space's students and measure Kendall/Spearman against ground truth",
        description="Score the students of S1 (all 64) or an NB201 sample and correlate each proxy "
        "with the shipped ground-truth accuracy.",
    )
    p.add_argument("--space", default="s1", help="s1 or nb201 (default s1)")
    p.add_argument(
        "--proxy",
        default="diswot,ms,mr",
        help="comma list of proxies or 'all' (params, flops always)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="s1: kd/cls (both by default); nb201: cifar10/cifar100/ImageNet16-120",
    )
    p.add_argument(
        "--sample", type=int, default=200, help="nb201: number of sampled cells (default 200)"
    )
    p.add_argument("--sample-seed", type=int, default=0, help="nb201: seed of the cell sample")
    p.add_argument("--out", default=None, help="run folder (default runs/rank-<space>); resumable")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_probe_args(p, teacher_default=None)
    return p


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("runs") / f"rank-{args.space}"
    res = run_rank(
        args.space,
        teacher=args.teacher,
        proxies=args.proxy,
        seeds=args.seeds,
        batch_size=args.batch_size,
        target=args.target,
        sample=args.sample,
        sample_seed=args.sample_seed,
        out_dir=out,
        init=args.init,
        data=args.data,
        data_root=args.data_root,
        device=args.device,
        progress=not args.no_progress,
    )
    if args.json:
        print_json(
            {
                "space": args.space,
                "n_archs": len(res.archs),
                "out": str(out),
                "seconds": round(res.seconds, 2),
                "correlations": res.correlations,
            }
        )
        return 0
    print(res.table())
    print(
        f"\n{len(res.archs)} students, {res.seconds:.1f} s; results in {out}/ "
        "(scores.csv, correlations.json, table.md, scatter.png)"
    )
    return 0
