"""Distillation stage: train teachers, distill the chosen student, evaluate checkpoints.

Python API (the CLI commands ``diswot train`` / ``distill`` / ``evaluate`` are thin wrappers)::

    from diswot.distill import train_model, distill, evaluate_checkpoint
    t = train_model("resnet56", "cifar100", "data/", out="runs/t56")
    r = distill(None, t["checkpoint"], "result.json", method="diswot+", dataset="cifar100",
                data_root="data/", out="runs/s")
    r["best_top1"], r["last_top1"], r["checkpoint"]

Methods live in :data:`DISTILLERS` (``kd``, ``diswot``, ``diswot+``, ``fitnet``, ``at``, ``sp``, ``ickd``,
``dkd``); adding one is one registered :class:`Distiller` subclass. See ``docs/distill.md``.

Modules: :mod:`.api` (the three functions), :mod:`.run` (one run, fresh or resumed), :mod:`.loop`
(the epochs and ``evaluate``), :mod:`.settings` (``TrainSettings``), :mod:`.students` (what a
``--student`` names), :mod:`.base` and :mod:`.methods` (distillers), :mod:`.datasets`,
:mod:`.checkpoint`, :mod:`.logs`. The losses themselves are :mod:`diswot.losses`.
"""

from __future__ import annotations

from diswot.distill.api import distill, evaluate_checkpoint, train_model
from diswot.distill.base import DISTILLERS, Distiller, FeatureInfo, StepOutputs
from diswot.distill.checkpoint import FORMAT, atomic_save, load_checkpoint
from diswot.distill.datasets import (
    DATASETS,
    BatchLoader,
    DataConfig,
    ImageData,
    load_dataset,
    make_synthetic,
)
from diswot.distill.methods import build_distiller
from diswot.distill.run import run_training
from diswot.distill.settings import TrainSettings
from diswot.distill.students import resolve_arch, resolve_student

__all__ = [
    "DATASETS",
    "DISTILLERS",
    "FORMAT",
    "BatchLoader",
    "DataConfig",
    "Distiller",
    "FeatureInfo",
    "ImageData",
    "StepOutputs",
    "TrainSettings",
    "atomic_save",
    "build_distiller",
    "distill",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_dataset",
    "make_synthetic",
    "resolve_arch",
    "resolve_student",
    "run_training",
    "train_model",
]
