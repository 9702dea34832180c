"""Rank a set of students with proxies and measure the ranking against shipped ground truth.

The work is resumable and incremental: every (architecture, seed) evaluation is appended to
``scores.jsonl`` in the run folder as soon as it is computed (a half-written last line from a killed run
is dropped on reload), and a rerun with the same folder only computes what is missing, including new
proxies for architectures already scored. Non-finite scores are kept, ranked last, and counted.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diswot import __version__, bench, rankstats
from diswot.errors import DiswotError
from diswot.probe import Scorer
from diswot.proxies import get_proxy, resolve_proxies

#: Per-space defaults: the ground-truth targets, the default teacher and probe resolution per target.
SPACE_TARGETS: dict[str, tuple[str, ...]] = {
    "s1": ("kd", "cls"),
    "nb201": ("cifar10", "cifar100", "ImageNet16-120"),
}
DEFAULT_TEACHER = {"s1": "resnet110", "nb201": "resnet56"}
NB201_DATASET = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet16-120": (120, 16)}

#: Proxies always reported beside the requested ones: the trivial baselines.
BASELINES = ("params", "flops")


@dataclass
class RankResult:
    """Correlations of every proxy with every target, plus the raw per-architecture scores."""

    archs: list[str]
    proxies: list[str]
    targets: list[str]
    scores: dict[str, dict[int, dict[str, float]]]  # arch -> seed -> proxy -> value
    truth: dict[str, dict[str, float]]  # target -> arch -> accuracy
    correlations: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0

    def table(self, target: str | None = None) -> str:
        """A Markdown table, proxies as rows sorted by Kendall on the first target."""
        targets = [target] if target else self.targets
        rows = {}
        for c in self.correlations:
            rows.setdefault(c["proxy"], {})[c["target"]] = c
        first = targets[0]
        order = sorted(rows, key=lambda p: -_nan_low(rows[p][first]["kendall"]))
        head = "| proxy | " + " | ".join(f"{t} Kendall | {t} Spearman" for t in targets)
        head += " | non-finite |"
        sep = "|---" * (2 * len(targets) + 2) + "|"
        lines = [head, sep]
        for p in order:
            cells = []
            for t in targets:
                c = rows[p][t]
                cells.append(_pm(c["kendall"], c["kendall_std"]))
                cells.append(_pm(c["spearman"], c["spearman_std"]))
            lines.append(f"| {p} | " + " | ".join(cells) + f" | {rows[p][first]['n_nonfinite']} |")
        return "\n".join(lines)


def _nan_low(x: float) -> float:
    return -math.inf if not math.isfinite(x) else x


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if std == 0 else f"{mean:.3f} ± {std:.3f}"


def space_archs(space: str, sample: int | None, sample_seed: int) -> list[str]:
    """The architectures ``rank`` scores: all 64 of S1, or a seeded NB201 sample."""
    if space == "s1":
        return sorted(bench.s1_accuracy("kd"))
    if space == "nb201":
        return bench.nb201_sample(sample or 200, sample_seed)
    raise DiswotError(f"unknown space '{space}'; known: {', '.join(SPACE_TARGETS)}")


def load_scores(path: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Read ``scores.jsonl``; a truncated or corrupt last line (a killed run) is dropped."""
    scores: dict[str, dict[int, dict[str, float]]] = {}
    if not path.exists():
        return scores
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            arch, seed, values = rec["arch"], int(rec["seed"]), rec["values"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if i == len(lines) - 1:
                break
            raise DiswotError(
                f"{path} line {i + 1} is corrupt; delete that line or the file to rescore"
            ) from exc
        scores.setdefault(arch, {}).setdefault(seed, {}).update(
            {k: (math.nan if v is None else float(v)) for k, v in values.items()}
        )
    return scores


def _json_value(v: float) -> float | None:
    return v if math.isfinite(v) else None


def run_rank(
    space: str = "s1",
    *,
    teacher: str | None = None,
    proxies: str | Sequence[str] = ("diswot", "ms", "mr"),
    seeds: int | Sequence[int] = 1,
    batch_size: int = 64,
    target: str | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    archs: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    init: str = "gaussian",
    data: str = "synthetic",
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> RankResult:
    """Score the students of ``space`` and correlate every proxy with the ground truth.

    For S1 all 64 students are scored against both targets (``kd`` and ``cls``). For NB201 the network
    and the teacher get the class count of ``target`` (10/100/120, ImageNet16-120 at 16x16 input) and a
    seeded ``sample`` of cells is scored (or exactly ``archs``).
    """
    t0 = time.perf_counter()
    if space not in SPACE_TARGETS:
        raise DiswotError(f"unknown space '{space}'; known: {', '.join(SPACE_TARGETS)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise DiswotError("--seeds must be at least 1")
    teacher = teacher or DEFAULT_TEACHER[space]
    if space == "s1":
        targets = [target] if target else list(SPACE_TARGETS["s1"])
        num_classes, image_size = 100, 32
    else:
        target = target or "cifar100"
        key = target.lower()
        if key not in NB201_DATASET:
            raise DiswotError(
                f"space nb201 has no target '{target}'; use one of {', '.join(SPACE_TARGETS['nb201'])}"
            )
        targets = [target]
        num_classes, image_size = NB201_DATASET[key]
    truth = {t: bench.ground_truth(space, t) for t in targets}
    arch_list = list(archs) if archs is not None else space_archs(space, sample, sample_seed)
    if not arch_list:
        raise DiswotError("no architectures to rank; give a non-empty sample or --archs file")
    missing = [a for a in arch_list if a not in truth[targets[0]]]
    if missing:
        raise DiswotError(f"{len(missing)} architectures have no ground truth, e.g. {missing[0]!r}")
    names = resolve_proxies(proxies, has_teacher=True)
    names = names + [b for b in BASELINES if b not in names]

    scorer = Scorer(
        teacher,
        num_classes=num_classes,
        batch_size=batch_size,
        seeds=seed_list,
        init=init,
        data=data,
        data_root=data_root,
        image_size=image_size,
        device=device,
    )
    out = Path(out_dir) if out_dir else None
    cache_path = out / "scores.jsonl" if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        settings = {
            "space": space,
            "teacher": teacher,
            "targets": targets,
            "num_classes": num_classes,
            "image_size": image_size,
            "batch_size": batch_size,
            "seeds": seed_list,
            "init": init,
            "data": data,
            "device": device,
            "sample": sample,
            "sample_seed": sample_seed,
            "n_archs": len(arch_list),
            "proxies": names,
        }
        _check_settings(out / "settings.json", settings)
    scores = load_scores(cache_path) if cache_path else {}

    todo = [
        (a, s, [p for p in names if p not in scores.get(a, {}).get(s, {})])
        for a in arch_list
        for s in seed_list
    ]
    todo = [t for t in todo if t[2]]
    fh = cache_path.open("a") if cache_path else None
    try:
        bar = tqdm(todo, desc=f"rank {space}", unit="eval", disable=not progress, leave=False)
        for arch, seed, need in bar:
            values = scorer.evaluate(arch, need, seed)
            values.pop("_semantic_form", None)
            scores.setdefault(arch, {}).setdefault(seed, {}).update(values)
            if fh:
                rec = {
                    "arch": arch,
                    "seed": seed,
                    "values": {k: _json_value(v) for k, v in values.items()},
                }
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
    finally:
        if fh:
            fh.close()

    result = RankResult(arch_list, names, targets, scores, truth, out_dir=out)
    result.correlations = correlate_all(result, seed_list)
    result.seconds = time.perf_counter() - t0
    if out:
        write_outputs(result, seed_list)
    return result


def _check_settings(path: Path, settings: dict) -> None:
    """Refuse to mix scores from different settings in one folder (proxies may grow)."""
    if path.exists():
        old = json.loads(path.read_text())
        fixed = ("space", "teacher", "num_classes", "image_size", "batch_size", "init", "data")
        diff = [k for k in fixed if old.get("settings", old).get(k) != settings[k]]
        if diff:
            raise DiswotError(
                f"{path.parent} holds a run with different {', '.join(diff)}; use another --out folder"
            )
    meta = {
        "settings": settings,
        "versions": {
            "diswot": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    path.write_text(json.dumps(meta, indent=2))


def correlate_all(result: RankResult, seed_list: Sequence[int]) -> list[dict]:
    """Per proxy and target: each statistic per seed, then mean and population std over seeds."""
    rows = []
    for proxy in result.proxies:
        sign = get_proxy(proxy).sign
        for target in result.targets:
            truth = result.truth[target]
            true = np.array([truth[a] for a in result.archs])
            per_seed = []
            for s in seed_list:
                pred = np.array([result.scores[a][s][proxy] * sign for a in result.archs])
                per_seed.append(rankstats.correlate(pred, true))
            row = {"proxy": proxy, "target": target}
            for key in ("kendall", "spearman", "pearson", "p_at_5", "br_at_5"):
                mean, std = rankstats.mean_std([c[key] for c in per_seed])
                row[key], row[f"{key}_std"] = mean, std
            row["n"] = per_seed[0]["n"]
            row["n_nonfinite"] = max(c["n_nonfinite"] for c in per_seed)
            rows.append(row)
    return rows


def write_outputs(result: RankResult, seed_list: Sequence[int]) -> None:
    """scores.csv (one row per architecture), correlations.json/.md, and a scatter plot."""
    out = result.out_dir
    assert out is not None
    with (out / "scores.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        cols = [f"{p}" for p in result.proxies]
        seed_cols = (
            [f"{p}@seed{s}" for p in result.proxies for s in seed_list]
            if len(seed_list) > 1
            else []
        )
        w.writerow(["arch", *cols, *seed_cols, *result.targets])
        for a in result.archs:
            per = result.scores[a]
            means = [float(np.mean([per[s][p] for s in seed_list])) for p in result.proxies]
            extra = [per[s][p] for p in result.proxies for s in seed_list] if seed_cols else []
            w.writerow([a, *means, *extra, *[result.truth[t][a] for t in result.targets]])
    (out / "correlations.json").write_text(json.dumps(result.correlations, indent=2))
    (out / "table.md").write_text(result.table() + "\n")
    plot_scatter(result, seed_list, out / "scatter.png")


def plot_scatter(result: RankResult, seed_list: Sequence[int], path: Path) -> None:
    """One panel per proxy: seed-mean score against the first target's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = result.targets[0]
    n = len(result.proxies)
    cols = min(n, 4)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 3.0 * rows_), squeeze=False)
    true = [result.truth[target][a] for a in result.archs]
    corr = {(c["proxy"], c["target"]): c for c in result.correlations}
    for ax, proxy in zip(axes.flat, result.proxies):
        pred = [
            float(np.mean([result.scores[a][s][proxy] for s in seed_list])) for a in result.archs
        ]
        ax.scatter(pred, true, s=8, alpha=0.7)
        tau = corr[(proxy, target)]["kendall"]
        ax.set_title(f"{proxy} (tau={tau:.2f})", fontsize=9)
        ax.set_xlabel(proxy, fontsize=8)
        ax.set_ylabel(f"{target} acc", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
