"""Scoring students against a teacher without training.

* :mod:`.scorer`: :class:`Scorer`, the entry point (batches, teacher, students, seeds), built from
  a :class:`~diswot.config.ProbeConfig`;
* :mod:`.student`: :class:`StudentProbe`, one student under one seed, what proxies read;
* :mod:`.teacher`: the teacher's side per seed (:class:`TeacherCache`), a trained teacher from a
  checkpoint (:func:`load_teacher_checkpoint`) and ``teacher_init`` (keep or random);
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
from diswot.scoring.teacher import (
    TEACHER_INITS,
    TeacherCache,
    TeacherCheckpoint,
    load_teacher_checkpoint,
    module_label,
    weights_sha256,
)

__all__ = [
    "ENGINES",
    "NUMERICAL_FAILURES",
    "PRECISIONS",
    "TEACHER_INITS",
    "ScoreResult",
    "Scorer",
    "StudentLike",
    "StudentProbe",
    "Supernet",
    "TeacherCache",
    "TeacherCheckpoint",
    "check_engine",
    "check_precision",
    "load_teacher_checkpoint",
    "module_label",
    "proxy_value",
    "resolve_engine",
    "strict_fp32",
    "weights_sha256",
]
