"""``diswot evaluate``: measure a checkpoint written by ``diswot train`` / ``distill``.

The checkpoint names its architecture, class count and dataset, so ``--ckpt`` alone suffices; the
dataset options override the stored ones (e.g. when the data moved).
"""

from __future__ import annotations

import argparse

from diswot.cli._common import add_threads_arg, print_json
from diswot.distill.api import evaluate_checkpoint
from diswot.distill.datasets import DATASETS
from diswot.distill.settings import AMP_MODES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 of a train/distill checkpoint",
        description="Rebuild the model a checkpoint describes and evaluate it on the test split.",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint (last.pt or best.pt of a run)")
    p.add_argument("--dataset", default=None, help=f"override: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None, help="override the stored data folder")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (256)")
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N"
    )
    p.add_argument("--amp", default="auto", choices=AMP_MODES, help="mixed precision (auto: CUDA)")
    add_threads_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    res = evaluate_checkpoint(
        args.ckpt,
        args.dataset,
        args.data_root,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        threads=args.threads,
    )
    if args.json:
        print_json(res)
        return 0
    print(
        f"{res['arch']} ({res['method']}, epoch {res['epoch']}) on {res['dataset']} "
        f"({res['num_images']} images): top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
        f"loss {res['loss']:.4f}"
    )
    print(f"stored: best top-1 {res['best_top1']:.2f}%  last top-1 {res['last_top1']:.2f}%")
    return 0
