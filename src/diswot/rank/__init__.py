"""Rank a space's students with zero-cost proxies and measure each ranking against shipped ground truth.

``diswot rank`` is the benchmark of the proxy zoo (:mod:`diswot.proxies`). Everything about the set of
architectures comes from the search space (:func:`diswot.spaces.get_space`): its targets and what each
fixes (class count, resolution; NB201 networks and the teacher get 10/100/120 classes), its ground
truth, its default sample, its builder and cost model. A new space therefore works here unchanged.

Incremental and resumable: every (architecture, seed) evaluation is appended to ``scores.jsonl`` in the
run folder as soon as it is computed (a half-written last line from a killed run is cut on reload),
and a rerun with the same folder only computes what is missing, including new proxies for architectures
already scored and new seeds. Students are built, scored and dropped one at a time (streaming), so a
sample of any size runs in constant memory, and a sample can be split with ``shard=(i, n)`` into
folders that :func:`merge_runs` joins.

For NB201, published reference scores of the same cells are correlated with the same ground truth
and shown beside ours: NASLib's precomputed proxies (725 cells) and the Zen-scores (all cells).

Modules: :mod:`.config` (the recorded settings and which a resume must match), :mod:`.plan` (the
request resolved: sample, targets, proxies, shard), :mod:`.evaluate` (scoring with exclusive
seconds, and the factory that workers score with), :mod:`.store` (the run folder's files),
:mod:`.api` (:func:`run_rank`, :func:`merge_runs`), :mod:`.result` (correlations and the table),
:mod:`.outputs` (CSV, JSON, plot) and :mod:`.naslib` (the comparison with NASLib's published scores).
"""

from __future__ import annotations

from diswot.rank.api import merge_runs, run_rank
from diswot.rank.config import FIXED_SETTINGS, RankConfig
from diswot.rank.evaluate import evaluate_timed
from diswot.rank.naslib import NASLIB_PROXIES, naslib_cells, naslib_crosscheck, reference_scores
from diswot.rank.outputs import plot_scatter, write_outputs
from diswot.rank.plan import BASELINES, _plan, parse_proxies, parse_shard, read_archs_file
from diswot.rank.result import STATS, RankResult, correlate_all
from diswot.rank.store import Scores, load_scores

__all__ = [
    "BASELINES",
    "FIXED_SETTINGS",
    "NASLIB_PROXIES",
    "STATS",
    "RankConfig",
    "RankResult",
    "Scores",
    "_plan",
    "correlate_all",
    "evaluate_timed",
    "load_scores",
    "merge_runs",
    "naslib_cells",
    "naslib_crosscheck",
    "parse_proxies",
    "parse_shard",
    "plot_scatter",
    "read_archs_file",
    "reference_scores",
    "run_rank",
    "write_outputs",
]
