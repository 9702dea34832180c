"""Our proxies against the scores NASLib and Zen-NAS published for the same NB201 cells.

Two uses. ``diswot rank --space nb201`` shows, beside each proxy's Kendall, the Kendall of the
published scores of the ranked cells with the same ground truth (:func:`add_reference`): NASLib's
precomputed proxies exist for 725 cells, the Zen-scores for all 15,625. And
:func:`naslib_crosscheck` scores cells that NASLib scored, with NASLib's settings, and compares the
two cell by cell (``tests/test_naslib_crosscheck.py``, ``benchmarks/rank_naslib_crosscheck.py``,
docs/proxies.md): the evidence that our implementations compute the published proxies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from diswot import bench, rankstats
from diswot.errors import DiswotError
from diswot.proxies import get_proxy
from diswot.rank.evaluate import evaluate_timed
from diswot.rank.result import RankResult
from diswot.scoring import Scorer

#: Proxies NASLib published for NB201 (plus ``zen`` from the Zen-score tables), our names.
NASLIB_PROXIES = (
    "params",
    "flops",
    "l2_norm",
    "synflow",
    "zen",
    "nwot",
    "jacov",
    "epe_nas",
    "grad_norm",
    "snip",
    "fisher",
    "grasp",
    "plain",
)


def reference_scores(space: str, target: str) -> dict[str, tuple[str, dict[str, float]]]:
    """Published scores of the same proxies, ``proxy -> (source, arch -> score)`` (NB201 only).

    NASLib's precomputed proxies exist for 725 cells (CIFAR batches of 32, PyTorch default init)
    and the Zen-scores for all 15,625; names and orientation are the same as ours.
    """
    if space != "nb201":
        return {}
    from diswot.models.nb201 import naslib_to_arch
    from diswot.proxies import list_proxies

    refs: dict[str, tuple[str, dict[str, float]]] = {}
    known = set(list_proxies())  # once: it sorts the registry, and this loop runs 725 cells x 12
    for key, rec in bench.naslib_scores(target).items():
        arch = naslib_to_arch(key)
        for proxy, value in rec.items():
            if proxy != "val_accuracy" and proxy in known:
                refs.setdefault(proxy, ("NASLib", {}))[1][arch] = float(value)
    refs["zen"] = ("Zen-NAS", bench.zen_scores(target))
    return refs


def add_reference(result: RankResult, space: str) -> None:
    """Add ``reference_kendall`` (seed-free) to each correlation row whose proxy has published
    scores for at least 10 of the ranked architectures, computed on those architectures."""
    for target in result.targets:
        refs = reference_scores(space, target)
        for row in result.correlations:
            if row["target"] != target or row["proxy"] not in refs:
                continue
            source, ref = refs[row["proxy"]]
            cells = [a for a in result.archs if a in ref]
            if len(cells) < 10:
                continue
            sign = get_proxy(row["proxy"]).sign
            pred = np.array([ref[a] * sign for a in cells])
            true = np.array([result.truth[target][a] for a in cells])
            row["reference_kendall"] = rankstats.kendall(pred, true)
            row["reference_source"] = source
            row["reference_n"] = len(cells)


def _rank_last(values: Sequence[float]) -> np.ndarray:
    """Non-finite values replaced below every finite one (they rank last, tied)."""
    v = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(v)
    if bad.any():
        finite = v[~bad]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        v[bad] = lo - max(1.0, hi - lo)
    return v


def naslib_cells(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """A seeded subset of the 725 cells NASLib scored (present on all three datasets)."""
    common = set(bench.naslib_scores("cifar10"))
    for ds in ("cifar100", "ImageNet16-120"):
        common &= set(bench.naslib_scores(ds))
    keys = sorted(common)
    if not 1 <= n <= len(keys):
        raise DiswotError(f"NASLib cell subset size must be in 1..{len(keys)}, got {n}")
    idx = np.random.default_rng(seed).choice(len(keys), size=n, replace=False)
    return [keys[i] for i in sorted(idx)]


def naslib_crosscheck(
    dataset: str = "cifar10",
    cells: int | Sequence[tuple[int, ...]] = 40,
    proxies: Sequence[str] = NASLIB_PROXIES,
    *,
    batch_size: int = 32,
    init: str = "default",
    seed: int = 0,
    cell_seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, dict]:
    """Score NB201 cells that NASLib scored, with NASLib's settings, and compare cell by cell.

    NASLib's NB201 scores were computed on batches of 32 (readable from ``jacov``, whose maximum is
    ``-batch``, and from ``nwot``'s scale) of real images under PyTorch's default init; we use the same
    batch size and init, but a synthetic batch. FLOPs use NASLib's counting convention (``nb201``).

    Returns, per proxy: ``kendall``/``spearman`` between our and the published scores, ``rel_diff``
    (median ``|ours - ref| / |ref|`` over cells where both are finite), our and the reference's Kendall
    with the benchmark's test accuracy (``kendall_acc``, ``ref_kendall_acc``), ``n``, non-finite
    counts, and the raw ``ours``/``ref`` lists in ``cells`` order.
    """
    from diswot.models.nb201 import naslib_to_arch
    from diswot.spaces.nb201 import NB201Space

    cell_list = naslib_cells(cells, cell_seed) if isinstance(cells, int) else list(cells)
    sp = NB201Space()
    sp.flop_convention = "nb201"  # NASLib's FLOP convention, on this instance only
    spec = sp.dataset(dataset)
    ds = sp._check_target(dataset)
    scorer = Scorer(
        None,
        num_classes=spec.num_classes,
        batch_size=batch_size,
        seeds=(seed,),
        init=init,
        image_size=spec.image_size,
        device=device,
        builder=sp.build,
        coster=lambda arch, k, size: sp.cost(arch, k, size[-1]),
    )
    naslib = bench.naslib_scores(ds)
    zen = bench.zen_scores(ds)
    acc = bench.nb201_accuracy(ds)
    archs = [naslib_to_arch(c) for c in cell_list]
    ours: dict[str, list[float]] = {p: [] for p in proxies}
    for arch in tqdm(archs, desc=f"naslib {ds}", disable=not progress):
        values, _ = evaluate_timed(scorer, arch, list(proxies), seed)
        for p in proxies:
            v = values[p]
            ours[p].append(v / 1e6 if p in ("params", "flops") else v)
    true = np.array([acc[a] for a in archs])
    out: dict[str, dict] = {}
    for p in proxies:
        raw = [zen[a] for a in archs] if p == "zen" else [naslib[c].get(p) for c in cell_list]
        ref = [math.nan if r is None else float(r) for r in raw]
        a, b = np.asarray(ours[p]), np.asarray(ref)
        both = np.isfinite(a) & np.isfinite(b) & (b != 0)
        sign = get_proxy(p).sign
        out[p] = {
            "kendall": rankstats.kendall(_rank_last(a), _rank_last(b)),
            "spearman": rankstats.spearman(_rank_last(a), _rank_last(b)),
            "rel_diff": float(np.median(np.abs(a[both] - b[both]) / np.abs(b[both])))
            if both.any()
            else math.nan,
            "kendall_acc": rankstats.kendall(_rank_last(a * sign), true),
            "ref_kendall_acc": rankstats.kendall(_rank_last(b * sign), true),
            "n": len(archs),
            "n_nonfinite": int((~np.isfinite(a)).sum()),
            "ref_nonfinite": int((~np.isfinite(b)).sum()),
            "ours": ours[p],
            "ref": ref,
        }
    return out
