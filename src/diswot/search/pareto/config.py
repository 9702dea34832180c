"""A Pareto search's own settings: ``settings.json``'s ``pareto`` object, and what a resume keeps.

They sit beside :class:`~diswot.search.config.SearchConfig`'s settings (which a Pareto search has
too, with ``algorithm`` ``nsga2``) in their own object, so the settings of every other search stay
exactly as they were. Declared with :func:`diswot.config.setting`, like every run's settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diswot.config import defaults, fixed_fields, setting
from diswot.latency import DEFAULT_REPEATS, DEFAULT_WARMUP

#: The algorithm name a Pareto search records (Optuna's NSGA-II).
ALGORITHM = "nsga2"

#: The key of the Pareto settings in ``settings.json``'s ``settings`` object.
KEY = "pareto"


@dataclasses.dataclass(frozen=True)
class ParetoConfig:
    """What a Pareto search minimises beside maximising the score, and how latency is measured."""

    costs: tuple[str, ...] = setting(
        ("params",), help="costs minimised beside the score: params, flops, latency"
    )
    max_latency_ms: float | None = setting(
        None, help="latency budget in milliseconds (inclusive), at --latency-batch"
    )
    latency_batch: int = setting(1, help="batch size latency is measured at")
    latency_warmup: int = setting(DEFAULT_WARMUP, help="untimed runs before the timed ones")
    latency_repeats: int = setting(DEFAULT_REPEATS, help="timed runs; their median is recorded")
    latency_device: str | None = setting(
        None, help="device latency was measured on (the search's); None: nothing is measured"
    )
    storage: str | None = setting(
        None, help="Optuna RDB storage URL (password hidden); None: in memory, replayed on resume"
    )
    study_name: str | None = setting(None, help="the Optuna study's name in --storage")
    run_id: str | None = setting(
        None, resume="free", help="this run's id on its trials, in a study several runs share"
    )

    @property
    def measures_latency(self) -> bool:
        return "latency" in self.costs or self.max_latency_ms is not None


#: Settings a resumed Pareto search must share with the run it continues.
FIXED: tuple[str, ...] = fixed_fields(ParetoConfig)
DEFAULTS: dict[str, Any] = defaults(ParetoConfig)

__all__ = ["ALGORITHM", "DEFAULTS", "FIXED", "KEY", "ParetoConfig"]
