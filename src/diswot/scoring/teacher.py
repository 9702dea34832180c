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
    "TARGET_CLASSES_FIX",
    "WEIGHT_SETTINGS",
    "TeacherCache",
    "TeacherCheckpoint",
    "TeacherChoice",
    "choose_teacher",
    "load_teacher_checkpoint",
    "module_label",
    "reload_teacher",
    "resolve_teacher_init",
    "teacher_cache",
    "weights_sha256",
]

#: ``--teacher-init``: ``keep`` scores a trained teacher (a checkpoint, a given module) with its own
#: weights; ``random`` re-initialises it under each probe seed, the paper's setting.
TEACHER_INITS: tuple[str, ...] = ("keep", "random")

#: The ``settings.json`` fields of a search or rank run that record the teacher's weights
#: (:meth:`TeacherChoice.settings`); a folder written before them read ``teacher_init`` random.
WEIGHT_SETTINGS: tuple[str, ...] = ("teacher_ckpt", "teacher_sha256", "teacher_init")

#: How a search or rank scores ``k`` classes (their class count comes from the target): the
#: ``classes_fix`` of :func:`load_teacher_checkpoint`.
TARGET_CLASSES_FIX = (
    "--target fixes {n} classes: pick a target with {k}, or a teacher trained for {n}"
)


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
        what = (
            "no trained teacher is given" if teacher is None else f"teacher {teacher!r} is a name"
        )
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
    (formatted with ``k``, the file's class count, and ``n``, ``num_classes``) tells how to score
    ``k`` classes where ``--num-classes`` is not the way (:data:`TARGET_CLASSES_FIX`).
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
                f"scored; {fix.format(k=k, n=num_classes)}"
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
                f"{num_classes} are scored; {fix.format(k=k, n=num_classes)}"
            )
    # BatchNorm's step counters are absent from some published files (torchvision's); no score
    # depends on them, so the built network's own stand in rather than refusing the file.
    state = {**{n: t for n, t in own.items() if n.endswith(".num_batches_tracked")}, **state}
    try:
        load_weights_into(model, state, f"teacher checkpoint {file}")
    except DiswotError as exc:
        raise DiswotError(
            f"{exc}; it is not a {arch}: pass --teacher NAME of the network it was saved from"
        ) from exc
    info = TeacherCheckpoint(str(file), file_sha256(file), arch, num_classes, kind)
    return model, info


def reload_teacher(path: str | Path, arch: str, num_classes: int, sha256: str | None) -> nn.Module:
    """The trained teacher a run recorded (``teacher_ckpt``, ``teacher`` and ``teacher_sha256`` of
    its settings), read again where it is scored (a worker, a resumed run): refused in one line if
    the file no longer has the digest the run recorded."""
    model, info = load_teacher_checkpoint(path, arch, num_classes)
    if sha256 is not None and info.sha256 != sha256:
        raise DiswotError(
            f"teacher checkpoint {info.path} has changed since this run recorded it (sha256 "
            f"{sha256[:12]}, now {info.sha256[:12]}); restore that file or use another --out"
        )
    return model


@dataclass(frozen=True)
class TeacherChoice:
    """The teacher a search or rank run scores against and what its settings record of it."""

    #: What the Scorer gets: the checkpoint's trained network, else the teacher as given.
    teacher: str | nn.Module | None
    #: ``keep`` or ``random`` (:func:`resolve_teacher_init`).
    init: str
    checkpoint: TeacherCheckpoint | None = None
    #: The checkpoint file's digest, or a module's kept weights' (:func:`weights_sha256`).
    sha256: str | None = None

    def label(self, teacher: str | nn.Module | None) -> str | None:
        """The ``teacher`` setting of ``teacher`` (this choice's, a default filled in): the
        checkpoint's architecture, a name as it is, a module by :func:`module_label`."""
        if self.checkpoint is not None:
            return self.checkpoint.arch
        return module_label(teacher) if isinstance(teacher, nn.Module) else teacher

    def settings(self) -> dict[str, str | None]:
        """The :data:`WEIGHT_SETTINGS` of ``settings.json``."""
        path = self.checkpoint.path if self.checkpoint is not None else None
        return dict(zip(WEIGHT_SETTINGS, (path, self.sha256, self.init)))


def choose_teacher(
    teacher: str | nn.Module | None,
    ckpt: str | Path | None,
    teacher_init: str | None,
    num_classes: int,
    *,
    classes_fix: str | None = None,
) -> TeacherChoice:
    """The teacher of a run from what was asked: ``teacher`` (a name, a module, or ``None`` for
    the run's default), ``ckpt`` (``--teacher-ckpt``) and ``teacher_init`` (``--teacher-init``),
    with the one-line refusals of :func:`resolve_teacher_init` and
    :func:`load_teacher_checkpoint`."""
    init = resolve_teacher_init(teacher, teacher_init, ckpt)
    if ckpt is None:
        kept = isinstance(teacher, nn.Module) and init == "keep"
        return TeacherChoice(teacher, init, sha256=weights_sha256(teacher) if kept else None)  # type: ignore[arg-type]
    if isinstance(teacher, nn.Module):
        raise DiswotError("give the teacher as a module or as a checkpoint file, not both")
    model, info = load_teacher_checkpoint(ckpt, teacher, num_classes, classes_fix=classes_fix)
    return TeacherChoice(model, init, info, info.sha256)
