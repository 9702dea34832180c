"""``diswot train``: train a model from scratch (teachers, vanilla baselines).

Also defines the data / optimisation / output options that ``diswot distill`` shares, so both commands
accept the same flags with the same defaults (the paper's CIFAR recipe).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from diswot.cli._common import add_threads_arg, print_json
from diswot.distill.datasets import DATASETS, DataConfig
from diswot.distill.trainer import (
    AMP_MODES,
    StudentSpec,
    TrainSettings,
    resolve_student,
    run_training,
)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Which dataset: CIFAR pickles, an image folder, or the seeded synthetic task."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset", default="cifar100", help=f"one of {', '.join(DATASETS)} (default cifar100)"
    )
    g.add_argument(
        "--data-root",
        default=None,
        help="folder holding cifar-100-python/ (or cifar-10-batches-py/), or train/ and val/ "
        "class subfolders for imagefolder",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="imagefolder/synthetic size (default 32; 224 for a resnet-imagenet, pit or autoformer "
        "student, the size its space builds and searched it at; CIFAR is always 32)",
    )
    g.add_argument(
        "--synthetic-train", type=int, default=5000, help="synthetic train images (5000)"
    )
    g.add_argument("--synthetic-test", type=int, default=1000, help="synthetic test images (1000)")
    g.add_argument("--synthetic-classes", type=int, default=10, help="synthetic classes (10)")
    g.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic task (0)")
    g.add_argument("--synthetic-noise", type=float, default=0.6, help="synthetic pixel noise (0.6)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Optimisation, output and runtime options (defaults: the DisWOT/CRD CIFAR recipe)."""
    g = p.add_argument_group(
        "training (defaults: SGD 0.05, momentum 0.9, wd 5e-4, batch 64, 240 epochs)"
    )
    g.add_argument("--epochs", type=int, default=240, help="epochs (default 240)")
    g.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    g.add_argument("--lr", type=float, default=0.05, help="initial learning rate (default 0.05)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", "--wd", type=float, default=5e-4, help="weight decay (5e-4)")
    g.add_argument(
        "--milestones",
        type=int,
        nargs="*",
        default=None,
        help="epochs where lr is multiplied by --lr-decay (default 150 180 210, scaled to --epochs)",
    )
    g.add_argument("--lr-decay", type=float, default=0.1, help="lr factor at milestones (0.1)")
    g.add_argument("--seed", type=int, default=0, help="seed of init, data order and augmentation")
    g.add_argument("--eval-batch-size", type=int, default=256, help="test batch size (256)")
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA if available; training wants a GPU), cpu, cuda, cuda:N",
    )
    r.add_argument(
        "--amp", default="auto", choices=AMP_MODES, help="mixed precision (auto: bf16 on CUDA)"
    )
    r.add_argument(
        "--channels-last",
        default="auto",
        choices=("auto", "on", "off"),
        help="memory format (auto: on CUDA)",
    )
    add_threads_arg(r)
    r.add_argument("--out", default=None, help="output folder (default runs/<kind>-<arch>-...)")
    r.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue OUT/last.pt (or CKPT) exactly; starts fresh when OUT has no checkpoint",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    r.add_argument("--json", action="store_true", help="print one JSON object with the result")


def data_config(args: argparse.Namespace, student: StudentSpec | None = None) -> DataConfig:
    """The data options; ``--image-size`` defaults to the size ``student``'s space builds it for
    (224 for resnet-imagenet, pit and autoformer students), else 32."""
    size = args.image_size
    if size is None:
        size = (student.image_size if student is not None else None) or 32
    return DataConfig(
        name=args.dataset,
        root=args.data_root,
        image_size=size,
        synthetic_train=args.synthetic_train,
        synthetic_test=args.synthetic_test,
        synthetic_classes=args.synthetic_classes,
        synthetic_seed=args.synthetic_seed,
        synthetic_noise=args.synthetic_noise,
    )


def train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        milestones=None if args.milestones is None else tuple(args.milestones),
        lr_decay=args.lr_decay,
        seed=args.seed,
        amp=args.amp,
        channels_last=args.channels_last,
        eval_batch_size=args.eval_batch_size,
    )


def default_out(kind: str, arch: str, method: str, args: argparse.Namespace) -> str:
    """A readable, filesystem-safe run folder name (NB201 strings are shortened)."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", arch).strip("_")[:48] or "model"
    tag = "" if method == "ce" else f"-{method.replace('+', 'plus')}"
    return f"runs/{kind}-{slug}{tag}-{str(args.dataset).lower()}-s{args.seed}"


def report(result: dict[str, Any], as_json: bool) -> None:
    """Print the result: one JSON object (without the per-epoch history) or a short summary."""
    if as_json:
        print_json({k: v for k, v in result.items() if k != "history"})
        return
    print(
        f"{result['kind']} {result['arch']} ({result['method']}) on {result['dataset']}: "
        f"best top-1 {result['best_top1']:.2f}% (epoch {result['best_epoch']}), "
        f"last top-1 {result['last_top1']:.2f}% / top-5 {result['last_top5']:.2f}%"
    )
    print(f"checkpoint {result['checkpoint']}  (best: {result['best_checkpoint']})")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a model from scratch (teachers, baselines)",
        description="Train a model from scratch with cross-entropy (the paper's CIFAR recipe by default).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="resnet8..resnet110, S1 code (713), NB201 string, a resnet-imagenet/pit/autoformer "
        "architecture, or a search's result.json (its winner, built by the search's space)",
    )
    add_data_args(p)
    add_train_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    student = resolve_student(args.model)
    out = args.out or default_out("train", student.arch, "ce", args)
    result = run_training(
        args.model,
        data_config(args, student),
        out,
        train_settings(args),
        method="ce",
        device=args.device,
        resume=args.resume,
        progress=not args.quiet,
        threads=args.threads,
    )
    report(result, args.json)
    return 0
