"""``run_rank`` and ``merge_runs``: the two ways a rank run folder is filled."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diswot.config import defaults, replace
from diswot.data import check_probe_source
from diswot.errors import DiswotError
from diswot.parallel import check_backend, stream_chunks
from diswot.parallel.workers import refuse_reimported_main
from diswot.proxies import get_proxy
from diswot.rank.config import FIXED_SETTINGS, RankConfig
from diswot.rank.evaluate import ChunkScorerFactory, build_teacher, make_scorer, score_tasks
from diswot.rank.naslib import add_reference
from diswot.rank.outputs import write_outputs
from diswot.rank.plan import _Plan, _plan, size_notes
from diswot.rank.result import RankResult, correlate_all
from diswot.rank.store import (
    SCORES,
    ScoreLog,
    Scores,
    Times,
    check_settings,
    load_scores,
    read_run_folder,
    score_record,
    write_run_folder,
    write_scores,
)
from diswot.runfolder import settings_diff, stored_setting
from diswot.runtime import parse_device, resolve_device
from diswot.scoring import Scorer
from diswot.scoring.reference import (
    ReferenceSample,
    check_references,
    copy_references,
    recorded_references,
    reference_settings,
    run_references,
    write_references,
)
from diswot.scoring.teacher import TARGET_CLASSES_FIX, WEIGHT_SETTINGS, choose_teacher
from diswot.spaces import SearchSpace

_D = defaults(RankConfig)


def _check_start(plan: _Plan, data_root: str | None, backend: str) -> torch.nn.Module | None:
    """What can fail before any scoring, checked before the run folder is written: the probe data,
    the device (``auto`` resolved, so workers share out the GPUs) and the teacher, which is returned.

    On Ray, data and device are the workers' (a head may lack the GPUs and data its workers hold):
    the device's name is checked here, its availability by the workers.
    """
    c = plan.config
    if backend == "local":
        check_probe_source(c.data, c.num_classes, data_root)
        device = str(resolve_device(c.device))
    else:
        device = parse_device(c.device)
    plan.config = replace(c, device=device)
    return build_teacher(plan)


def _choose_teacher(
    plan: _Plan, teacher: str | None, ckpt: str | Path | None, teacher_init: str | None
) -> None:
    """Record the teacher's weights in ``plan.config`` (a checkpoint's architecture, path and
    digest, and keep or random); :func:`~diswot.rank.evaluate.build_teacher` reads them back."""
    c = plan.config
    if ckpt is not None and c.teacher is None:
        raise DiswotError("--teacher none ranks without a teacher; drop it to use --teacher-ckpt")
    given = teacher if c.teacher is not None else None  # None: the checkpoint names it
    chosen = choose_teacher(
        given, ckpt, teacher_init, c.num_classes, classes_fix=TARGET_CLASSES_FIX
    )
    plan.config = replace(c, teacher=chosen.label(c.teacher), **chosen.settings())


def run_rank(
    space: str | SearchSpace = _D["space"],
    *,
    teacher: str | None = None,
    teacher_ckpt: str | Path | None = None,
    teacher_init: str | None = None,
    proxies: str | Sequence[str] = _D["proxies"],
    seeds: int | Sequence[int] = 1,
    batch_size: int = _D["batch_size"],
    target: str | Sequence[str] | None = None,
    sample: int | None = _D["sample"],
    sample_seed: int = _D["sample_seed"],
    archs: Sequence[str] | str | Path | None = None,
    shard: tuple[int, int] | str | None = None,
    out_dir: str | Path | None = None,
    init: str = _D["init"],
    data: str = _D["data"],
    data_root: str | None = None,
    device: str = _D["device"],
    progress: bool = True,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    chunk_size: int | None = None,
    precision: str = _D["precision"],
    engine: str = _D["engine"],
    group: int | None = None,
) -> RankResult:
    """Score the students of ``space`` with ``proxies`` and correlate each with the ground truth.

    Args:
        space: a space name (``s1``, ``nb201``, ...) or instance.
        teacher: teacher model name (default: the space's), or ``"none"`` for teacher-free proxies.
        teacher_ckpt, teacher_init: a trained teacher's file (a ``diswot train`` checkpoint, which
            names its architecture, or a state dict of ``teacher``'s network) and ``keep`` (its
            default: the trained weights) or ``random`` (re-initialised per probe seed, the
            paper's; the only choice for a name). Recorded with the file's digest: a run folder
            refuses scores of other weights.
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
            :class:`~diswot.scoring.Scorer`); part of the run folder's fixed settings.
        engine: ``auto`` (default), ``modules`` or ``supernet`` (see
            :data:`~diswot.scoring.ENGINES`); the same scores either way, so not a fixed setting.
        group: architectures scored in one pass in this process (:mod:`diswot.scoring.group`;
            the same scores to float tolerance); ``None`` chooses (1 on a CPU, from free memory
            on a GPU). Said on stderr when above 1.
    """
    refuse_reimported_main("run_rank")
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
        data_root=data_root,
    )
    _choose_teacher(plan, teacher, teacher_ckpt, teacher_init)
    parallel = backend != "local" or workers > 1
    if parallel and group is not None and group > 1:
        raise DiswotError(
            f"--group {group} scores in this process; drop --workers/--backend or --group"
        )
    check_backend(backend, address, gpus_per_task)
    if workers < (0 if backend == "ray" else 1):
        raise DiswotError(f"--workers must be at least 1, got {workers}")
    # Everything that can fail at the start fails before the run folder is written, so a failed
    # start leaves no settings behind that would refuse a corrected retry into the same folder.
    teacher_module = _check_start(plan, data_root, backend)
    # Workers build their own Scorer; the parent needs none (a Ray head may have no GPU).
    scorer = None if parallel else make_scorer(plan, data_root, teacher_module)
    out = Path(out_dir) if out_dir else None
    if out:
        check_settings(out, plan.settings)
    samples = _references(plan, scorer, data_root, teacher_module, backend, out)
    log = ScoreLog(out / SCORES) if out else None
    times: Times = {}
    scores = log.load(times) if log else {}

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
        write_run_folder(out, plan.settings, plan.archs)
        write_references(out, samples)
    if scorer is not None:
        from diswot.scoring.group import choose_group, grouped_proxies

        if group is not None and group < 1:
            raise DiswotError(f"--group must be at least 1, got {group}")
        size = choose_group(scorer, plan.names, group)
        if size > 1 and todo:
            report = grouped_proxies(scorer, [t[0] for t in todo[:2]], plan.names, size)
            print(f"diswot rank: {report.text()}", file=sys.stderr)
        stream = score_tasks(scorer, todo, size)
    else:
        stream = stream_chunks(
            ChunkScorerFactory(plan, data_root, warm),
            todo,
            backend=backend,
            workers=workers,
            chunk_size=chunk_size,
            address=address,
            gpus_per_task=gpus_per_task,
            device=plan.config.device,
            name="diswot-scorer",
        )
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
            if log:
                log.append(arch, seed, values, secs)
    finally:
        if log:
            log.close()
        close = getattr(stream, "close", None)
        if close:  # stop a parallel stream's workers now, also on Ctrl-C
            close()
    return _finish(plan, plan.my_archs, scores, times, out, time.perf_counter() - t0)


def _references(
    plan: _Plan,
    scorer: Scorer | None,
    data_root: str | None,
    teacher: torch.nn.Module | None,
    backend: str,
    out: Path | None,
) -> dict[str, ReferenceSample]:
    """The reference samples of the composites ranked, built here before any worker needs them
    (local workers read them from the cache) and recorded in ``plan.config``. On Ray, whose
    workers may not share this machine's cache, each worker builds or reads its own."""
    if backend != "local" or not any(get_proxy(n).needs_space for n in plan.names):
        return {}
    samples = run_references(scorer or make_scorer(plan, data_root, teacher), plan.names, out)
    refs = {**recorded_references(out), **(reference_settings(samples) or {})}
    plan.config = replace(plan.config, references=refs or None)
    return samples


