"""The teacher's side of scoring: its features and classifier gradient per seed, computed once and
shared by every student, and how a run folder names a teacher given as a module."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.config import ProbeConfig
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.metrics import Reference, classifier_gradient
from diswot.scoring.numerics import strict_fp32

__all__ = ["TeacherCache", "module_label", "teacher_cache"]


@dataclass
class TeacherCache:
    """Teacher-side quantities for one seed: pre-pool features and classifier gradient."""

    feature_map: Tensor
    grad: Tensor
    logits: Tensor
    seconds: float

    _derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def reference(self) -> Reference:
        """The teacher's half of the DisWOT metrics, computed once for every student."""
        return Reference(self.grad, self.feature_map)

    def derived(self, name: str, compute: Callable[[TeacherCache], Any]) -> Any:
        """``compute(self)``, once: a teacher-side term a proxy reuses for every student."""
        if name not in self._derived:
            self._derived[name] = compute(self)
        return self._derived[name]


def teacher_cache(
    model: nn.Module, x: Tensor, y: Tensor, config: ProbeConfig, started: float
) -> TeacherCache:
    """The :class:`TeacherCache` of ``model`` (the teacher, built and initialised under its seed)
    on the probe batch ``(x, y)``, resized to ``config.teacher_image_size`` if that differs (a
    CIFAR teacher at 32 px scoring 224 px students). ``seconds`` counts from ``started`` (a
    ``time.perf_counter()`` taken before the build and the batch)."""
    t_size = config.teacher_image_size
    if t_size and t_size != x.shape[-1]:
        x = F.interpolate(
            x, size=(t_size, t_size), mode="bilinear", align_corners=False, antialias=True
        )
    model.train()
    with (
        strict_fp32(),
        torch.no_grad(),
        FeatureExtractor(model, config.teacher_classifier, config.teacher_feature) as fx,
    ):
        f = fx(x)
    if f.logits.shape[1] != config.num_classes:
        raise DiswotError(
            f"teacher outputs {f.logits.shape[1]} classes but {config.num_classes} were asked; "
            f"build the teacher with num_classes={config.num_classes}"
        )
    return TeacherCache(
        feature_map=f.feature_map.detach(),
        grad=classifier_gradient(f.logits, f.pooled, y),
        logits=f.logits.detach(),
        seconds=time.perf_counter() - started,
    )


def module_label(model: nn.Module) -> str:
    """How run folders record a teacher given as a module: its class and a digest of its
    architecture (``repr``: layers and shapes, not weights, which the probe re-initialises), so
    resuming with another architecture of the same class is refused, not silently mixed."""
    digest = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
    return f"{type(model).__name__}#{digest}"
