"""``diswot train``: train a model from scratch (teachers, vanilla baselines).

Also defines the data / optimisation / output options that ``diswot distill`` shares, so both commands
accept the same flags with the same defaults (the paper's CIFAR recipe).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from diswot.cli._common import add_threads_arg, print_json
from diswot.config import defaults, help_text
from diswot.distill.datasets import DATASETS, DataConfig
from diswot.distill.run import run_training
from diswot.distill.settings import AMP_MODES, CHANNELS_LAST_MODES, TrainSettings
from diswot.distill.students import StudentSpec, resolve_student
from diswot.errors import flag

#: Defaults of the data and optimisation options: the dataclasses' own, declared once there.
_DATA = defaults(DataConfig)
_TRAIN = defaults(TrainSettings)
#: The synthetic task's options: DataConfig field, type and help.
_SYNTHETIC: tuple[tuple[str, type, str], ...] = (
    ("synthetic_train", int, "synthetic train images (5000)"),
    ("synthetic_test", int, "synthetic test images (1000)"),
    ("synthetic_classes", int, "synthetic classes (10)"),
    ("synthetic_seed", int, "seed of the synthetic task (0)"),
    ("synthetic_noise", float, "synthetic pixel noise (0.6)"),
)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Which dataset: CIFAR pickles, an image folder, or the seeded synthetic task."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        "--data",  # the probe commands' name for the same choice
        dest="dataset",
        default="cifar100",
        help=f"one of {', '.join(DATASETS)} (default cifar100); --data is the same option",
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
    for name, kind, text in _SYNTHETIC:
        g.add_argument(flag(name), type=kind, default=_DATA[name], help=text)


def _setting(g: argparse._ArgumentGroup, name: str, *aliases: str, **kw: Any) -> None:
    """The flag of :class:`TrainSettings` field ``name``, with the field's default and help."""
    g.add_argument(
        flag(name), *aliases, default=_TRAIN[name], help=help_text(TrainSettings, name), **kw
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Optimisation, output and runtime options (defaults: the DisWOT/CRD CIFAR recipe)."""
    g = p.add_argument_group(
        "training (defaults: SGD 0.05, momentum 0.9, wd 5e-4, batch 64, 240 epochs)"
    )
    _setting(g, "epochs", type=int)
    _setting(g, "batch_size", type=int)
    _setting(g, "lr", type=float)
    _setting(g, "momentum", type=float)
    _setting(g, "weight_decay", "--wd", type=float)
    _setting(g, "milestones", type=int, nargs="*")
    _setting(g, "lr_decay", type=float)
    _setting(g, "seed", type=int)
    _setting(g, "eval_batch_size", type=int)
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA if available; training wants a GPU), cpu, cuda, cuda:N",
    )
    _setting(r, "amp", choices=AMP_MODES)
    _setting(r, "channels_last", choices=CHANNELS_LAST_MODES)
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
        **{name: getattr(args, name) for name, _, _ in _SYNTHETIC},
    )


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` of the parsed flags (one flag per field)."""
    values = {name: getattr(args, name) for name in _TRAIN}
    if values["milestones"] is not None:
        values["milestones"] = tuple(values["milestones"])
    return TrainSettings(**values)


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


def train_and_report(
    args: argparse.Namespace, student_arg: str, kind: str, method: str, **run: Any
) -> int:
    """Run ``diswot train`` (``method="ce"``) or ``distill`` on the shared flags and print the result."""
    report(train_from_args(args, student_arg, kind, method, **run), args.json)
    return 0


def train_from_args(
    args: argparse.Namespace, student_arg: str, kind: str, method: str, **run: Any
) -> dict[str, Any]:
    """Run ``diswot train`` or ``distill`` on the shared flags; the result, not yet printed."""
    student = resolve_student(student_arg)
    out = args.out or default_out(kind, student.arch, method, args)
    return run_training(
        student_arg,
        data_config(args, student),
        out,
        train_settings(args),
        method=method,
        device=args.device,
        resume=args.resume,
        progress=not args.quiet,
        threads=args.threads,
        **run,
    )


def run(args: argparse.Namespace) -> int:
    return train_and_report(args, args.model, "train", "ce")
