"""The DisWOT score, its two components, and the size baselines every ranking must show."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe


@register_proxy("diswot", needs_teacher=True, needs_labels=True)
def diswot(probe: StudentProbe) -> float:
    """DisWOT score -(M_s + M_r): teacher-student semantic plus relation similarity."""
    return float(probe.diswot["score"])


@register_proxy("ms", higher_is_better=False, needs_teacher=True, needs_labels=True)
def semantic(probe: StudentProbe) -> float:
    """M_s, semantic similarity of classifier gradients (lower is better)."""
    return float(probe.diswot["ms"])


@register_proxy("mr", higher_is_better=False, needs_teacher=True)
def relation(probe: StudentProbe) -> float:
    """M_r, relation similarity of pre-pool features (lower is better)."""
    return float(probe.diswot["mr"])


@register_proxy("params")
def params(probe: StudentProbe) -> float:
    """Number of parameters (the baseline a teacher-aware score must beat)."""
    return float(probe.cost.params)


@register_proxy("flops")
def flops(probe: StudentProbe) -> float:
    """Multiply-adds of one forward pass at the probe resolution."""
    return float(probe.cost.flops)
