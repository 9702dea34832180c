"""Compatibility re-exports of the old ``diswot.probe`` names; the code lives in
:mod:`diswot.scoring` (and ``stored_setting`` in :mod:`diswot.runfolder`)."""

from __future__ import annotations

from diswot.runfolder import SETTINGS_ADDED, stored_setting
from diswot.scoring import (
    ENGINES,
    NUMERICAL_FAILURES,
    PRECISIONS,
    Scorer,
    ScoreResult,
    StudentLike,
    StudentProbe,
    Supernet,
    TeacherCache,
    check_engine,
    check_precision,
    module_label,
    proxy_value,
    resolve_engine,
    strict_fp32,
)

__all__ = [
    "ENGINES",
    "NUMERICAL_FAILURES",
    "PRECISIONS",
    "SETTINGS_ADDED",
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
    "stored_setting",
    "strict_fp32",
]
