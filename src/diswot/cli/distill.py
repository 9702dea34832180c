"""``diswot distill``: distill a trained teacher into a student (e.g. the one a search found)."""

from __future__ import annotations

import argparse

from diswot.cli.train import add_data_args, add_train_args, train_and_report
from diswot.distill.methods import DISTILLERS
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
    add_data_args(p)
    add_train_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    method = str(args.method).lower()
    DISTILLERS.get(method)  # unknown method -> one-line error listing the known ones
    weights = parse_weights(args.weight)
    return train_and_report(
        args,
        args.student,
        "distill",
        method,
        teacher=args.teacher,
        teacher_ckpt=args.teacher_ckpt,
        weights=weights,
    )
