"""Compatibility module: the old home of the training loop, now split by concept.

:mod:`.settings` (``TrainSettings``), :mod:`.students` (what a ``--student`` names), :mod:`.run` (one
run, fresh or resumed), :mod:`.loop` (the epochs), :mod:`.logs` (per-epoch logs),
:mod:`.checkpoint` and :mod:`.api` (``train_model``, ``distill``, ``evaluate_checkpoint``). Import from
:mod:`diswot.distill` or those modules; this one only re-exports their names for old imports.
"""

from __future__ import annotations

from diswot.distill.api import distill, evaluate_checkpoint, train_model
from diswot.distill.run import run_training
from diswot.distill.settings import AMP_MODES, TrainSettings
from diswot.distill.students import (
    StudentSpec,
    arch_space,
    build_model,
    resolve_arch,
    resolve_student,
)
from diswot.runtime import resolve_device

__all__ = [
    "AMP_MODES",
    "StudentSpec",
    "TrainSettings",
    "arch_space",
    "build_model",
    "distill",
    "evaluate_checkpoint",
    "resolve_arch",
    "resolve_device",
    "resolve_student",
    "run_training",
    "train_model",
]
