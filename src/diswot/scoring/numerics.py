"""Numerical policy of scoring: strict fp32, the student pass's precision, and what a proxy's
numerical failure becomes (NaN, ranked last), in one place every scoring path follows."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from diswot.errors import DiswotError
from diswot.proxies import get_proxy
from diswot.scoring.memory import out_of_memory

if TYPE_CHECKING:
    from diswot.scoring.student import StudentProbe

__all__ = [
    "NUMERICAL_FAILURES",
    "PRECISIONS",
    "autocast",
    "check_precision",
    "needs_grad",
    "proxy_value",
    "strict_fp32",
]


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 convolutions and matmuls on CUDA while scoring.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs, which rounds
    their inputs to 10 mantissa bits, enough to move DisWOT scores by a few percent (measured in
    ``docs/scale.md``). Scores are meant to be fp32, so TF32 is off inside scoring and the caller's
    settings are restored after. No effect on the CPU.
    """
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


#: ``--precision`` names and the dtype of the student's forward pass under autocast. fp16 is named
#: only to be refused with its reason (see :func:`check_precision`).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str) -> None:
    """Refuse a precision that cannot score: an unknown one, or fp16.

    Random networks are where fp16 breaks: activations pass its largest value (65504) in some NB201
    cells, and the overflow does not surface as NaN, the scores just go wrong. Measured on 100 NB201
    cells (``benchmarks/precision.py``): under the paper's N(0,1) init 14 cells overflowed, Kendall
    with the fp32 scores 0.82, one score off by 19x; under PyTorch's default init 2 cells, one M_r
    off by 5.5x. bf16 keeps fp32's exponent range: Kendall 0.98-0.99, no overflow.
    """
    if precision not in PRECISIONS:
        raise DiswotError(f"unknown precision '{precision}'; use fp32 or bf16")
    if precision == "fp16":
        raise DiswotError(
            "fp16 overflows in random networks (inf activations in 14 of 100 NB201 cells under "
            "N(0,1) init, 2 under the default init) and silently corrupts scores; use "
            "--precision bf16"
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a student's forward pass under ``precision`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: Numerical failures of a proxy on one network: its value is NaN (ranked last), not a crash.
NUMERICAL_FAILURES = (RuntimeError, ValueError, FloatingPointError, ZeroDivisionError)


def proxy_value(name: str, probe: StudentProbe) -> float:
    """One proxy on one probe, in strict fp32; a numerical failure gives NaN, a user error
    (:class:`DiswotError`) propagates. The one policy every scoring path follows."""
    spec = get_proxy(name)
    try:
        with strict_fp32():
            return float(spec.fn(probe))
    except DiswotError:
        raise
    except NUMERICAL_FAILURES as exc:
        if out_of_memory(exc):  # the batch is too large for the machine, not a broken network
            raise
        return math.nan


def needs_grad(proxies: Sequence[str]) -> bool:
    """Whether any of ``proxies`` takes gradients (then its network is never recycled)."""
    return any(get_proxy(p).needs_grad for p in proxies)
