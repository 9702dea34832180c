"""Arguments shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import sys

from diswot.probe import ENGINES, PRECISIONS


def add_probe_args(
    p: argparse.ArgumentParser, *, teacher_default: str | None, teacher_help: str = ""
) -> None:
    """Options describing the probe: teacher, batch, seeds, init, data source, device, threads.

    ``teacher_help`` is appended to the ``--teacher`` help (what a command's default and special
    values are)."""
    p.add_argument(
        "--teacher",
        default=teacher_default,
        help="teacher model name (resnet8..resnet110, S1 code, NB201 string)"
        + (f"; default {teacher_default}" if teacher_default else "")
        + teacher_help,
    )
    p.add_argument("--batch-size", type=int, default=64, help="probe batch size (default 64)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds to average (default 1)")
    p.add_argument(
        "--init",
        choices=("gaussian", "default"),
        default="gaussian",
        help="weight init: the paper's N(0,1) 'gaussian' or PyTorch's 'default'",
    )
    p.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "cifar10", "cifar100"),
        help="probe batch source (default synthetic; cifar* read --data-root)",
    )
    p.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/ etc.")
    p.add_argument(
        "--device", default="cpu", help="auto (CUDA if available), cpu, cuda, cuda:N (default cpu)"
    )
    add_threads_arg(p)
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),  # fp16 too, to be refused with its reason
        default="fp32",
        help="dtype of the students' forward pass: fp32 (default) or bf16 (Kendall 0.98-0.99 with "
        "fp32, docs/scale.md); fp16 is refused, it overflows in random networks",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="how students' forward passes run: 'supernet' scores NB201 cells from one "
        "preallocated network (no construction), 'modules' builds "
        "each one; auto (default): supernet where the space has one. Same scores either way",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")


def add_threads_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--threads N``, applied with :func:`diswot.runtime.torch_threads`; not a run setting."""
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """Where candidates are scored besides ``--workers``: local processes or a Ray cluster."""
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local processes or a Ray cluster (pip install 'diswot[ray]'); default local",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (host:port or 'auto'); default: start a local Ray runtime",
    )
    p.add_argument(
        "--gpus-per-task",
        type=float,
        default=0.0,
        help="GPUs reserved per Ray actor, e.g. 0.25 packs 4 actors per GPU (default 0)",
    )


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")
