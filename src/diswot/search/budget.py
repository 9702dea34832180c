"""The size budget a searched student must meet, and the ``100M``-style counts it is written in.

A budget is a conjunction of inclusive bounds on parameters and FLOPs. Counts are parsed from the
forms people write (``278324``, ``100M``, ``40.82M``, ``1.5G``) and shown back in the same style, so
an error or a summary reads like the command line that set the bound.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from diswot.errors import DiswotError
from diswot.models.cost import ModelCost

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float | None, what: str = "count") -> int | None:
    """``278324``, ``"100M"``, ``"1.5G"``, ``"40.82M"``, ``"250k"`` -> an integer (``None`` stays).

    ``what`` names the option in the error message (``--max-flops``), since that is what the user
    has to fix.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise DiswotError(f"{what} must be a number like 278324, 100M or 1.5G; got {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise DiswotError(f"{what} must be a non-negative number; got {text!r}")
        return int(round(text))
    m = _COUNT.match(str(text))
    if not m:
        raise DiswotError(
            f"{what} must be a number like 278324, 100M, 40.82M or 1.5G (suffixes k, M, G); "
            f"got {text!r}"
        )
    return int(round(float(m.group(1)) * _SUFFIX[m.group(2).lower()]))


def format_count(n: int | float | None) -> str:
    """Human form of a count: ``40818944`` -> ``"40.82M"``, ``278324`` -> ``"278.32k"``."""
    if n is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


@dataclass(frozen=True)
class Budget:
    """Inclusive bounds on parameters and FLOPs; ``None`` = unbounded."""

    max_params: int | None = None
    max_flops: int | None = None
    min_params: int | None = None
    min_flops: int | None = None

    @classmethod
    def parse(
        cls,
        max_params: str | int | None = None,
        max_flops: str | int | None = None,
        min_params: str | int | None = None,
        min_flops: str | int | None = None,
    ) -> Budget:
        """A budget from option values; a lower bound above its upper bound is refused here, not
        discovered as an empty search later."""
        b = cls(
            parse_count(max_params, "--max-params"),
            parse_count(max_flops, "--max-flops"),
            parse_count(min_params, "--min-params"),
            parse_count(min_flops, "--min-flops"),
        )
        for what, lo, hi in (
            ("params", b.min_params, b.max_params),
            ("flops", b.min_flops, b.max_flops),
        ):
            if lo is not None and hi is not None and lo > hi:
                raise DiswotError(
                    f"--min-{what} {format_count(lo)} exceeds --max-{what} {format_count(hi)}; "
                    "swap or loosen them"
                )
        return b

    @property
    def unbounded(self) -> bool:
        return all(v is None for v in self.to_dict().values())

    def admits(self, cost: ModelCost) -> bool:
        return (
            (self.max_params is None or cost.params <= self.max_params)
            and (self.max_flops is None or cost.flops <= self.max_flops)
            and (self.min_params is None or cost.params >= self.min_params)
            and (self.min_flops is None or cost.flops >= self.min_flops)
        )

    def text(self) -> str:
        """``"params <= 278,324 (278.32k)"``-style conjunction, or ``"none"``."""
        parts = []
        for label, lo, hi in (
            ("params", self.min_params, self.max_params),
            ("FLOPs", self.min_flops, self.max_flops),
        ):
            if lo is not None:
                parts.append(f"{label} >= {lo:,} ({format_count(lo)})")
            if hi is not None:
                parts.append(f"{label} <= {hi:,} ({format_count(hi)})")
        return " and ".join(parts) or "none"

    def to_dict(self) -> dict[str, int | None]:
        """The form ``settings.json`` stores under ``budget``."""
        return {
            "max_params": self.max_params,
            "max_flops": self.max_flops,
            "min_params": self.min_params,
            "min_flops": self.min_flops,
        }


__all__ = ["Budget", "format_count", "parse_count"]
