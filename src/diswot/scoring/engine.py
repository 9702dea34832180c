"""``--engine``: how a named student's forward pass is produced, and the supernet protocol.

``modules`` builds (or recycles) the student as an ``nn.Module``, for any space. ``supernet`` runs
it from a space's preallocated weight store instead (NB201:
:mod:`diswot.models.nb201_supernet`): no construction, the same features bit for bit. ``auto`` (the
default) takes ``supernet`` where the space has one and the init is gaussian, else ``modules``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from diswot.errors import DiswotError
from diswot.features import Features

__all__ = ["ENGINES", "Supernet", "SupernetFactory", "check_engine", "resolve_engine"]

#: ``--engine`` names (see the module docstring).
ENGINES: tuple[str, ...] = ("auto", "modules", "supernet")


class Supernet(Protocol):
    """What ``--engine supernet`` needs from a space's supernet."""

    def load(self, arch: str, seed: int) -> None:
        """Make ``arch``, initialised as ``init_weights`` would under ``seed``, the current one."""

    def features(self, x: Tensor, dtype: torch.dtype | None = None) -> Features:
        """The current candidate's features on ``x`` (under autocast to ``dtype`` if given)."""


class SupernetFactory(Protocol):
    """A space's ``supernet(num_classes, device, channels_last)``."""

    def __call__(self, num_classes: int, device: torch.device, channels_last: bool) -> Supernet:
        """A supernet for students of ``num_classes`` classes, on ``device``."""


def check_engine(engine: str, supernet: object | None, init: str) -> None:
    """Refuse an engine this run cannot use, before any work: an unknown name, ``supernet`` on a
    space without one, or ``supernet`` with an init it does not reproduce."""
    if engine not in ENGINES:
        raise DiswotError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if engine == "supernet":
        if supernet is None:
            raise DiswotError(
                "--engine supernet exists for the nb201 space only; use --engine modules"
            )
        if init != "gaussian":
            raise DiswotError(
                "--engine supernet reproduces the gaussian init only; use --init gaussian or "
                "--engine modules"
            )


def resolve_engine(
    engine: str, supernet: object | None, init: str, custom_hooks: bool = False
) -> str:
    """The engine a run uses (``auto`` resolved), after :func:`check_engine`'s refusals."""
    check_engine(engine, supernet, init)
    if engine == "supernet" and custom_hooks:
        raise DiswotError(
            "--engine supernet computes the space's own features; drop the student "
            "classifier/feature hooks or use --engine modules"
        )
    auto = engine == "auto" and supernet is not None and init == "gaussian" and not custom_hooks
    return "supernet" if engine == "supernet" or auto else "modules"
