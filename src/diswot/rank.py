"""Rank a space's students with zero-cost proxies and measure each ranking against shipped ground truth.

``diswot rank`` is the benchmark of the proxy zoo (:mod:`diswot.proxies`). Everything about the set of
architectures comes from the search space (:func:`diswot.spaces.get_space`): its targets and what each
fixes (class count, resolution; NB201 networks and the teacher get 10/100/120 classes), its ground
truth, its default sample, its builder and cost model. A new space therefore works here unchanged.

Incremental and resumable: every (architecture, seed) evaluation is appended to ``scores.jsonl`` in the
run folder as soon as it is computed (a half-written last line from a killed run is dropped on reload),
and a rerun with the same folder only computes what is missing, including new proxies for architectures
already scored and new seeds. Students are built, scored and dropped one at a time (streaming), so a
sample of any size runs in constant memory, and a sample can be split with ``shard=(i, n)`` into
folders that :func:`merge_runs` joins.

Statistics per proxy and target (see :mod:`diswot.rankstats`): Kendall, Spearman, Pearson, P@top-5%
and BR@5%, each computed per seed and reported as mean and population std over seeds. Non-finite
scores are kept, ranked last, and counted. Ensembles ``"a+b"`` are rank averages of their members,
formed per seed over the ranked set (:func:`diswot.proxies.rank_average`).

For NB201, published reference scores of the same cells are correlated with the same ground truth
and shown beside ours: NASLib's precomputed proxies (725 cells) and the Zen-scores (all cells).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diswot import __version__, bench, rankstats
from diswot.data import check_probe_source
from diswot.errors import DiswotError
from diswot.probe import (
    NUMERICAL_FAILURES,
    Scorer,
    check_precision,
    proxy_value,
    resolve_engine,
    stored_setting,
)
from diswot.proxies import ensemble_members, get_proxy, rank_average, resolve_proxies
from diswot.runtime import parse_device, resolve_device, run_folder
from diswot.spaces import SearchSpace, get_space

#: Proxies always reported beside the requested ones: the trivial baselines.
BASELINES = ("params", "flops")

#: Statistics reported per proxy and target, in table order (keys of :func:`rankstats.correlate`).
STATS = ("kendall", "spearman", "pearson", "precision_at_top", "best_rank_at_top")

#: Settings that change scores: a run folder refuses to mix runs that differ in any of them.
FIXED_SETTINGS = (
    "space",
    "teacher",
    "num_classes",
    "image_size",
    "batch_size",
    "init",
    "data",
    "precision",
)
Scores = dict[str, dict[int, dict[str, float]]]  # arch -> seed -> proxy -> value


@dataclass
class RankResult:
    """Correlations of every proxy with every target, plus the raw per-architecture scores."""

    space: str
    archs: list[str]
    proxies: list[str]  # scored proxies, then ensembles
    ensembles: dict[str, list[str]]
    targets: list[str]
    seeds: list[int]
    scores: Scores
    truth: dict[str, dict[str, float]]  # target -> arch -> accuracy
    seconds_per_arch: dict[str, float] = field(default_factory=dict)  # exclusive, per evaluation
    pass_seconds: dict[str, float] = field(default_factory=dict)  # shared passes, per evaluation
    total_seconds_per_arch: float = math.nan  # everything, per (architecture, seed)
    correlations: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0
    shard: tuple[int, int] | None = None

    def column(self, proxy: str, seed: int) -> list[float]:
        """One seed's values of ``proxy`` (an ensemble: its rank average) in ``archs`` order."""
        if proxy in self.ensembles:
            return rank_average({m: self.column(m, seed) for m in self.ensembles[proxy]})
        return [self.scores[a][seed][proxy] for a in self.archs]

    def mean_column(self, proxy: str) -> list[float]:
        """Seed-mean values of ``proxy`` (NaN when any seed is non-finite)."""
        cols = np.array([self.column(proxy, s) for s in self.seeds], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return cols.mean(axis=0).tolist()

    def table(self, target: str | None = None) -> str:
        """Markdown tables, one per target: proxies as rows, sorted by mean Kendall."""
        return "\n\n".join(self._table(t) for t in ([target] if target else self.targets))

    def _table(self, target: str) -> str:
        rows = [c for c in self.correlations if c["target"] == target]
        rows.sort(key=lambda c: -_nan_low(c["kendall"]))
        with_ref = any("reference_kendall" in c for c in rows)
        evals = len(self.archs) * len(self.seeds)
        seeds = f"{len(self.seeds)} seed" + (
            "s, mean ± std over seeds" if len(self.seeds) > 1 else ""
        )
        title = f"**{self.space} / {target}**: {len(self.archs)} architectures, {seeds}"
        if self.shard:
            title += f" (shard {self.shard[0]}/{self.shard[1]} only)"
        head = [
            "proxy",
            "Kendall",
            "Spearman",
            "Pearson",
            "P@top5%",
            "BR@5%",
            f"non-finite (of {evals})",
            "s/arch",
        ]
        if with_ref:
            head.append("reference Kendall (cells)")
        lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in rows:
            cells = [f"`{c['proxy']}`"]
            for key in STATS:
                digits = 0 if key == "best_rank_at_top" else 3
                cells.append(_pm(c[key], c[f"{key}_std"], digits))
            cells.append(str(int(c["n_nonfinite"])))
            sec = self.seconds_per_arch.get(c["proxy"])
            cells.append("" if sec is None else f"{sec:.3f}")
            if with_ref:
                ref = c.get("reference_kendall")
                cells.append(
                    ""
                    if ref is None
                    else f"{ref:.3f} ({c['reference_source']}, {c['reference_n']})"
                )
            lines.append("| " + " | ".join(cells) + " |")
        if self.pass_seconds:
            shared = ", ".join(f"{k} {v:.3f}" for k, v in self.pass_seconds.items())
            lines += [
                "",
                f"s/arch: seconds per (architecture, seed), the proxy's own work; shared passes "
                f"(s/arch): {shared}; everything: {self.total_seconds_per_arch:.2f} s/arch.",
            ]
        return "\n".join(lines)


def _nan_low(x: float) -> float:
    return -math.inf if not math.isfinite(x) else x


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "nan"
    # A std that rounds to zero (e.g. float noise of identical seeds) is not shown.
    if round(std, digits) == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ------------------------------------------------------------------------------------ inputs


def parse_proxies(
    spec: str | Sequence[str], *, has_teacher: bool, space: SearchSpace | None = None
) -> tuple[list[str], dict]:
    """``"all"``, ``"a,b,c+d"`` or a list -> (proxies to score, ensembles ``{name: members}``).

    ``all`` may be combined with others (``all,diswot+params``). Members of an ensemble are scored
    too; the baselines ``params`` and ``flops`` are always added. For a ``space`` without BatchNorm,
    ``all`` skips the proxies built on BN statistics (with a note) and naming one is an error.
    """
    bn = {
        "has_batchnorm": getattr(space, "has_batchnorm", True),
        "space": space.name if space else "",
    }
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [i.strip().lower() for i in items if i.strip()]
    if not items:
        raise DiswotError("no proxy given; use --proxy all or a comma list of proxy names")
    plain: list[str] = []
    ensembles: dict[str, list[str]] = {}
    for item in items:
        members = ensemble_members(item)
        if members is None:
            plain.extend(resolve_proxies(item, has_teacher=has_teacher, **bn))
        else:
            resolve_proxies(members, has_teacher=has_teacher, **bn)
            ensembles["+".join(members)] = members
            plain.extend(members)
    plain.extend(BASELINES)
    return list(dict.fromkeys(plain)), ensembles


def _refuse_repeats(archs: Sequence[str], where: Sequence[str], prefix: str = "") -> None:
    """Refuse an architecture listed twice (it would count twice in every correlation);
    ``where[i]`` names entry ``i`` in the error (``line 3``, ``archs[2]``)."""
    seen: dict[str, str] = {}
    for arch, here in zip(archs, where):
        if arch in seen:
            raise DiswotError(
                f"{prefix}{here} repeats the architecture of {seen[arch]} ({arch}); list each once"
            )
        seen[arch] = here


def read_archs_file(path: str | Path, space: SearchSpace) -> list[str]:
    """Architectures listed one per line (``#`` comments and blank lines skipped), canonicalised.

    For NB201 a line may also be a NASLib tuple such as ``(0, 2, 3, 2, 3, 1)``, so cell lists from
    NASLib-based tools can be scored as they are.
    """
    p = Path(path)
    if not p.is_file():
        raise DiswotError(f"--archs file {p} not found; give a file with one architecture per line")
    archs: list[str] = []
    lines: list[str] = []
    for i, raw in enumerate(p.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("(") and space.name == "nb201":
            from diswot.models.nb201 import naslib_to_arch

            line = naslib_to_arch(line)
        try:
            arch = space.validate(line)
        except DiswotError as exc:
            raise DiswotError(f"{p} line {i}: {exc}") from None
        archs.append(arch)
        lines.append(f"line {i}")
    _refuse_repeats(archs, lines, f"{p} ")
    if not archs:
        raise DiswotError(f"--archs file {p} lists no architectures; give one per line")
    return archs


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (``0 <= i < n``) -> ``(i, n)``; ``None`` passes through."""
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        try:
            i, n = (int(x) for x in str(text).split("/"))
            shard = (i, n)
        except ValueError:
            raise DiswotError(f"--shard must look like i/N, e.g. 0/4; got {text!r}") from None
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise DiswotError(f"--shard i/N needs 0 <= i < N, got {shard[0]}/{shard[1]}")
    return shard


def _targets(space: SearchSpace, target: str | Sequence[str] | None) -> list[str]:
    """Requested targets (default: every target sharing the default target's dataset)."""
    if not space.targets:
        raise DiswotError(f"space '{space.name}' ships no ground truth to rank against")
    if target is None:
        spec = space.dataset(None)
        return [t for t in space.targets if space.dataset(t) == spec]
    names = target.split(",") if isinstance(target, str) else list(target)
    names = [n.strip() for n in names if n.strip()]
    known = {t.lower(): t for t in space.targets}
    out = []
    for n in names:
        if n.lower() not in known and not (space.name == "s1" and n.lower() == "vanilla"):
            raise DiswotError(
                f"space '{space.name}' has no target '{n}'; known: {', '.join(space.targets)}"
            )
        out.append(known.get(n.lower(), n))
    specs = {space.dataset(t) for t in out}
    if len(specs) > 1:
        raise DiswotError(
            f"targets {', '.join(out)} need different class counts or resolutions; rank them in "
            "separate runs"
        )
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------ cache


def load_scores(path: Path, times: dict | None = None) -> Scores:
    """Read ``scores.jsonl``; a truncated or corrupt last line (a killed run) is dropped.

    ``times``, when given, receives ``arch -> seed -> proxy -> seconds`` from the same records.
    """
    scores: Scores = {}
    if not path.exists():
        return scores
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            arch, seed, values = rec["arch"], int(rec["seed"]), rec["values"]
            vals = {k: (math.nan if v is None else float(v)) for k, v in values.items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if i == len(lines) - 1:
                break
            raise DiswotError(
                f"{path} line {i + 1} is corrupt; delete that line or the file to rescore"
            ) from exc
        scores.setdefault(arch, {}).setdefault(seed, {}).update(vals)
        if times is not None and isinstance(rec.get("seconds"), dict):
            times.setdefault(arch, {}).setdefault(seed, {}).update(rec["seconds"])
    return scores


def _json_value(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _record(arch: str, seed: int, values: dict[str, float], seconds: dict[str, float]) -> str:
    return json.dumps(
        {
            "arch": arch,
            "seed": seed,
            "values": {k: _json_value(v) for k, v in values.items()},
            "seconds": {k: round(v, 5) for k, v in seconds.items()},
        }
    )


def evaluate_timed(
    scorer: Scorer, arch: str, proxies: Sequence[str], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Values and seconds of ``proxies`` for one (architecture, seed) on one shared probe.

    Same failure policy as :meth:`Scorer.evaluate` (a numerical failure gives NaN, a user error
    propagates). Seconds are *exclusive*: a pass that several proxies read is timed once under its
    own key ``pass:<name>`` and not charged to the proxy that happened to run first. The passes are
    the student's forward (``pass:forward``) and the teacher's (``pass:teacher``, once per seed),
    run up front when a teacher proxy is asked for, and the proxies' shared backward passes
    (:mod:`diswot.proxies._shared`).
    """
    from diswot.proxies._shared import pass_seconds

    probe = scorer.evaluation_probe(arch, proxies, seed)
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    specs = [get_proxy(n) for n in proxies]
    if any(s.needs_teacher for s in specs):
        for key in ("teacher", "features"):
            t0 = time.perf_counter()
            # On a numerical failure the proxies meet the same error and report NaN.
            with contextlib.suppress(*NUMERICAL_FAILURES):
                getattr(probe, key)
            name = "pass:forward" if key == "features" else "pass:teacher"
            seconds[name] = time.perf_counter() - t0
    passes = pass_seconds(probe)
    for name in proxies:
        before = dict(passes)
        t0 = time.perf_counter()
        value = proxy_value(name, probe)
        elapsed = time.perf_counter() - t0
        for key, sec in passes.items():
            if key not in before:
                seconds[f"pass:{key}"] = sec
                elapsed -= sec
        seconds[name] = max(elapsed, 0.0)
        values[name] = value
    scorer.release(probe, proxies)
    return values, seconds


# ------------------------------------------------------------------------------------ run


@dataclass
class _Plan:
    space: SearchSpace
    settings: dict
    archs: list[str]  # full list (before sharding)
    targets: list[str]
    truth: dict[str, dict[str, float]]
    names: list[str]
    ensembles: dict[str, list[str]]
    seeds: list[int]
    shard: tuple[int, int] | None

    @property
    def my_archs(self) -> list[str]:
        if self.shard is None:
            return self.archs
        i, n = self.shard
        return self.archs[i::n]


def _plan(
    space: str | SearchSpace,
    *,
    teacher: str | None,
    proxies: str | Sequence[str],
    seeds: int | Sequence[int],
    batch_size: int,
    target: str | Sequence[str] | None,
    sample: int | None,
    sample_seed: int,
    archs: Sequence[str] | str | Path | None,
    init: str,
    data: str,
    device: str,
    shard: tuple[int, int] | str | None,
    precision: str = "fp32",
    engine: str = "auto",
) -> _Plan:
    sp = get_space(space)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise DiswotError("--seeds must be at least 1")
    if len(set(seed_list)) != len(seed_list):
        raise DiswotError("seeds must be distinct")
    check_precision(precision)  # before any work, also when only workers build a Scorer
    engine = resolve_engine(engine, getattr(sp, "supernet", None), init)
    if teacher is None:
        teacher = sp.default_teacher or None
    elif not isinstance(teacher, str):
        raise DiswotError(
            "run_rank takes a teacher name (its workers and resumed runs rebuild it by name); for "
            "a teacher module use Scorer.for_space(space, module) or run_search(teacher=module)"
        )
    elif teacher.lower() == "none":
        teacher = None
    targets = _targets(sp, target)
    ds = sp.dataset(targets[0])
    truth = {t: sp.ground_truth(t) for t in targets}
    if isinstance(archs, (str, Path)):
        arch_list = read_archs_file(archs, sp)
    elif archs is not None:
        arch_list = [sp.validate(a) for a in archs]
        _refuse_repeats(arch_list, [f"archs[{i}]" for i in range(len(arch_list))])
    else:
        if sample is not None and sample < 1:
            raise DiswotError(f"--sample must be at least 1, got {sample}")
        arch_list = list(sp.rank_archs(sample, sample_seed))
    if target is None:  # default targets: leave out a companion target that some students lack
        first = sp.default_target if sp.default_target in targets else targets[0]
        for t in [t for t in targets if t != first]:
            lack = sum(a not in truth[t] for a in arch_list)
            if lack:
                targets.remove(t)
                del truth[t]
                print(
                    f"diswot: note: leaving out target {t}: {lack} of {len(arch_list)} "
                    f"architectures have none (rank it with --target {t})",
                    file=sys.stderr,
                )
    elif archs is None:  # named targets, default set: rank the students that have them all
        have = [a for a in arch_list if all(a in truth[t] for t in targets)]
        if 0 < len(have) < len(arch_list):
            print(
                f"diswot: note: ranking the {len(have)} of {len(arch_list)} architectures with "
                f"{', '.join(targets)} ground truth",
                file=sys.stderr,
            )
            arch_list = have
    if not arch_list:
        raise DiswotError("no architectures to rank; give a non-empty sample or --archs file")
    if len(arch_list) < 2:
        raise DiswotError("ranking needs at least 2 architectures")
    for t in targets:
        missing = [a for a in arch_list if a not in truth[t]]
        if missing:
            raise DiswotError(
                f"{len(missing)} architectures have no {t} ground truth in space '{sp.name}', "
                f"e.g. {missing[0]!r}; rank only architectures of the benchmark"
            )
    names, ensembles = parse_proxies(proxies, has_teacher=teacher is not None, space=sp)
    shard_t = parse_shard(shard)
    settings = {
        "space": sp.name,
        "teacher": teacher,
        "targets": targets,
        "num_classes": ds.num_classes,
        "image_size": ds.image_size,
        "batch_size": batch_size,
        "seeds": seed_list,
        "init": init,
        "data": data,
        "device": device,
        "precision": precision,
        # Recorded, not compared: every engine gives the same scores (tests/test_supernet.py).
        "engine": engine,
        "sample": sample,
        "sample_seed": sample_seed,
        "n_archs": len(arch_list),
        "proxies": names,
        "ensembles": ensembles,
        "shard": list(shard_t) if shard_t else None,
    }
    return _Plan(sp, settings, arch_list, targets, truth, names, ensembles, seed_list, shard_t)


def _build_teacher(plan: _Plan) -> torch.nn.Module | None:
    """The teacher, built with the target's class count (the Scorer's builder builds the space's
    students); the Scorer re-initialises it under each probe seed."""
    from diswot.models import create_model

    teacher = plan.settings["teacher"]
    return (
        None if teacher is None else create_model(teacher, num_classes=plan.settings["num_classes"])
    )


def _check_start(plan: _Plan, data_root: str | None, backend: str) -> torch.nn.Module | None:
    """What can fail before any scoring, checked before the run folder is written: the probe data,
    the device (``auto`` resolved, so workers share out the GPUs) and the teacher, which is returned.

    On Ray, data and device are the workers' (a head may lack the GPUs and data its workers hold):
    the device's name is checked here, its availability by the workers.
    """
    s = plan.settings
    if backend == "local":
        check_probe_source(s["data"], s["num_classes"], data_root)
        s["device"] = str(resolve_device(s["device"]))
    else:
        s["device"] = parse_device(s["device"])
    return _build_teacher(plan)


def _make_scorer(
    plan: _Plan, data_root: str | None, teacher: torch.nn.Module | None = None
) -> Scorer:
    s = plan.settings
    if teacher is None:
        teacher = _build_teacher(plan)
    return Scorer.for_space(
        plan.space,
        teacher,
        num_classes=s["num_classes"],
        batch_size=s["batch_size"],
        seeds=plan.seeds,
        init=s["init"],
        data=s["data"],
        data_root=data_root,
        image_size=s["image_size"],
        device=s["device"],
        precision=s["precision"],
        engine=s.get("engine", "auto"),
    )


def run_rank(
    space: str | SearchSpace = "s1",
    *,
    teacher: str | None = None,
    proxies: str | Sequence[str] = ("diswot", "ms", "mr"),
    seeds: int | Sequence[int] = 1,
    batch_size: int = 64,
    target: str | Sequence[str] | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    archs: Sequence[str] | str | Path | None = None,
    shard: tuple[int, int] | str | None = None,
    out_dir: str | Path | None = None,
    init: str = "gaussian",
    data: str = "synthetic",
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    chunk_size: int | None = None,
    precision: str = "fp32",
    engine: str = "auto",
) -> RankResult:
    """Score the students of ``space`` with ``proxies`` and correlate each with the ground truth.

    Args:
        space: a space name (``s1``, ``nb201``, ...) or instance.
        teacher: teacher model name (default: the space's), or ``"none"`` for teacher-free proxies.
        proxies: ``"all"``, a comma list, or a list; ``"a+b"`` adds a rank-average ensemble.
        seeds: a count (seeds ``0..k-1``) or explicit seeds; every figure is reported as mean and std.
        target: one target or a comma list sharing a dataset (default: the space's default target and
            every target sharing its dataset, e.g. S1 ``kd`` and ``cls``).
        sample, sample_seed: size and seed of the space's ground-truth sample (NB201: 200 cells).
        archs: explicit architectures, or a path to a file listing one per line (NB201 also takes
            NASLib tuples); overrides ``sample``.
        shard: ``(i, n)`` or ``"i/n"``: score only every ``n``-th architecture starting at ``i``;
            join the shard folders with :func:`merge_runs`.
        out_dir: run folder (cache, CSV, tables, plot); ``None`` keeps everything in memory.
        workers, backend, address, gpus_per_task, chunk_size: ``workers > 1`` scores on that many
            local processes, ``backend="ray"`` on Ray actors (:mod:`diswot.parallel`); the scores
            and the cache are the serial path's. The default (1, ``local``) stays in-process.
        precision: ``fp32`` (default) or ``bf16`` for the students' forward pass (see
            :class:`~diswot.probe.Scorer`); part of the run folder's fixed settings.
        engine: ``auto`` (default), ``modules`` or ``supernet`` (see
            :data:`~diswot.probe.ENGINES`); the same scores either way, so not a fixed setting.
    """
    t0 = time.perf_counter()
    plan = _plan(
        space,
        teacher=teacher,
        proxies=proxies,
        seeds=seeds,
        batch_size=batch_size,
        target=target,
        sample=sample,
        sample_seed=sample_seed,
        archs=archs,
        init=init,
        data=data,
        device=device,
        shard=shard,
        precision=precision,
        engine=engine,
    )
    # Recorded in settings.json for the record, not compared (a moved dataset is the same data).
    plan.settings["data_root"] = str(Path(data_root).expanduser()) if data_root else None
    parallel = backend != "local" or workers > 1
    from diswot.parallel import check_backend

    check_backend(backend, address, gpus_per_task)
    if workers < (0 if backend == "ray" else 1):
        raise DiswotError(f"--workers must be at least 1, got {workers}")
    # Everything that can fail at the start fails before the run folder is written, so a failed
    # start leaves no settings behind that would refuse a corrected retry into the same folder.
    teacher_module = _check_start(plan, data_root, backend)
    # Workers build their own Scorer; the parent needs none (a Ray head may have no GPU).
    scorer = None if parallel else _make_scorer(plan, data_root, teacher_module)
    out = Path(out_dir) if out_dir else None
    cache = out / "scores.jsonl" if out else None
    if out:
        _check_settings(out / "settings.json", plan.settings)
    times: dict = {}
    scores = load_scores(cache, times) if cache else {}

    todo = [
        (a, s, [p for p in plan.names if p not in scores.get(a, {}).get(s, {})])
        for a in plan.my_archs
        for s in plan.seeds
    ]
    todo = [t for t in todo if t[2]]
    warm = bool(todo) and any(get_proxy(p).needs_teacher for t in todo for p in t[2])
    if scorer is not None and warm:
        for s in plan.seeds:  # fail now (probe data, teacher features), not after an hour
            scorer.teacher(s)
    if out:
        _write_run_folder(out, plan)
    if scorer is not None:
        scorer.expect((a, s) for a, s, _ in todo)
        stream = ((a, s, *evaluate_timed(scorer, a, need, s)) for a, s, need in todo)
    else:
        from diswot.parallel import ScorerRecipe, score_stream

        lite = _Plan(**{**plan.__dict__, "archs": [], "truth": {}})  # workers need neither
        stream = score_stream(
            ScorerRecipe(lite, data_root, warm),
            todo,
            backend=backend,
            workers=workers,
            chunk_size=chunk_size,
            address=address,
            gpus_per_task=gpus_per_task,
        )
    fh = cache.open("a") if cache else None
    try:
        bar = tqdm(
            stream,
            total=len(todo),
            desc=f"rank {plan.space.name}",
            unit="eval",
            disable=not progress,
        )
        for arch, seed, values, secs in bar:
            scores.setdefault(arch, {}).setdefault(seed, {}).update(values)
            times.setdefault(arch, {}).setdefault(seed, {}).update(secs)
            if fh:
                fh.write(_record(arch, seed, values, secs) + "\n")
                fh.flush()
    finally:
        if fh:
            fh.close()
        close = getattr(stream, "close", None)
        if close:  # stop a parallel stream's workers now, also on Ctrl-C
            close()
    return _finish(plan, plan.my_archs, scores, times, out, time.perf_counter() - t0)


def _finish(
    plan: _Plan,
    archs: list[str],
    scores: Scores,
    times: dict,
    out: Path | None,
    seconds: float,
) -> RankResult:
    result = RankResult(
        space=plan.space.name,
        archs=archs,
        proxies=plan.names + list(plan.ensembles),
        ensembles=plan.ensembles,
        targets=plan.targets,
        seeds=plan.seeds,
        scores=scores,
        truth=plan.truth,
        out_dir=out,
        shard=plan.shard,
    )
    records = [times[a][s] for a in archs for s in plan.seeds if times.get(a, {}).get(s)]
    keys = dict.fromkeys(k for r in records for k in r)
    for k in keys:
        mean = float(np.mean([r[k] for r in records if k in r]))
        if k.startswith("pass:"):
            result.pass_seconds[k[5:]] = mean
        elif k in plan.names:
            result.seconds_per_arch[k] = mean
    if records:
        result.total_seconds_per_arch = float(np.mean([sum(r.values()) for r in records]))
    result.correlations = correlate_all(result)
    add_reference(result, plan.space, plan.settings)
    result.seconds = seconds
    if out:
        write_outputs(result)
    return result


def _check_settings(path: Path, settings: dict) -> None:
    """Refuse to mix scores from different settings in one folder (proxies and seeds may grow)."""
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise DiswotError(f"{path} is corrupt; delete it or use another --out folder") from None
        prev = old.get("settings", old)
        diff = [k for k in FIXED_SETTINGS if stored_setting(prev, k) != settings[k]]
        if diff:
            raise DiswotError(
                f"{path.parent} holds a run with different {', '.join(diff)}; use another --out folder"
            )


def _write_run_folder(out: Path, plan: _Plan) -> None:
    """Create ``out`` with the run's ``settings.json`` and ``archs.txt`` (after :func:`_check_settings`)."""
    run_folder(out)
    meta = {
        "settings": plan.settings,
        "versions": {
            "diswot": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    (out / "settings.json").write_text(json.dumps(meta, indent=2))
    (out / "archs.txt").write_text("\n".join(plan.archs) + "\n")


# ------------------------------------------------------------------------------------ merge


def merge_runs(dirs: Sequence[str | Path], out_dir: str | Path) -> RankResult:
    """Join the run folders of ``--shard`` runs (same settings and sample) into ``out_dir``.

    Every architecture of the sample must be scored, for every proxy and seed, by some folder; the
    merged ``scores.jsonl`` then makes ``out_dir`` an ordinary run folder (rerunnable, extendable).
    """
    t0 = time.perf_counter()
    if not dirs:
        raise DiswotError("--merge needs at least one run folder")
    metas, arch_lists = [], []
    for d in dirs:
        p = Path(d)
        if not (p / "settings.json").is_file() or not (p / "archs.txt").is_file():
            raise DiswotError(f"{p} is not a rank run folder (no settings.json/archs.txt)")
        metas.append(json.loads((p / "settings.json").read_text())["settings"])
        arch_lists.append((p / "archs.txt").read_text().split())
    first = metas[0]
    for d, m, a in zip(dirs, metas, arch_lists):
        diff = [
            k
            for k in (*FIXED_SETTINGS, "targets", "seeds")
            if stored_setting(m, k) != stored_setting(first, k)
        ]
        if diff:
            raise DiswotError(f"{d} differs from {dirs[0]} in {', '.join(diff)}; merge like runs")
        if a != arch_lists[0]:
            raise DiswotError(f"{d} ranks another architecture list than {dirs[0]}")
    names = set(first["proxies"])
    for d, m in zip(dirs, metas):
        if set(m["proxies"]) != names:
            raise DiswotError(f"{d} scored other proxies than {dirs[0]}; merge like runs")
    plan = _plan(
        first["space"],
        teacher=first["teacher"] or "none",
        proxies=[*first["proxies"], *first.get("ensembles", {})],
        seeds=first["seeds"],
        batch_size=first["batch_size"],
        target=first["targets"],
        sample=first.get("sample"),
        sample_seed=first.get("sample_seed", 0),
        archs=arch_lists[0],
        init=first["init"],
        data=first["data"],
        device=first["device"],
        shard=None,
        precision=str(stored_setting(first, "precision")),
        engine=str(first.get("engine", "auto")),
    )
    scores: Scores = {}
    times: dict = {}
    for d in dirs:
        part_times: dict = {}
        for arch, per_seed in load_scores(Path(d) / "scores.jsonl", part_times).items():
            for s, vals in per_seed.items():
                scores.setdefault(arch, {}).setdefault(s, {}).update(vals)
        for arch, per_seed in part_times.items():
            for s, vals in per_seed.items():
                times.setdefault(arch, {}).setdefault(s, {}).update(vals)
    missing = [
        a
        for a in plan.archs
        if any(p not in scores.get(a, {}).get(s, {}) for s in plan.seeds for p in plan.names)
    ]
    if missing:
        raise DiswotError(
            f"{len(missing)} of {len(plan.archs)} architectures are not fully scored in these "
            f"folders (e.g. {missing[0]!r}); run the missing shard(s) first"
        )
    out = Path(out_dir)
    _check_settings(out / "settings.json", plan.settings)
    _write_run_folder(out, plan)
    with (out / "scores.jsonl").open("w") as fh:
        for a in plan.archs:
            for s in plan.seeds:
                fh.write(_record(a, s, scores[a][s], times.get(a, {}).get(s, {})) + "\n")
    return _finish(plan, plan.archs, scores, times, out, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ statistics


def correlate_all(result: RankResult) -> list[dict]:
    """Per proxy and target: each statistic per seed, then mean and population std over seeds.

    ``n_nonfinite`` counts non-finite scores over all (architecture, seed) pairs.
    """
    rows = []
    for proxy in result.proxies:
        sign = 1.0 if proxy in result.ensembles else get_proxy(proxy).sign
        columns = {s: np.asarray(result.column(proxy, s), dtype=np.float64) for s in result.seeds}
        for target in result.targets:
            true = np.array([result.truth[target][a] for a in result.archs])
            per_seed = [rankstats.correlate(columns[s] * sign, true) for s in result.seeds]
            row: dict = {"proxy": proxy, "target": target}
            for key in STATS:
                mean, std = rankstats.mean_std([c[key] for c in per_seed])
                row[key], row[f"{key}_std"] = mean, std
            row["n"] = int(per_seed[0]["n"])
            row["n_nonfinite"] = int(sum(c["n_nonfinite"] for c in per_seed))
            row["seeds"] = len(result.seeds)
            rows.append(row)
    return rows


def reference_scores(space: str, target: str) -> dict[str, tuple[str, dict[str, float]]]:
    """Published scores of the same proxies, ``proxy -> (source, arch -> score)`` (NB201 only).

    NASLib's precomputed proxies exist for 725 cells (CIFAR batches of 32, PyTorch default init)
    and the Zen-scores for all 15,625; names and orientation are the same as ours.
    """
    if space != "nb201":
        return {}
    from diswot.models.nb201 import naslib_to_arch

    refs: dict[str, tuple[str, dict[str, float]]] = {}
    known = _known()  # once: it sorts the registry, and this loop runs 725 cells x 12 proxies
    for key, rec in bench.naslib_scores(target).items():
        arch = naslib_to_arch(key)
        for proxy, value in rec.items():
            if proxy != "val_accuracy" and proxy in known:
                refs.setdefault(proxy, ("NASLib", {}))[1][arch] = float(value)
    refs["zen"] = ("Zen-NAS", bench.zen_scores(target))
    return refs


def _known() -> set[str]:
    from diswot.proxies import list_proxies

    return set(list_proxies())


def add_reference(result: RankResult, space: SearchSpace, settings: dict) -> None:
    """Add ``reference_kendall`` (seed-free) to each correlation row whose proxy has published
    scores for at least 10 of the ranked architectures, computed on those architectures."""
    for target in result.targets:
        refs = reference_scores(space.name, target)
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


# ------------------------------------------------------------------------------------ outputs


def write_outputs(result: RankResult) -> None:
    """scores.csv (one row per architecture), correlations.json, table.md and scatter.png."""
    out = result.out_dir
    assert out is not None
    many = len(result.seeds) > 1
    with (out / "scores.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        seed_cols = [(p, s) for p in result.proxies for s in result.seeds] if many else []
        w.writerow(
            [
                "arch",
                *result.proxies,
                *(f"{p}@seed{s}" for p, s in seed_cols),
                *(f"acc_{t}" for t in result.targets),
            ]
        )
        means = {p: result.mean_column(p) for p in result.proxies}
        per_seed = {(p, s): result.column(p, s) for p, s in seed_cols}
        for i, a in enumerate(result.archs):
            w.writerow(
                [
                    a,
                    *(_csv(means[p][i]) for p in result.proxies),
                    *(_csv(per_seed[k][i]) for k in seed_cols),
                    *(result.truth[t][a] for t in result.targets),
                ]
            )
    (out / "correlations.json").write_text(json.dumps(result.correlations, indent=2))
    (out / "table.md").write_text(result.table() + "\n")
    plot_scatter(result, out / "scatter.png")


def _csv(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else "nan"


def plot_scatter(result: RankResult, path: Path) -> None:
    """A grid with one panel per proxy: seed-mean score against the first target's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = result.targets[0]
    corr = {c["proxy"]: c for c in result.correlations if c["target"] == target}
    order = sorted(result.proxies, key=lambda p: -_nan_low(corr[p]["kendall"]))
    n = len(order)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.7 * rows), squeeze=False)
    true = np.array([result.truth[target][a] for a in result.archs])
    for ax, proxy in zip(axes.flat, order):
        pred = np.array(result.mean_column(proxy))
        ok = np.isfinite(pred)
        ax.scatter(pred[ok], true[ok], s=7, alpha=0.6)
        bad = f", {int((~ok).sum())} non-finite" if (~ok).any() else ""
        low = proxy not in result.ensembles and get_proxy(proxy).sign < 0
        arrow = " (lower better)" if low else ""
        ax.set_title(f"{proxy}{arrow}  τ={corr[proxy]['kendall']:.2f}{bad}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_offset_text().set_fontsize(6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supylabel(f"{target} accuracy (%)", fontsize=9)
    fig.suptitle(f"{result.space}: proxy score vs {target} accuracy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------ NASLib check

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
