"""The optimisation settings of ``diswot train`` / ``diswot distill``, declared once.

Each field of :class:`TrainSettings` is a :func:`diswot.config.setting`: its default and help text
are what the CLI offers (:mod:`diswot.cli.train`), and its resume rule decides what a resumed run
must share with its checkpoint (:meth:`TrainSettings.identity`): the ``fixed`` fields define the
run, while precision, memory format and the test batch may change between sessions (a run may
resume on another device).

Defaults are the DisWOT / CRD CIFAR recipe: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64,
240 epochs, lr x0.1 at epochs 150/180/210. When ``epochs`` is changed the milestones keep their
*fractions* of the run (62.5/75/87.5%), so a short run still anneals; ``milestones`` pins them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from diswot.config import fixed_fields, setting
from diswot.errors import DiswotError, flag

__all__ = ["AMP_MODES", "CHANNELS_LAST_MODES", "TrainSettings", "amp_dtype", "use_channels_last"]

#: Milestones of the paper's 240-epoch schedule, as fractions of the run.
_MILESTONE_FRACTIONS = (150 / 240, 180 / 240, 210 / 240)
#: ``--amp``: ``auto`` is bf16 on CUDA when supported, else fp16 with a GradScaler; off on CPU.
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: ``--channels-last``: ``auto`` is on for CUDA (tensor cores want NHWC), off on the CPU.
CHANNELS_LAST_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; the ``fixed`` ones define the run and must match on resume."""

    epochs: int = setting(240, help="epochs (default 240)")
    batch_size: int = setting(64, help="batch size (default 64)")
    lr: float = setting(0.05, help="initial learning rate (default 0.05)")
    momentum: float = setting(0.9, help="SGD momentum (default 0.9)")
    weight_decay: float = setting(5e-4, help="weight decay (5e-4)")
    milestones: tuple[int, ...] | None = setting(
        None,
        help="epochs where lr is multiplied by --lr-decay (default 150 180 210, scaled to --epochs)",
    )
    lr_decay: float = setting(0.1, help="lr factor at milestones (0.1)")
    seed: int = setting(0, help="seed of init, data order and augmentation")
    # Not part of the run's identity: a run may resume on another device or precision.
    amp: str = setting("auto", resume="free", help="mixed precision (auto: bf16 on CUDA)")
    channels_last: str = setting("auto", resume="free", help="memory format (auto: on CUDA)")
    eval_batch_size: int = setting(256, resume="free", help="test batch size (256)")

    def validated(self) -> TrainSettings:
        """``self``, or a one-line :class:`DiswotError` naming the first invalid setting."""
        for key in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DiswotError(f"{flag(key)} must be a positive integer, got {v!r}")
        if self.batch_size < 2:
            raise DiswotError(
                "--batch-size must be at least 2 (BatchNorm and relation losses need 2)"
            )
        for key in ("lr", "momentum", "weight_decay", "lr_decay"):
            if not float(getattr(self, key)) >= 0:  # NaN too
                raise DiswotError(f"{flag(key)} must be >= 0, got {getattr(self, key)}")
        if self.amp not in AMP_MODES:
            raise DiswotError(f"unknown amp mode '{self.amp}'; accepted: {', '.join(AMP_MODES)}")
        cl = str(self.channels_last).lower()
        if cl not in ("auto", "on", "off", "true", "false"):
            raise DiswotError(
                f"--channels-last must be auto, on or off, got '{self.channels_last}'"
            )
        ms = self.resolved_milestones()
        if list(ms) != sorted(set(ms)) or (ms and (ms[0] < 1 or ms[-1] > self.epochs)):
            raise DiswotError(
                f"--milestones must be increasing epochs within 1..{self.epochs}, got {list(ms)}"
            )
        return self

    def resolved_milestones(self) -> tuple[int, ...]:
        """Explicit milestones, or the paper's 150/180/210-of-240 scaled to ``epochs``."""
        if self.milestones is not None:
            return tuple(int(m) for m in self.milestones)
        ms = sorted({max(1, round(f * self.epochs)) for f in _MILESTONE_FRACTIONS})
        return tuple(m for m in ms if m < self.epochs) if self.epochs > 1 else ()

    def identity(self) -> dict[str, Any]:
        """The ``fixed`` settings, as a checkpoint stores them and a resumed run must share them
        (milestones resolved, so a default schedule and the same one spelled out are one run)."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        out: dict[str, Any] = {}
        for name in fixed_fields(TrainSettings):
            if name == "milestones":
                out[name] = list(self.resolved_milestones())
            else:
                out[name] = (float if types[name] == "float" else int)(getattr(self, name))
        return out


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp mode`` on ``device``; ``None`` runs in float32."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def use_channels_last(mode: str, device: torch.device) -> bool:
    """Whether ``--channels-last mode`` means channels-last tensors on ``device``."""
    mode = str(mode).lower()
    return device.type == "cuda" if mode == "auto" else mode in ("on", "true")
