"""How well a training-free score ranks architectures: rank correlations and top-k statistics.

All functions take two equal-length sequences, ``pred`` (proxy scores, **higher = better**) and
``true`` (ground-truth accuracy), as lists or numpy arrays. Conventions, chosen so that a broken proxy
can never look good:

* **Non-finite predictions** (NaN, +inf, -inf - e.g. a score that overflowed or a network that
  diverged) are ranked *last*, tied with each other and worse than every finite score; they are not
  dropped, so a proxy that fails on hard networks pays for it. Concretely each one is replaced by
  ``min(finite) - max(1, max(finite) - min(finite))`` (one value range below the worst finite score),
  which also keeps Pearson finite. :func:`correlate` reports how many there were (``n_nonfinite``).
  ``true`` must be finite.
* **Undefined correlations** (a constant ``pred`` or ``true``) are reported as ``0.0`` - no ranking
  information - instead of NaN, so averages over seeds stay finite.
* **Ties in ``pred`` at the top-k cut** are broken pessimistically (lower true accuracy first), so
  giving many architectures the same score earns nothing. True ranks use competition ranking: an
  architecture's true rank is 1 + the number with strictly higher accuracy.
* ``k = max(1, floor(frac * n + 0.5))`` (round half up), e.g. 3 of 64 for ``frac=0.05``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diswot.errors import DiswotError

ArrayLike = Sequence[float] | np.ndarray


def _prepare(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate and return float64 copies with non-finite predictions moved below the worst finite."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1).copy()
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise DiswotError(f"pred and true must have equal length, got {p.size} and {t.size}")
    if p.size < 2:
        raise DiswotError(f"rank statistics need at least 2 architectures, got {p.size}")
    if not np.isfinite(t).all():
        raise DiswotError("true values must all be finite; remove architectures without accuracy")
    bad = ~np.isfinite(p)
    n_bad = int(bad.sum())
    if n_bad:
        finite = p[~bad]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            p[bad] = lo - max(1.0, hi - lo)
        else:
            p[:] = 0.0
    return p, t, n_bad


def _undefined(p: np.ndarray, t: np.ndarray) -> bool:
    return bool(np.ptp(p) == 0 or np.ptp(t) == 0)


def _finite_or_zero(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def kendall(pred: ArrayLike, true: ArrayLike) -> float:
    """Kendall's tau-b (handles ties on either side); 0.0 when either side is constant."""
    p, t, _ = _prepare(pred, true)
    if _undefined(p, t):
        return 0.0
    from scipy.stats import kendalltau  # lazily: scipy.stats is slow to import

    return _finite_or_zero(kendalltau(p, t).statistic)


def spearman(pred: ArrayLike, true: ArrayLike) -> float:
    """Spearman's rho (Pearson on average ranks); 0.0 when either side is constant."""
    p, t, _ = _prepare(pred, true)
    if _undefined(p, t):
        return 0.0
    from scipy.stats import spearmanr  # lazily: scipy.stats is slow to import

    return _finite_or_zero(spearmanr(p, t).statistic)


def pearson(pred: ArrayLike, true: ArrayLike) -> float:
    """Pearson's r on the values (non-finite preds replaced as in the module docstring)."""
    p, t, _ = _prepare(pred, true)
    if _undefined(p, t):
        return 0.0
    from scipy.stats import pearsonr  # lazily: scipy.stats is slow to import

    return _finite_or_zero(pearsonr(p, t).statistic)


def _top_k(p: np.ndarray, t: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices of the predicted top-k (ties broken pessimistically), true ranks, and k."""
    try:
        ok = 0 < float(frac) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DiswotError(f"frac must be a number in (0, 1], got {frac!r}")
    n = p.size
    k = max(1, math.floor(float(frac) * n + 0.5))
    # lexsort sorts by the last key first: descending pred, then ascending true (worst first).
    order = np.lexsort((t, -p))
    # Competition rank, 1 = best: 1 + the number of strictly larger true values.
    true_rank = 1 + (n - np.searchsorted(np.sort(t), t, side="right"))
    return order[:k], true_rank, k


def precision_at_top(pred: ArrayLike, true: ArrayLike, frac: float = 0.05) -> float:
    """P@K: fraction of the predicted top-k whose true rank is within the top k (ties count as in)."""
    p, t, _ = _prepare(pred, true)
    top, true_rank, k = _top_k(p, t, frac)
    return float((true_rank[top] <= k).sum() / k)


def best_rank_at_top(pred: ArrayLike, true: ArrayLike, frac: float = 0.05) -> int:
    """BR@K: the best true rank (1 = the truly best architecture) among the predicted top-k.

    Returned as an absolute rank, not a percentile; divide by ``n`` (times 100) for the percentile
    figure some papers print.
    """
    p, t, _ = _prepare(pred, true)
    top, true_rank, _ = _top_k(p, t, frac)
    return int(true_rank[top].min())


def correlate(pred: ArrayLike, true: ArrayLike, frac: float = 0.05) -> dict[str, float]:
    """All statistics at once: ``kendall``, ``spearman``, ``pearson``, ``precision_at_top``,
    ``best_rank_at_top`` (absolute rank), ``n`` and ``n_nonfinite`` (non-finite predictions)."""
    p, t, n_bad = _prepare(pred, true)
    return {
        "kendall": kendall(p, t),
        "spearman": spearman(p, t),
        "pearson": pearson(p, t),
        "precision_at_top": precision_at_top(p, t, frac),
        "best_rank_at_top": float(best_rank_at_top(p, t, frac)),
        "n": float(p.size),
        "n_nonfinite": float(n_bad),
    }


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and *population* standard deviation (ddof=0) over e.g. seeds.

    ddof=0 describes the spread of the runs we actually made rather than estimating a population;
    it is also defined for a single run (std 0). NaN in ``values`` propagates.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise DiswotError("mean_std needs at least one value")
    return float(v.mean()), float(v.std(ddof=0))
