"""Distillation stage: train teachers, distill the chosen student, evaluate checkpoints.

Python API (the CLI commands ``diswot train`` / ``distill`` / ``evaluate`` are thin wrappers)::

    from diswot.distill import train_model, distill, evaluate_checkpoint
    t = train_model("resnet56", "cifar100", "data/", out="runs/t56")
    r = distill(None, t["checkpoint"], "result.json", method="diswot+", dataset="cifar100",
                data_root="data/", out="runs/s")
    r["best_top1"], r["last_top1"], r["checkpoint"]

Methods live in :data:`DISTILLERS` (``kd``, ``diswot``, ``diswot+``, ``fitnet``, ``at``, ``sp``, ``ickd``,
``dkd``); adding one is one registered :class:`Distiller` subclass. See ``docs/distill.md``.
"""

from __future__ import annotations

from diswot.distill.checkpoint import FORMAT, atomic_save, load_checkpoint
from diswot.distill.datasets import (
    DATASETS,
    BatchLoader,
    DataConfig,
    ImageData,
    load_dataset,
    make_synthetic,
)
from diswot.distill.methods import DISTILLERS, Distiller, FeatureInfo, StepOutputs, build_distiller
from diswot.distill.trainer import (
    TrainSettings,
    distill,
    evaluate_checkpoint,
    resolve_arch,
    run_training,
    train_model,
)

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
    "run_training",
    "train_model",
]
