"""What a distillation method is: the :class:`Distiller` base class, its inputs and the registry.

In a module of its own so that the methods (:mod:`.methods`, or a user's module) register
themselves without importing the package's ``__init__``, which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import Tensor, nn

from diswot._registry import Registry
from diswot.errors import DiswotError
from diswot.features import Features

__all__ = ["DISTILLERS", "Distiller", "FeatureInfo", "StepOutputs"]

#: Method name -> :class:`Distiller` subclass. A new method is one decorated class.
DISTILLERS: Registry[type[Distiller]] = Registry("distillation method")


@dataclass(frozen=True)
class FeatureInfo:
    """Shapes a distiller is built for: pre-pool channels, spatial size and class count."""

    channels: int
    height: int
    width: int
    num_classes: int

    @classmethod
    def of(cls, feats: Features) -> FeatureInfo:
        fm = feats.feature_map
        if fm.dim() != 4:
            raise DiswotError(
                f"pre-pool feature map must be (N, C, H, W) for distillation, got {tuple(fm.shape)}"
            )
        return cls(int(fm.shape[1]), int(fm.shape[2]), int(fm.shape[3]), int(feats.logits.shape[1]))


class StepOutputs(NamedTuple):
    """Everything a distiller may look at for one batch."""

    student: Features
    teacher: Features | None
    target: Tensor
    student_head: Tensor  # classifier weight (K, C_s)
    teacher_head: Tensor | None  # classifier weight (K, C_t)
    epoch: int  # 1-based epoch being trained


class Distiller(nn.Module):
    """Base class: holds the weights and computes ``(loss, parts)`` from :class:`StepOutputs`.

    Subclasses set ``defaults`` (every tunable weight, which is also the set of accepted override keys)
    and implement :meth:`compute`. ``parts`` maps term names to *unweighted* detached values for logs.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, float]] = {}
    needs_teacher: ClassVar[bool] = True

    def __init__(
        self,
        teacher: FeatureInfo | None,
        student: FeatureInfo,
        weights: dict[str, float] | None = None,
        epochs: int = 240,
    ) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.defaults))
        if unknown:
            raise DiswotError(
                f"method {self.name} has no weight {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.w: dict[str, float] = {**self.defaults, **{k: float(v) for k, v in weights.items()}}
        self.t_info = teacher
        self.s_info = student
        self.epochs = int(epochs)
        if (
            self.needs_teacher
            and teacher is not None
            and teacher.num_classes != student.num_classes
        ):
            raise DiswotError(
                f"teacher predicts {teacher.num_classes} classes but the student {student.num_classes}"
            )

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, out: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the terms ``compute`` returns (settings such as ``T`` are never terms)."""
        parts = self.compute(out)
        loss = sum(self.w[k] * v for k, v in parts.items())
        return loss, {k: v.detach() for k, v in parts.items()}  # type: ignore[return-value]

    def settings(self) -> dict[str, float]:
        return dict(self.w)
