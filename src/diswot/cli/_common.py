"""Arguments shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import sys

from diswot.data import SOURCES
from diswot.errors import flag
from diswot.scoring import ENGINES, PRECISIONS
from diswot.scoring.teacher import TEACHER_INITS

#: The probe options' defaults, as :func:`add_probe_args` sets them (``--teacher``'s is per command).
PROBE_DEFAULTS: dict[str, object] = {
    "batch_size": 64,
    "seeds": 1,
    "init": "gaussian",
    "data": "synthetic",
    "data_root": None,
    "device": "cpu",
    "precision": "fp32",
    "engine": "auto",
}


def add_probe_args(
    p: argparse.ArgumentParser,
    *,
    teacher_default: str | None,
    teacher_help: str = "",
    unset: bool = False,
) -> None:
    """Options describing the probe: teacher (and its weights), batch, seeds, init, data source,
    device, threads.

    ``teacher_help`` is appended to the ``--teacher`` help (what a command's default and special
    values are). ``unset=True`` leaves every probe option ``None`` unless given, so the command can
    tell explicit options from defaults and fill the rest itself (from :data:`PROBE_DEFAULTS` or
    elsewhere); the help still names the defaults of :data:`PROBE_DEFAULTS`."""
    d = {k: None if unset else v for k, v in PROBE_DEFAULTS.items()}
    p.add_argument(
        "--teacher",
        default=None if unset else teacher_default,
        help="teacher model name (resnet8..resnet110, S1 code, NB201 string)"
        + (f"; default {teacher_default}" if teacher_default else "")
        + teacher_help,
    )
    p.add_argument(
        "--teacher-ckpt",
        metavar="PATH",
        default=None,
        help="a trained teacher: a `diswot train` checkpoint (best.pt/last.pt; it names its "
        "architecture and classes) or a plain state_dict of the --teacher network",
    )
    p.add_argument(
        "--teacher-init",
        choices=TEACHER_INITS,
        default=None,
        help="keep (default with --teacher-ckpt): score the teacher with its trained weights; "
        "random: re-initialise it per probe seed, the paper's setting and the only one for a "
        "teacher given by name (random with --teacher-ckpt is refused: the weights would go unused)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d["batch_size"],
        help=f"probe batch size (default {PROBE_DEFAULTS['batch_size']})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=d["seeds"],
        help=f"number of seeds to average (default {PROBE_DEFAULTS['seeds']})",
    )
    p.add_argument(
        "--init",
        choices=("gaussian", "default"),
        default=d["init"],
        help="weight init: the paper's N(0,1) 'gaussian' (default) or PyTorch's 'default'",
    )
    p.add_argument(
        "--data",
        default=d["data"],
        choices=SOURCES,
        help="probe batch source (default synthetic; the others read --data-root)",
    )
    p.add_argument(
        "--data-root",
        default=d["data_root"],
        help="folder holding cifar-10-batches-py/ etc., or for imagefolder <class>/<image> "
        "subfolders (or train/<class>/<image>)",
    )
    p.add_argument(
        "--device",
        default=d["device"],
        help="auto (CUDA if available), cpu, cuda, cuda:N (default cpu)",
    )
    add_threads_arg(p)
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),  # fp16 too, to be refused with its reason
        default=d["precision"],
        help="dtype of the students' forward pass: fp32 (default) or bf16 (Kendall 0.98-0.99 with "
        "fp32, docs/scale.md); fp16 is refused, it overflows in random networks",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=d["engine"],
        help="how students' forward passes run: 'supernet' scores NB201 cells from one "
        "preallocated network (no construction), 'modules' builds "
        "each one; auto (default): supernet where the space has one. Same scores either way",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")


def add_threads_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--threads N``, applied with :func:`diswot.runtime.torch_threads`; not a run setting."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: one per CPU that other processes leave free)",
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


def options_text(values: dict[str, object]) -> str:
    """``{"batch_size": 16}`` -> ``--batch-size 16``, unset (``None``) values left out."""
    return " ".join(f"{flag(k)} {v}" for k, v in values.items() if v is not None)


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")
