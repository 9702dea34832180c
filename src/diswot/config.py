"""Run settings as frozen dataclasses: one description serves defaults, ``settings.json`` and resume.

A setting is declared once, with :func:`setting`, on the dataclass of the run it belongs to
(:class:`ProbeConfig` here; the search's and the rank's settings extend it in their packages). The
declaration carries its default and whether a resumed run must share it (``resume="fixed"``), may
change it (``"free"``: device, threads, workers) or may grow it (``"grow"``: cycles, seeds, proxies).
From that one place come the CLI defaults, the ``settings`` object written to ``settings.json``
(:func:`to_settings`), the fields a resume compares (:func:`fixed_fields`) and
:func:`replace`/:func:`from_settings`, the way scikit-learn's ``get_params``/``clone`` read one
signature for many uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from diswot.errors import DiswotError, flag

Resume = Literal["fixed", "free", "grow"]
C = TypeVar("C")


def setting(default: Any, *, resume: Resume = "fixed", help: str = "") -> Any:  # noqa: A002
    """A dataclass field with the resume rule and help text as metadata."""
    return dataclasses.field(default=default, metadata={"resume": resume, "help": help})


def fixed_fields(cls: type) -> tuple[str, ...]:
    """Names of the settings a resumed run must share with the run it continues."""
    return tuple(
        f.name for f in dataclasses.fields(cls) if f.metadata.get("resume", "fixed") == "fixed"
    )


def help_text(cls: type, name: str) -> str:
    """The help text of setting ``name`` (what the CLI prints for its flag)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def defaults(cls: type) -> dict[str, Any]:
    """Every setting's default, by name (the CLI's defaults come from here)."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def to_settings(cfg: Any) -> dict[str, Any]:
    """The JSON-ready dict of a config (tuples become lists), as ``settings.json`` stores it."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def from_settings(cls: type[C], settings: Mapping[str, Any], **overrides: Any) -> C:
    """A config from a stored ``settings`` dict (unknown keys ignored), with ``overrides`` applied."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in settings.items() if k in names}
    values.update(overrides)
    return build(cls, **values)


def build(cls: type[C], **values: Any) -> C:
    """``cls(**values)`` where an unknown name is a one-line error naming the accepted ones."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise DiswotError(
            f"unknown setting {flag(unknown[0])} for {cls.__name__}; "
            f"accepted: {', '.join(flag(n) for n in names)}"
        )
    return cls(**values)


def replace(cfg: C, **changes: Any) -> C:
    """A copy of ``cfg`` with ``changes`` (validated like :func:`build`)."""
    return build(type(cfg), **{**to_fields(cfg), **changes})


def to_fields(cfg: Any) -> dict[str, Any]:
    """The config's fields as they are (no JSON conversion)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """How one student is probed against one teacher: the settings every score depends on.

    The teacher itself is not a setting here (it is a name, a module or ``None``); what it is
    recorded as lives with the run that uses it.
    """

    num_classes: int = setting(100, help="classes of the probe labels, the teacher and students")
    batch_size: int = setting(64, help="probe batch size (at least 2)")
    seeds: tuple[int, ...] = setting((0,), resume="grow", help="probe seeds to average over")
    init: str = setting("gaussian", help="gaussian (the paper's N(0,1)) or default (PyTorch's)")
    data: str = setting("synthetic", help="synthetic, cifar10 or cifar100")
    data_root: str | None = setting(None, resume="free", help="folder of the dataset")
    image_size: int = setting(32, help="probe resolution")
    device: str = setting("cpu", resume="free", help="auto, cpu, cuda or cuda:N")
    semantic: str = setting("auto", help="semantic form: auto, channel or class")
    precision: str = setting("fp32", help="dtype of the students' shared forward pass")
    channels_last: bool | None = setting(
        None, resume="free", help="channels-last layout (None: on the CPU only)"
    )
    engine: str = setting("auto", resume="free", help="auto, modules or supernet")
    teacher_classifier: str | None = setting(None, help="the teacher's classifier module")
    teacher_feature: str | None = setting(None, help="the teacher's pre-pool feature module")
    student_classifier: str | None = setting(None, help="the students' classifier module")
    student_feature: str | None = setting(None, help="the students' pre-pool feature module")
    teacher_image_size: int | None = setting(None, help="the teacher's resolution, if different")


__all__ = [
    "ProbeConfig",
    "build",
    "defaults",
    "fixed_fields",
    "from_settings",
    "help_text",
    "replace",
    "setting",
    "to_fields",
    "to_settings",
]
