"""Distillation methods: one :class:`Distiller` subclass per method, registered in :data:`DISTILLERS`.

A distiller turns one training step's outputs into the loss. It is an ``nn.Module`` so that methods with
learned parts (FitNet's regressor, ICKD's embedding) are handled exactly like the student: the trainer
puts ``distiller.parameters()`` in the optimizer, moves the distiller to the device and saves its
``state_dict`` in every checkpoint, so ``--resume`` restores them too.

Every feature method acts on the *final* feature map (the one entering global pooling) because every
classifier network has one, whatever its architecture, and it is the map the DisWOT metrics use. The
loss weights below are each method's published CIFAR setting; override any of them with
``weights={"name": value}`` (CLI: ``--weight name=value``).

=========  =====================================================  =========================================
method     loss                                                   defaults
=========  =====================================================  =========================================
kd         ce*CE + kd*KL(T)                                       ce 0.1, kd 0.9, T 4
diswot     same loss as kd - DisWOT's gain comes from the         ce 0.1, kd 0.9, T 4
           *student* found by the search, not from the loss
diswot+    kd loss + relation*SP + semantic*ICKD                  ce 0.1, kd 0.9, T 4, relation 3000,
                                                                  semantic 2.5 (SP's and ICKD's own)
fitnet     ce*CE + hint*MSE(regressor(f_s), f_t)                  ce 1, hint 100
at         ce*CE + at*AT(f_s, f_t)                                ce 1, at 1000
sp         ce*CE + sp*SP(f_s, f_t)                                ce 1, sp 3000
ickd       ce*CE + ickd*ICKD(embed(f_s), f_t)                     ce 1, ickd 2.5
dkd        ce*CE + dkd*warm*(alpha*TCKD + beta*NCKD)(T)           ce 1, dkd 1, alpha 1, beta 8, T 4,
                                                                  warmup_frac 1/12 (20 of 240 epochs)
=========  =====================================================  =========================================

DisWOT+ uses the two similarities DisWOT searches with as extra losses: the relation term is SP on the
pre-pool feature maps; the semantic term is ICKD on channel correlations of the pre-pool maps when
teacher and student have the same width, and otherwise its width-independent form, ICKD on the class
activation maps ``W F`` (each network's features projected through its own classifier: K channels for
both). It has no learned parameters, so the student alone carries the gain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from diswot import losses
from diswot.distill.base import DISTILLERS, Distiller, FeatureInfo, StepOutputs
from diswot.errors import DiswotError

__all__ = ["DISTILLERS", "Distiller", "FeatureInfo", "StepOutputs", "Vanilla", "build_distiller"]


def _ce(out: StepOutputs) -> Tensor:
    return F.cross_entropy(out.student.logits.float(), out.target)


class Vanilla(Distiller):
    """Plain cross-entropy training (``diswot train``): no teacher."""

    name = "ce"
    defaults = {"ce": 1.0}
    needs_teacher = False

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:
        return {"ce": _ce(out)}


class _KDBase(Distiller):
    defaults = {"ce": 0.1, "kd": 0.9, "T": 4.0}

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:
        assert out.teacher is not None
        return {
            "ce": _ce(out),
            "kd": losses.kd_loss(out.student.logits, out.teacher.logits, self.w["T"]),
        }


@DISTILLERS.register("kd")
class KD(_KDBase):
    """Hinton KD with the paper's recipe: ``0.1 * CE + 0.9 * KL(T=4)``."""

    name = "kd"


@DISTILLERS.register("diswot")
class DisWOT(_KDBase):
    """DisWOT's distillation stage: plain KD. The gain over ``kd`` comes from the searched student."""

    name = "diswot"


@DISTILLERS.register("diswot+")
class DisWOTPlus(_KDBase):
    """KD plus DisWOT's relation (SP) and semantic (ICKD) similarities as losses; no learned parts."""

    name = "diswot+"
    defaults = {"ce": 0.1, "kd": 0.9, "T": 4.0, "relation": 3000.0, "semantic": 2.5}

    def __init__(self, teacher, student, weights=None, epochs=240) -> None:  # type: ignore[no-untyped-def]
        super().__init__(teacher, student, weights, epochs)
        #: Channel correlations need equal widths; otherwise compare class activation maps.
        self.semantic_form = (
            "channels" if teacher is not None and teacher.channels == student.channels else "cam"
        )

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:
        parts = super().compute(out)
        assert out.teacher is not None
        f_s, f_t = out.student.feature_map, out.teacher.feature_map
        parts["relation"] = losses.sp_loss(f_s, f_t)
        if self.semantic_form == "channels":
            parts["semantic"] = losses.ickd_loss(f_s, f_t)
        else:
            assert out.teacher_head is not None
            cam_s = losses.class_activation_maps(f_s, out.student_head)
            cam_t = losses.class_activation_maps(f_t, out.teacher_head)
            parts["semantic"] = losses.ickd_loss(cam_s, cam_t)
        return parts


