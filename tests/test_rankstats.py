from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from diswot.errors import DiswotError
from diswot.rankstats import (
    best_rank_at_top,
    correlate,
    kendall,
    mean_std,
    pearson,
    precision_at_top,
    spearman,
)


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=200)
    pred = true + rng.normal(scale=1.5, size=200)
    pred[:20] = np.round(pred[:20])  # some ties
    assert kendall(pred, true) == pytest.approx(stats.kendalltau(pred, true).statistic)
    assert spearman(pred, true) == pytest.approx(stats.spearmanr(pred, true).statistic)
    assert pearson(pred, true) == pytest.approx(stats.pearsonr(pred, true).statistic)


def test_hand_computed_small_case():
    # pred order b > a > c > d; true order a > b > c > d: one discordant pair of six.
    pred = [3, 4, 2, 1]
    true = [4, 3, 2, 1]
    assert kendall(pred, true) == pytest.approx((5 - 1) / 6)
    # Spearman: d = (1, 1, 0, 0) -> 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(pred, true) == pytest.approx(0.8)
    assert pearson(pred, true) == pytest.approx(0.8)
    assert kendall(true, true) == pytest.approx(1.0)
    assert kendall([-x for x in true], true) == pytest.approx(-1.0)


def test_tau_b_with_ties():
    # pred ties the first two; n0=6, n1=1: tau_b = (nc - nd) / sqrt((n0 - n1) * n0) = 5 / sqrt(30).
    assert kendall([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_constant_prediction_is_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no scipy ConstantInputWarning leaks out
        res = correlate([5.0] * 6, [1, 2, 3, 4, 5, 6])
    for key in ("kendall", "spearman", "pearson"):
        assert res[key] == 0.0
    assert kendall([1, 2, 3], [7, 7, 7]) == 0.0


def test_nonfinite_predictions_rank_last():
    true = [10.0, 9.0, 8.0, 7.0, 6.0]
    # NaN and +inf given to the two best nets: they must count as the worst, not be dropped.
    pred = [np.nan, np.inf, 3.0, 2.0, 1.0]
    res = correlate(pred, true)
    assert res["n"] == 5 and res["n_nonfinite"] == 2
    worst_tied = [0.0, 0.0, 3.0, 2.0, 1.0]
    assert res["kendall"] == pytest.approx(stats.kendalltau(worst_tied, true).statistic)
    assert res["spearman"] == pytest.approx(stats.spearmanr(worst_tied, true).statistic)
    assert res["kendall"] < 0
    assert math.isfinite(res["pearson"])
    # -inf is also simply "last".
    assert kendall([1.0, 2.0, -np.inf], [2, 3, 1]) == pytest.approx(1.0)
    # Predicted top-1 is the finite 3.0 (true rank 3), not the NaN/inf ones.
    assert best_rank_at_top(pred, true, frac=0.2) == 3
    all_bad = correlate([np.nan, np.nan, np.inf], [1, 2, 3])
    assert all_bad["kendall"] == 0.0 and all_bad["n_nonfinite"] == 3


def test_precision_and_best_rank_small_cases():
    true = np.arange(20, 0, -1, dtype=float)  # index 0 is the best (rank 1)
    pred = true.copy()
    assert precision_at_top(pred, true, frac=0.1) == 1.0  # k = 2
    assert best_rank_at_top(pred, true, frac=0.1) == 1
    pred = -true
    assert precision_at_top(pred, true, frac=0.1) == 0.0
    assert best_rank_at_top(pred, true, frac=0.1) == 19  # picks ranks 20 and 19
    # top-4 predicted = indices 4, 0, 10, 2 -> true ranks 5, 1, 11, 3; two are within the top 4.
    pred = np.zeros(20)
    pred[[4, 0, 10, 2]] = [4, 3, 2, 1]
    assert precision_at_top(pred, true, frac=0.2) == pytest.approx(0.5)
    assert best_rank_at_top(pred, true, frac=0.2) == 1


def test_k_rounding_and_frac_validation():
    true = np.arange(64, dtype=float)
    pred = true.copy()
    pred[-3:] = -1  # the true top 3 predicted worst
    # k = round(0.05 * 64) = 3: none of the predicted top 3 is in the true top 3.
    assert precision_at_top(pred, true) == 0.0
    assert best_rank_at_top(pred, true) == 4
    assert precision_at_top([1, 2], [1, 2], frac=0.01) == 1.0  # k is at least 1
    for bad in (0, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(DiswotError, match="frac"):
            precision_at_top([1, 2], [1, 2], frac=bad)


def test_ties_in_pred_break_pessimistically():
    true = [4.0, 3.0, 2.0, 1.0]
    const = [1.0, 1.0, 1.0, 1.0]
    assert precision_at_top(const, true, frac=0.25) == 0.0
    assert best_rank_at_top(const, true, frac=0.5) == 3
    # Reordering the input does not change the result.
    assert best_rank_at_top(const[::-1], true[::-1], frac=0.5) == 3


def test_true_ties_use_competition_rank():
    # Two nets share the best accuracy: both have rank 1; the next has rank 3.
    assert best_rank_at_top([0, 0, 5], [9, 9, 8], frac=0.3) == 3
    assert precision_at_top([5, 0, 0], [9, 9, 8], frac=0.3) == 1.0


def test_correlate_keys_and_input_validation():
    res = correlate([1, 2, 3, 4], [1, 2, 3, 4])
    assert set(res) == {
        "kendall",
        "spearman",
        "pearson",
        "precision_at_top",
        "best_rank_at_top",
        "n",
        "n_nonfinite",
    }
    assert res["kendall"] == res["spearman"] == pytest.approx(1.0)
    assert res["best_rank_at_top"] == 1.0 and res["n_nonfinite"] == 0
    with pytest.raises(DiswotError, match="equal length"):
        kendall([1, 2, 3], [1, 2])
    with pytest.raises(DiswotError, match="at least 2"):
        kendall([1], [1])
    with pytest.raises(DiswotError, match="true values must all be finite"):
        kendall([1, 2], [1, np.nan])


def _pearson_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r written out; each side centred and scaled to max |v| = 1 first, so tiny or
    huge spreads neither underflow nor overflow. 0.0 for a constant side, as ``rankstats``."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    xc, yc = xc / np.abs(xc).max(), yc / np.abs(yc).max()
    return float(xc @ yc / math.sqrt((xc @ xc) * (yc @ yc)))


def _kendall_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b by counting pairs: (concordant - discordant) / sqrt(untied_x * untied_y)."""
    n = len(x)
    s = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            s += dx * dy
            tied_x += dx == 0
            tied_y += dy == 0
    pairs = n * (n - 1) // 2
    if tied_x == pairs or tied_y == pairs:
        return 0.0
    return float(s / math.sqrt((pairs - tied_x) * (pairs - tied_y)))


def _top_reference(pred: np.ndarray, true: np.ndarray, frac: float) -> tuple[float, int]:
    """P@K and BR@K from the module docstring's rules, by sorting tuples."""
    n = len(pred)
    k = max(1, math.floor(frac * n + 0.5))
    # Highest prediction first; among equal predictions the lower true accuracy first.
    top = sorted(range(n), key=lambda i: (-pred[i], true[i]))[:k]
    rank = [1 + sum(t > true[i] for t in true) for i in range(n)]
    return sum(rank[i] <= k for i in top) / k, min(rank[i] for i in top)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_subnormal=False), st.floats(-1e6, 1e6)),
        min_size=2,
        max_size=40,
    )
)
def test_properties(pairs):
    pred, true = (np.array(v) for v in zip(*pairs))
    res = correlate(pred, true)
    assert res["kendall"] == pytest.approx(_kendall_reference(pred, true), abs=1e-9)
    ranks = stats.rankdata(pred), stats.rankdata(true)
    assert res["spearman"] == pytest.approx(_pearson_reference(*ranks), abs=1e-9)
    assert res["pearson"] == pytest.approx(_pearson_reference(pred, true), abs=1e-9)
    precision, best = _top_reference(pred, true, 0.05)
    assert res["precision_at_top"] == pytest.approx(precision)
    assert res["best_rank_at_top"] == best
    # Rank statistics only depend on order: a monotone transform of pred changes nothing.
    assert kendall(stats.rankdata(pred) ** 3, true) == pytest.approx(res["kendall"], abs=1e-9)


def test_mean_std_population():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(1.25))  # ddof=0, not sqrt(5/3)
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(DiswotError):
        mean_std([])
