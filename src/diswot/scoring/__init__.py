"""Scoring students against a teacher without training.

* :mod:`.scorer`: :class:`Scorer`, the entry point (batches, teacher, students, seeds), built from
  a :class:`~diswot.config.ProbeConfig`;
* :mod:`.student`: :class:`StudentProbe`, one student under one seed, what proxies read;
* :mod:`.teacher`: the teacher's side per seed (:class:`TeacherCache`);
* :mod:`.batch`: seeded probe batches, derived seeds and the memory layout;
* :mod:`.engine`: ``--engine`` and the supernet protocol;
* :mod:`.numerics`: strict fp32, ``--precision`` and the NaN policy of :func:`proxy_value`.
"""

from __future__ import annotations

from diswot.scoring.engine import ENGINES, Supernet, check_engine, resolve_engine
from diswot.scoring.numerics import (
    NUMERICAL_FAILURES,
    PRECISIONS,
    check_precision,
    proxy_value,
    strict_fp32,
)
from diswot.scoring.scorer import Scorer, ScoreResult
from diswot.scoring.student import StudentLike, StudentProbe
from diswot.scoring.teacher import TeacherCache, module_label

__all__ = [
    "ENGINES",
    "NUMERICAL_FAILURES",
    "PRECISIONS",
    "ScoreResult",
    "Scorer",
    "StudentLike",
    "StudentProbe",
    "Supernet",
    "TeacherCache",
    "check_engine",
    "check_precision",
    "module_label",
    "proxy_value",
    "resolve_engine",
    "strict_fp32",
]
