"""The teacher's side of scoring: its features and classifier gradient per seed, computed once and
shared by every student; a trained teacher read from a checkpoint; and how a run folder names a
teacher given as a module.

A teacher has weights of its own when it is given as a module or read from a checkpoint
(``--teacher-ckpt``): ``teacher_init="keep"`` (the default for those) scores it with them, while
``"random"`` re-initialises a copy under each probe seed, as the paper does (and as a teacher given
by name always is: it has no weights to keep). See :func:`resolve_teacher_init`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.config import ProbeConfig
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.metrics import Reference, classifier_gradient
from diswot.scoring.numerics import strict_fp32

__all__ = [
    "TEACHER_INITS",
    "TeacherCache",
    "TeacherCheckpoint",
    "load_teacher_checkpoint",
    "module_label",
    "resolve_teacher_init",
    "teacher_cache",
    "weights_sha256",
]

#: ``--teacher-init``: ``keep`` scores a trained teacher (a checkpoint, a given module) with its own
#: weights; ``random`` re-initialises it under each probe seed, the paper's setting.
TEACHER_INITS: tuple[str, ...] = ("keep", "random")


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
    # Train mode, as the method scores every network: BatchNorm normalises with the probe batch's
    # own statistics, not a trained teacher's running ones. Its students are random networks whose
    # running statistics mean nothing, so both sides of every metric are then normalised the same
    # way, and a probe batch unlike the training data (synthetic noise) cannot push the teacher's
    # activations off the scale its running statistics expect. The running statistics of this
    # copy are updated by the pass and then dropped; the caller's module is never run.
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
    architecture (``repr``: layers and shapes, not weights), so resuming with another architecture
    of the same class is refused, not silently mixed. Weights kept (``teacher_init="keep"``) are
    recorded apart, by :func:`weights_sha256`."""
    digest = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
    return f"{type(model).__name__}#{digest}"


def weights_sha256(model: nn.Module) -> str:
    """A digest of a module's weights and buffers (names, dtypes, shapes and bytes): what a run
    records of a teacher module scored with its own weights, so a resume with other weights of the
    same architecture is refused."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_teacher_init(
    teacher: object, teacher_init: str | None, ckpt: str | Path | None = None
) -> str:
    """``keep`` or ``random``: what ``teacher_init`` means for ``teacher`` (a name, a module or
    ``None``) read from ``ckpt`` (a ``--teacher-ckpt`` path, or ``None``).

    ``None`` keeps the weights of a module or checkpoint, and is ``random`` for a teacher given by
    name (built untrained, it has no weights to keep) or for no teacher. Refused, in one line:
    ``keep`` with nothing trained to keep, and ``random`` with a checkpoint, whose weights it would
    throw away unread (name the architecture with ``--teacher`` instead: the same scores).
    """
    if teacher_init is not None and teacher_init not in TEACHER_INITS:
        raise DiswotError(f"unknown --teacher-init '{teacher_init}'; use keep or random")
    trained = ckpt is not None or isinstance(teacher, nn.Module)
    if teacher_init is None:
        return "keep" if trained else "random"
    if teacher_init == "keep" and not trained:
        what = "no teacher is given" if teacher is None else f"teacher {teacher!r} is a name"
        raise DiswotError(
            f"--teacher-init keep needs trained weights but {what}; pass --teacher-ckpt PATH "
            "(a teacher given by name alone is built untrained and initialised the paper's way)"
        )
    if teacher_init == "random" and ckpt is not None:
        raise DiswotError(
            f"--teacher-init random re-initialises the teacher, so the weights in {ckpt} would go "
            "unused; drop --teacher-ckpt (name the architecture with --teacher) for the paper's "
            "random teacher, or drop --teacher-init random to score the trained one"
        )
    return teacher_init


@dataclass(frozen=True)
class TeacherCheckpoint:
    """A trained teacher read from a file: what a run records of it and shows."""

    #: The file, as an absolute path.
    path: str
    #: The file's SHA-256: a resumed run must read the very same weights.
    sha256: str
    #: The architecture the weights were loaded into (a name ``create_model`` or a space builds).
    arch: str
    num_classes: int
    #: ``diswot`` (a ``diswot train``/``distill`` checkpoint) or ``state_dict`` (any other file).
    kind: str


def load_teacher_checkpoint(
    path: str | Path, teacher: str | None, num_classes: int, *, classes_fix: str | None = None
) -> tuple[nn.Module, TeacherCheckpoint]:
    """The teacher network in ``path`` with its trained weights, and what a run records of it.

    ``path`` is a ``diswot train`` checkpoint (``best.pt``/``last.pt``, which names its
    architecture and class count, so ``teacher`` may be ``None``) or a plain state dict (bare, or
    under ``model``/``state_dict``/``net``, as other training scripts save it) of the network that
    ``teacher`` names, built for ``num_classes`` classes. Every failure is a one-line
    :class:`DiswotError` that says what the file holds and which flag fixes it: ``classes_fix``
    (formatted with ``k``, the file's class count) tells how to score ``k`` classes where
    ``--num-classes`` is not the way (a search or rank's class count comes from ``--target``).
    """
    from diswot.distill.checkpoint import (
        FORMAT,
        file_sha256,
        load_torch_file,
        load_weights_into,
        state_dict_from,
    )
    from diswot.distill.students import build_model, resolve_arch

    file = Path(path).expanduser().resolve()
    obj = load_torch_file(file, "teacher checkpoint")
    fix = classes_fix or "pass --num-classes {k}"
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        arch, k, kind = str(obj["arch"]), int(obj["num_classes"]), "diswot"
        if teacher is not None and resolve_arch(teacher) != arch:
            raise DiswotError(
                f"teacher checkpoint {file} holds a {arch}, not a {teacher}; pass --teacher {arch} "
                "(or leave --teacher out: the checkpoint names its architecture)"
            )
        if k != num_classes:
            raise DiswotError(
                f"teacher checkpoint {file} holds a {arch} for {k} classes but {num_classes} are "
                f"scored; {fix.format(k=k)}"
            )
    elif teacher is None:
        raise DiswotError(
            f"teacher checkpoint {file} is a plain state dict, which does not name its "
            "architecture; pass --teacher NAME of the network it was saved from"
        )
    else:
        arch, kind = resolve_arch(teacher), "state_dict"
    try:
        state = state_dict_from(obj)
    except DiswotError as exc:
        raise DiswotError(f"teacher checkpoint {file}: {exc}") from exc
    model = build_model(arch, num_classes)
    own = model.state_dict()
    head = next((n for n in reversed(own) if own[n].ndim == 2), None)  # the classifier's weight
    if head is not None and head in state and state[head].ndim == 2:
        k = int(state[head].shape[0])
        if k != num_classes and state[head].shape[1] == own[head].shape[1]:
            raise DiswotError(
                f"teacher checkpoint {file} holds a classifier for {k} classes ({head}) but "
                f"{num_classes} are scored; {fix.format(k=k)}"
            )
    try:
        load_weights_into(model, state, f"teacher checkpoint {file}")
    except DiswotError as exc:
        raise DiswotError(
            f"{exc}; it is not a {arch}: pass --teacher NAME of the network it was saved from"
        ) from exc
    info = TeacherCheckpoint(str(file), file_sha256(file), arch, num_classes, kind)
    return model, info