def _finish(
    plan: _Plan,
    archs: list[str],
    scores: Scores,
    times: Times,
    out: Path | None,
    seconds: float,
) -> RankResult:
    """Correlate, add the published references, and write the outputs of a scored plan."""
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
    size_notes(plan, len(archs))
    add_reference(result, plan.space.name)
    result.seconds = seconds
    if out:
        write_outputs(result)
    return result


def merge_runs(dirs: Sequence[str | Path], out_dir: str | Path) -> RankResult:
    """Join the run folders of ``--shard`` runs (same settings and sample) into ``out_dir``.

    Every architecture of the sample must be scored, for every proxy and seed, by some folder; the
    merged ``scores.jsonl`` then makes ``out_dir`` an ordinary run folder (rerunnable, extendable).
    """
    t0 = time.perf_counter()
    if not dirs:
        raise DiswotError("--merge needs at least one run folder")
    folders = [read_run_folder(d) for d in dirs]
    first, first_archs = folders[0]
    for d, (m, a) in zip(dirs, folders):
        diff = settings_diff(m, first, (*FIXED_SETTINGS, "targets", "seeds"))
        if diff:
            raise DiswotError(f"{d} differs from {dirs[0]} in {', '.join(diff)}; merge like runs")
        if a != first_archs:
            raise DiswotError(f"{d} ranks another architecture list than {dirs[0]}")
    names = set(first["proxies"])
    for d, (m, _) in zip(dirs, folders):
        if set(m["proxies"]) != names:
            raise DiswotError(f"{d} scored other proxies than {dirs[0]}; merge like runs")
        check_references(d, first.get("references"), m.get("references"))
    plan = _plan(
        first["space"],
        teacher=first["teacher"] or "none",
        proxies=[*first["proxies"], *(first.get("ensembles") or {})],
        seeds=first["seeds"],
        batch_size=first["batch_size"],
        target=first["targets"],
        sample=first.get("sample"),
        sample_seed=first.get("sample_seed", 0),
        archs=first_archs,
        init=first["init"],
        data=first["data"],
        device=first["device"],
        shard=None,
        precision=str(stored_setting(first, "precision")),
        engine=str(first.get("engine", "auto")),
    )
    plan.config = replace(plan.config, **{k: stored_setting(first, k) for k in WEIGHT_SETTINGS})
    plan.config = replace(plan.config, references=first.get("references"))
    scores: Scores = {}
    times: Times = {}
    for d in dirs:
        part_times: Times = {}
        for arch, per_seed in load_scores(Path(d) / SCORES, part_times).items():
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
    check_settings(out, plan.settings)
    write_run_folder(out, plan.settings, plan.archs)
    copy_references(dirs[0], out)
    write_scores(
        out / SCORES,
        (
            score_record(a, s, scores[a][s], times.get(a, {}).get(s, {}))
            for a in plan.archs
            for s in plan.seeds
        ),
    )
    return _finish(plan, plan.archs, scores, times, out, time.perf_counter() - t0)
