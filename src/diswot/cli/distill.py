"""``diswot distill``: distill a trained teacher into a student (e.g. the one a search found).

Beside the student's accuracy it prints what makes that number meaningful: the teacher's accuracy
as its checkpoint recorded it, and the gain over training the student alone when that is known:
from ``--baseline-ckpt`` (the student's own ``diswot train`` run), else, for an S1 student on
CIFAR-100, from the shipped S1 plain-training accuracy (said so).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from diswot import bench
from diswot.cli.train import add_data_args, add_train_args, report, train_from_args
from diswot.config import defaults
from diswot.distill.checkpoint import FORMAT, load_checkpoint, load_torch_file
from diswot.distill.methods import DISTILLERS
from diswot.distill.settings import TrainSettings
from diswot.distill.students import resolve_student
from diswot.errors import DiswotError


def parse_weights(items: list[str] | None) -> dict[str, float]:
    """``["sp=3000", "T=2"]`` -> ``{"sp": 3000.0, "T": 2.0}``; names are checked by the method."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise DiswotError(f"--weight takes NAME=NUMBER (e.g. kd=0.9), got '{item}'") from None
    return out


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "distill",
        help="distill a teacher into a student",
        description="Distill a trained teacher into a student (KD T=4, 0.1 CE + 0.9 KL by default).",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher architecture (resnet56 ...); optional when --teacher-ckpt is a diswot checkpoint",
    )
    p.add_argument(
        "--teacher-ckpt", required=True, help="teacher weights (diswot or plain state dict)"
    )
    p.add_argument(
        "--student",
        required=True,
        help="student: S1 code (713), resnet20, NB201 arch string, a resnet-imagenet/pit/autoformer "
        "architecture, or a search's result.json (its winner, built by the search's space)",
    )
    p.add_argument(
        "--method",
        default="kd",
        help=f"one of {', '.join(DISTILLERS.names())} (default kd)",
    )
    p.add_argument(
        "--weight",
        action="append",
        metavar="NAME=VALUE",
        help="override a loss weight or setting of the method (repeatable), e.g. --weight T=2",
    )
    p.add_argument(
        "--baseline-ckpt",
        default=None,
        metavar="CKPT",
        help="the student's own diswot train checkpoint (same architecture and dataset): the "
        "gain of distillation over it is printed (an S1 student on CIFAR-100 is compared with "
        "the shipped S1 plain-training accuracy without it)",
    )
    add_data_args(p)
    add_train_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    method = str(args.method).lower()
    DISTILLERS.get(method)  # unknown method -> one-line error listing the known ones
    weights = parse_weights(args.weight)
    baseline = _baseline(args)  # checked before the training, which may take hours
    result = train_from_args(
        args,
        args.student,
        "distill",
        method,
        teacher=args.teacher,
        teacher_ckpt=args.teacher_ckpt,
        weights=weights,
    )
    lines = _comparison(result, _teacher_record(args.teacher_ckpt), baseline)
    report(result, args.json)
    if not args.json:
        for line in lines:
            print(line)
    return 0


def _recorded(obj: Any) -> dict[str, Any] | None:
    """Best top-1 and where it comes from, of a loaded diswot checkpoint (None: not one)."""
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT and obj.get("best")):
        return None
    return {
        "arch": obj["arch"],
        "method": obj.get("method", "ce"),
        "dataset": (obj.get("dataset") or {}).get("name"),
        "num_classes": obj.get("num_classes"),
        "top1": float(obj["best"]["top1"]),
        "epoch": obj["best"].get("epoch"),
        "epochs": (obj.get("settings") or {}).get("epochs"),
    }


def _teacher_record(path: str | None) -> dict[str, Any] | None:
    """The teacher's accuracy as its checkpoint records it (None for a plain state dict)."""
    if path is None:
        return None
    return _recorded(load_torch_file(path, "teacher checkpoint"))


def _baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """The student trained alone: ``--baseline-ckpt`` (checked: same architecture and dataset),
    else the shipped S1 plain-training accuracy for an S1 student on CIFAR-100, else None."""
    student = resolve_student(args.student).arch
    dataset = str(args.dataset).lower()
    if args.baseline_ckpt is None:
        shipped = bench.s1_accuracy("cls").get(student) if dataset == "cifar100" else None
        if shipped is None:
            return None
        recipe = defaults(TrainSettings)["epochs"]  # the paper's recipe, which the table used
        n = args.epochs
        fewer = f"; this run: {n} epoch{'s' if n != 1 else ''}" if n != recipe else ""
        return {
            "top1": shipped,
            "source": "the shipped S1 plain-training accuracy on CIFAR-100, DisWOT paper, "
            f"{recipe} epochs{fewer}",
            "method": "ce",
        }
    path = Path(args.baseline_ckpt).expanduser()
    rec = _recorded(load_checkpoint(path, "--baseline-ckpt"))
    if rec is None:
        raise DiswotError(f"--baseline-ckpt {path} records no test accuracy; pass a finished run's")
    if rec["arch"] != student or rec["dataset"] != dataset:
        raise DiswotError(
            f"--baseline-ckpt {path} is a {rec['arch']} trained on {rec['dataset']}, but the "
            f"student is a {student} on {dataset}; pass the student's own diswot train run"
        )
    n = rec["epochs"]
    epochs = f", {n} epoch{'s' if n != 1 else ''}" if n else ""
    return {"top1": rec["top1"], "source": f"{path}{epochs}", "method": rec["method"]}


def _comparison(
    result: dict[str, Any], teacher: dict[str, Any] | None, baseline: dict[str, Any] | None
) -> list[str]:
    """Lines saying the teacher's accuracy and the gain over the baseline; the same figures are
    added to ``result`` (the ``--json`` output)."""
    lines = []
    if teacher is not None:
        result["teacher_top1"] = teacher["top1"]
        at = f" (epoch {teacher['epoch']})" if teacher["epoch"] else ""
        lines.append(
            f"teacher {teacher['arch']}: best top-1 {teacher['top1']:.2f}%{at} on "
            f"{teacher['dataset']}, as recorded in its checkpoint"
        )
    if baseline is not None and result.get("best_top1") is not None:
        gain = result["best_top1"] - baseline["top1"]
        alone = "trained alone" if baseline["method"] == "ce" else f"with {baseline['method']}"
        result.update(baseline_top1=baseline["top1"], gain_top1=gain)
        lines.append(
            f"gain over the student {alone}: {gain:+.2f} points of best top-1 "
            f"({baseline['top1']:.2f}% from {baseline['source']})"
        )
    return lines