class _FeatureBase(Distiller):
    """CE plus one feature term, named ``term``: ``loss(project(f_s), f_t)``."""

    term: ClassVar[str] = ""
    loss: ClassVar[Callable[[Tensor, Tensor], Tensor]]

    def project(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        """The student's map as the loss compares it; methods with a learned projection apply it."""
        return f_s

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:
        assert out.teacher is not None
        f_t = out.teacher.feature_map
        return {
            "ce": _ce(out),
            self.term: self.loss(self.project(out.student.feature_map, f_t), f_t),
        }


@DISTILLERS.register("fitnet")
class FitNet(_FeatureBase):
    """FitNets hint loss with a learned regressor (3x3 conv + BN) from student to teacher width."""

    name = "fitnet"
    term = "hint"
    loss = staticmethod(losses.fitnet_loss)
    defaults = {"ce": 1.0, "hint": 100.0}

    def __init__(self, teacher, student, weights=None, epochs=240) -> None:  # type: ignore[no-untyped-def]
        super().__init__(teacher, student, weights, epochs)
        assert teacher is not None
        self.size = (teacher.height, teacher.width)
        self.regressor = nn.Sequential(
            nn.Conv2d(student.channels, teacher.channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(teacher.channels),
        )

    def project(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        if f_s.shape[-2:] != f_t.shape[-2:]:
            f_s = F.adaptive_avg_pool2d(f_s, f_t.shape[-2:])
        return self.regressor(f_s)


@DISTILLERS.register("at")
class AT(_FeatureBase):
    """Attention transfer on the final feature maps."""

    name = "at"
    term = "at"
    loss = staticmethod(losses.at_loss)
    defaults = {"ce": 1.0, "at": 1000.0}


@DISTILLERS.register("sp")
class SP(_FeatureBase):
    """Similarity-preserving KD on the final feature maps."""

    name = "sp"
    term = "sp"
    loss = staticmethod(losses.sp_loss)
    defaults = {"ce": 1.0, "sp": 3000.0}


@DISTILLERS.register("ickd")
class ICKD(_FeatureBase):
    """Inter-channel correlation KD with ICKD's learned 1x1 embedding of the student map."""

    name = "ickd"
    term = "ickd"
    loss = staticmethod(losses.ickd_loss)
    defaults = {"ce": 1.0, "ickd": 2.5}

    def __init__(self, teacher, student, weights=None, epochs=240) -> None:  # type: ignore[no-untyped-def]
        super().__init__(teacher, student, weights, epochs)
        assert teacher is not None
        self.embed = nn.Conv2d(student.channels, teacher.channels, 1)

    def project(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return self.embed(f_s)


@DISTILLERS.register("dkd")
class DKD(Distiller):
    """Decoupled KD; its weight ramps up linearly over the first ``warmup_frac`` of the run."""

    name = "dkd"
    defaults = {"ce": 1.0, "dkd": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup_frac": 1 / 12}

    def warmup_factor(self, epoch: int) -> float:
        warm = self.w["warmup_frac"] * self.epochs
        return 1.0 if warm < 1.0 else min(epoch / warm, 1.0)

    def compute(self, out: StepOutputs) -> dict[str, Tensor]:
        assert out.teacher is not None
        d = losses.dkd_loss(
            out.student.logits,
            out.teacher.logits,
            out.target,
            self.w["alpha"],
            self.w["beta"],
            self.w["T"],
        )
        return {"ce": _ce(out), "dkd": d * self.warmup_factor(out.epoch)}


def build_distiller(
    method: str,
    teacher: FeatureInfo | None,
    student: FeatureInfo,
    weights: dict[str, float] | None = None,
    epochs: int = 240,
) -> Distiller:
    """Instantiate ``method`` (a :data:`DISTILLERS` name, or ``"ce"`` for plain training)."""
    cls = Vanilla if method == "ce" else DISTILLERS.get(method)
    if cls.needs_teacher and teacher is None:
        raise DiswotError(f"method {method} needs a teacher")
    return cls(teacher, student, weights, epochs)
