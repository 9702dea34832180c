"""``run_search``: check the settings, open the run folder, run the searcher, report the winner.

The search is a **deterministic function of (seed, scores)**. All randomness comes from one
``random.Random(seed)``, and the only other input that steers it is the score of each candidate. That
is what makes resuming exact: ``candidates.jsonl`` records every scored candidate in order, and a
resumed run replays the algorithm from the start, answering the first N "score this" requests from the
file (checking the replayed arch is the recorded one) and only scoring what comes after. The RNG stream,
the population and hence the winner are identical to an uninterrupted run, whatever the point at which
the earlier process died (SIGKILL included: a half-written last line is dropped).

Rules every algorithm follows (:mod:`~diswot.search.ledger` enforces them):

* a candidate is checked against the budget **before** it is scored; inadmissible samples/mutations are
  redrawn (bounded by ``max_retries``); a budget that admits nothing raises :class:`DiswotError`;
* a candidate already scored is looked up, not rescored: it counts as a population member but not as a
  new scored candidate (``cycles`` counts scored candidates);
* ``stall_limit`` consecutive steps without a new candidate (space or budget exhausted) end the search;
* ground truth is looked up only after the winner is decided, for the report.

With ``in_flight`` K > 1 (``--workers``, ``--backend ray``) K candidates are scored at once on a pool
of workers (:mod:`diswot.parallel`); results are taken in *proposal* order, so the determinism above
holds with ``(seed, in_flight)`` in place of the seed, on any backend.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from diswot.config import build, replace, to_settings
from diswot.errors import DiswotError
from diswot.parallel.workers import refuse_reimported_main
from diswot.runfolder import (
    atomic_write_json,
    refuse_other_settings,
    write_settings,
)
from diswot.runtime import parse_device, refuse_file, resolve_device, run_folder
from diswot.scoring.reference import reference_settings, run_references, write_references
from diswot.search.budget import Budget
from diswot.search.config import (
    DEFAULT_CYCLES,
    DEFAULTS,
    FIXED_SETTINGS,
    SearchConfig,
    default_algorithm,
    read_settings,
)
from diswot.search.ledger import CANDIDATES, Admission, Ledger, candidate_journal, load_candidates
from diswot.search.objective import GivenObjective, Objective, ProxyObjectiveFactory
from diswot.search.plot import PLOT, plot_progress
from diswot.search.result import (
    RESULT,
    SearchResult,
    admissible_pool,
    check_scores,
    decide,
    pick_report,
    public,
)
from diswot.search.searchers import ALGORITHMS, SEARCHERS, drive, require_enumerable
from diswot.spaces import SearchSpace, get_space

if TYPE_CHECKING:
    from diswot.search.pareto.config import ParetoConfig


def _positive(name: str, v: int, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise DiswotError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def run_search(
    space: str | SearchSpace = DEFAULTS["space"],
    *,
    teacher: str | nn.Module | None = None,
    teacher_ckpt: str | Path | None = None,
    teacher_init: str | None = None,
    target: str | None = None,
    algorithm: str | None = None,
    cycles: int | None = None,
    population: int = DEFAULTS["population"],
    sample_size: int = DEFAULTS["sample_size"],
    crossover_prob: float = DEFAULTS["crossover_prob"],
    seed: int = DEFAULTS["seed"],
    max_params: str | int | None = None,
    max_flops: str | int | None = None,
    min_params: str | int | None = None,
    min_flops: str | int | None = None,
    proxy: str = DEFAULTS["objective"],
    objective: Objective | None = None,
    probe_seeds: int | Sequence[int] = 1,
    batch_size: int = DEFAULTS["batch_size"],
    init: str = DEFAULTS["init"],
    data: str = DEFAULTS["data"],
    data_root: str | None = None,
    device: str = DEFAULTS["device"],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_retries: int = 1000,
    stall_limit: int | None = None,
    top_k: int = 10,
    workers: int = 1,
    backend: str = DEFAULTS["backend"],
    address: str | None = None,
    gpus_per_task: float = 0.0,
    in_flight: int | None = None,
    group: int | None = None,
    precision: str = DEFAULTS["precision"],
    engine: str = DEFAULTS["engine"],
    on_start: Callable[[Path], None] | None = None,
    pareto: ParetoConfig | str | Iterable[str] | None = None,
) -> SearchResult:
    """Search ``space`` for the student that maximises the objective within the budget.

    Args:
        space: a registered space name (``s1``, ``nb201``, ...) or a :class:`SearchSpace` instance.
        teacher: model name for :func:`~diswot.models.create_model` (built with the target's class
            count) or an ``nn.Module``; default ``space.default_teacher``.
        teacher_ckpt: a trained teacher's file: a ``diswot train`` checkpoint (naming its
            architecture, so ``teacher`` may be left out) or a state dict of ``teacher``'s network.
        teacher_init: ``keep`` (the default for a checkpoint or a module: their own weights) or
            ``random`` (re-initialised per probe seed, the paper's; the only choice for a name).
            Recorded with the checkpoint's path and digest (``teacher_ckpt``, ``teacher_sha256``);
            a resume with other weights is refused.
        target: the space's dataset target (fixes class count and resolution); default per space.
        algorithm: ``evolution`` | ``random`` | ``exhaustive``; default exhaustive for spaces of at
            most 1,000 archs, evolution otherwise.
        cycles: scored candidates (exhaustive: at most this many; default all admissible).
        population, sample_size: aging evolution's population and tournament size.
        crossover_prob: chance that a child is the crossover of two tournament winners (0 = the
            paper's mutation-only evolution).
        seed: the search's RNG seed (independent of the probe seeds).
        max_params, max_flops, min_params, min_flops: inclusive budget (``"100M"`` etc. accepted).
        proxy: registered proxy to maximise (oriented by its sign); ignored when ``objective`` is given.
        objective: ``f(arch) -> float | Evaluation`` replacing the proxy (cheap objectives for tests).
        probe_seeds: number of probe seeds (``range(n)``) or the seeds to average the proxy over.
        out_dir: run folder (``None``: nothing is written); must be new or empty unless ``resume``.
        resume: continue the run in ``out_dir`` (same settings; ``cycles`` may grow).
        max_retries: redraws of an over-budget sample or mutation before giving up on it.
        stall_limit: steps in a row without a new candidate that end the search (default
            ``max(1000, 20 * population)``).
        workers: processes (``backend="local"``) or Ray actors (``"ray"``; 0 = the cluster's
            CPUs, or GPUs / ``gpus_per_task``) that score candidates, each with its own Scorer.
        backend: ``local`` (in-process for one worker, spawned processes for more) or ``ray``.
        address, gpus_per_task: Ray cluster address (default: a local runtime) and GPUs per actor.
        in_flight: candidates scored at once (default ``workers``). Results are taken in proposal
            order, so a run is a deterministic function of ``(seed, in_flight)`` whatever the
            backend; ``in_flight=1`` is the serial search.
        group: candidates scored in one pass in this process (:meth:`Scorer.score_many`; the same
            scores); ``None`` chooses it (:func:`~diswot.scoring.group.choose_group`: 1 on a CPU,
            from free memory on a GPU). ``in_flight`` defaults to it, so a group of G proposes G
            candidates at a time.
        precision: ``fp32`` (default) or ``bf16`` for the students' forward pass (see
            :class:`~diswot.scoring.Scorer`); a resumed run keeps its own.
        engine: ``auto`` (default), ``modules`` or ``supernet`` (see
            :data:`~diswot.scoring.ENGINES`); the same scores either way, so a resume may change it.
        on_start: called with ``out_dir`` once every setting is checked, the teacher built and the
            workers started and the run folder made, before anything is written in it (the CLI
            announces the folder there, so a folder that cannot be made is never announced).
        pareto: a Pareto search (Optuna's NSGA-II, ``algorithm="nsga2"``): the costs minimised
            beside the score (``"params,latency"``), or a
            :class:`~diswot.search.pareto.config.ParetoConfig` with the latency budget and
            measurement, the Optuna storage and study. Returns a
            :class:`~diswot.search.pareto.result.ParetoResult` (the front, ``pareto.*`` files).
    """
    refuse_reimported_main("run_search")
    t0 = time.perf_counter()
    if isinstance(objective, str):  # an objective by name (``objective="default"``): a proxy
        proxy, objective = objective, None
    asked = proxy if objective is None else None
    sp = get_space(space)
    target = sp.default_target if target is None else target
    spec = sp.dataset(target)
    if target is not None and target.lower() in {t.lower() for t in sp.targets}:
        target = sp._check_target(target)
    budget = Budget.parse(max_params, max_flops, min_params, min_flops)
    plan = None
    if pareto is not None or (algorithm or "").lower() == "nsga2":
        from diswot.search.pareto.plan import ParetoPlan

        plan = ParetoPlan.create(sp, pareto, algorithm)
        algorithm = "nsga2"
    algorithm = (algorithm or default_algorithm(sp)).lower()
    if algorithm not in ALGORITHMS and plan is None:
        raise DiswotError(f"unknown algorithm '{algorithm}'; known: {', '.join(ALGORITHMS)}")
    if algorithm == "exhaustive":
        require_enumerable(sp)
    if cycles is None and algorithm != "exhaustive":
        cycles = DEFAULT_CYCLES
    if cycles is not None:
        cycles = _positive("--cycles", cycles)
    population = _positive("--population", population)
    sample_size = _positive("--sample-size", sample_size)
    if sample_size > population and plan is None:  # NSGA-II has no tournament size
        raise DiswotError(
            f"--sample-size {sample_size} exceeds --population {population}; lower it"
        )
    if not 0.0 <= float(crossover_prob) <= 1.0:
        raise DiswotError(f"--crossover-prob must be in [0, 1]; got {crossover_prob}")
    max_retries = _positive("max_retries", max_retries)
    from diswot.parallel import check_backend

    check_backend(backend, address, gpus_per_task)
    workers = _positive("--workers", workers, minimum=0 if backend == "ray" else 1)
    if in_flight is not None:
        in_flight = _positive("--in-flight", in_flight)
    if group is not None:
        group = _positive("--group", group)
        if group > 1 and (workers != 1 or backend != "local"):
            raise DiswotError(
                f"--group {group} scores its candidates in this process; drop --workers/--backend "
                "or --group"
            )
    stall_limit = _positive("stall_limit", stall_limit or max(1000, 20 * population))
    seed_list = list(range(probe_seeds)) if isinstance(probe_seeds, int) else list(probe_seeds)
    if not seed_list:
        raise DiswotError("--seeds must be at least 1")
    from diswot.scoring import check_precision, resolve_engine
    from diswot.scoring.teacher import TARGET_CLASSES_FIX, choose_teacher

    check_precision(precision)
    engine = resolve_engine(engine, getattr(sp, "supernet", None), init)
    # A Ray cluster's workers may have the GPU its head lacks: there only the name is checked here.
    device = str(resolve_device(device)) if backend == "local" else parse_device(device)
    if plan is not None:
        plan.check_run(device=device, workers=workers, backend=backend, population=population)
    chosen = choose_teacher(
        teacher, teacher_ckpt, teacher_init, spec.num_classes, classes_fix=TARGET_CLASSES_FIX
    )
    teacher = sp.default_teacher if chosen.teacher is None else chosen.teacher
    if objective is None:
        from diswot.proxies import get_proxy, resolve_proxies
        from diswot.proxies.composite import resolve_alias

        objective_name = get_proxy(resolve_alias(proxy)).name
        # The same applicability checks as rank's (a BN-statistics proxy on a BN-free space...).
        resolve_proxies(
            [objective_name],
            has_teacher=True,
            has_batchnorm=getattr(sp, "has_batchnorm", True),
            space=sp.name,
        )
    else:
        objective_name = getattr(objective, "name", getattr(objective, "__name__", "custom"))

    cfg = build(
        SearchConfig,
        space=sp.name,
        target=target,
        num_classes=spec.num_classes,
        image_size=spec.image_size,
        teacher=chosen.label(teacher),
        objective=objective_name,
        algorithm=algorithm,
        seed=int(seed),
        cycles=cycles,
        population=population,
        sample_size=sample_size,
        crossover_prob=float(crossover_prob),
        budget=budget.to_dict(),
        batch_size=batch_size,
        probe_seeds=tuple(seed_list),
        init=init,
        data=data,
        data_root=str(Path(data_root).expanduser()) if data_root else None,
        device=str(device),
        flop_convention=sp.flop_convention,
        precision=precision,
        engine=engine,
        **chosen.settings(),
    )

    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise DiswotError("resuming needs the run folder; pass --resume DIR")
    # Folder first (cheap), then the teacher (slow, may fail), then write: a failed start leaves
    # no half-made run folder behind.
    recorded = _check_folder(out, cfg, resume) if out is not None else []
    if resume and out is not None:
        in_flight = _resumed_in_flight(out, in_flight)
    if plan is not None:
        plan.bind(out, resume, recorded)
        admission = plan.admission(budget, spec.num_classes, spec.image_size, max_retries)
    else:
        admission = Admission(sp, budget, spec.num_classes, spec.image_size, max_retries)
    admission.check(int(seed), exhaustive=algorithm == "exhaustive")
    limit = 10**18 if cycles is None else cycles
    if algorithm == "exhaustive":
        limit = min(limit, len(admission.admissible() or []))
    samples: dict = {}  # reference samples of a composite objective
    if objective is None:
        factory: Any = ProxyObjectiveFactory(
            space=sp, teacher=teacher, proxy=objective_name, num_classes=spec.num_classes,
            image_size=spec.image_size, seeds=seed_list, batch_size=batch_size, init=init,
            data=data, data_root=data_root, device=device, precision=precision, engine=engine,
            teacher_init=chosen.init,
        )  # fmt: skip
        # Built here too, on a pool as well: a bad teacher fails now, with its own message.
        objective = factory.objective()
        # A composite's reference sample, built (or read) here once, before any worker needs it.
        samples = run_references(objective.scorer, [objective_name], out if resume else None)
        cfg = replace(cfg, references=reference_settings(samples))
    else:
        factory = GivenObjective(objective)
    t_loop = time.perf_counter()
    pool: Any = None
    ledger: Ledger | None = None
    try:
        group = _group(objective, group, workers, backend)
        pool = _make_pool(
            objective, factory, backend, workers, address, gpus_per_task, device, group
        )
        n_workers = getattr(pool, "workers", workers)
        cfg = replace(
            cfg,
            in_flight=in_flight or max(group, n_workers or 1),
            workers=n_workers,
            backend=backend,
            group=group,
        )
        if out is not None:
            run_folder(out)  # first: nothing may announce a folder that cannot be made
            if on_start is not None:
                on_start(out)
            write_settings(out, {**to_settings(cfg), **(plan.settings() if plan else {})})
            write_references(out, samples)
            if plan is not None:
                plan.open(out)
        journal = candidate_journal(out / CANDIDATES) if out is not None else None
        if plan is not None:
            identity = {k: to_settings(cfg)[k] for k in ("space", "target", "objective", "budget")}
            searcher = plan.searcher(admission, int(seed), population, identity)
            ledger = plan.ledger(admission, limit, recorded, journal, pool)
        else:
            searcher = SEARCHERS[algorithm].from_config(admission, random.Random(int(seed)), cfg)
            ledger = Ledger(admission, limit, recorded, journal, pool)
        ledger.start(progress, sp.name)
        stop = drive(searcher, ledger, cfg.in_flight, stall_limit)
    finally:
        if ledger is not None:
            ledger.close()
        if pool is not None:
            pool.close()
        if plan is not None:
            plan.close()
    loop_seconds = time.perf_counter() - t_loop
    assert ledger is not None  # drive() returned, so the ledger was made
    if not ledger.order:
        raise DiswotError("the search scored no candidate; raise --cycles or loosen the budget")
    if len(recorded) > len(ledger.order):
        raise DiswotError(
            f"{out}/{CANDIDATES} holds {len(recorded)} candidates but this search ends after "
            f"{len(ledger.order)}; it was written with other settings, use another --out"
        )

    winner, top, truth = decide(ledger.order, sp, top_k)
    scored = [r["arch"] for r in ledger.order]
    pick = pick_report(winner["arch"], sp, target, admissible_pool(admission), scored)
    result = SearchResult(
        winner=winner,
        top=top,
        candidates=[public(r) for r in ledger.order],
        history=ledger.history,
        settings=to_settings(cfg),
        budget=budget.text(),
        cost_convention=sp.cost_convention(spec.num_classes, spec.image_size),
        ground_truth=truth,
        stop_reason=stop,
        steps=ledger.steps,
        rejected=admission.rejected,
        seconds=time.perf_counter() - t0,
        loop_seconds=loop_seconds,
        out_dir=out,
        pick=pick,
        proxy=asked,
    )
    if plan is not None:
        result = plan.finish(result, ledger.order, out)
    if out is not None:
        atomic_write_json(out / RESULT, result.to_dict())
        plot_progress(ledger.history, out / PLOT, f"{algorithm} on {sp.name}: {objective_name}")
    check_scores(ledger.order, objective_name, out)
    return result


def _check_folder(out: Path, cfg: SearchConfig, resume: bool) -> list[dict]:
    """Refuse a folder that would mix runs; on resume return the records already scored."""
    if not resume:
        if refuse_file(out).exists() and any(out.iterdir()):
            raise DiswotError(
                f"{out} already exists and is not empty; use --resume {out} or another --out"
            )
        return []
    refuse_other_settings(out, read_settings(out), to_settings(cfg), FIXED_SETTINGS, "a search")
    records = load_candidates(out / CANDIDATES)
    if cfg.cycles is not None and len(records) > cfg.cycles:
        raise DiswotError(
            f"{out} already holds {len(records)} scored candidates; resume with "
            f"--cycles {len(records)} or more"
        )
    return records


def _resumed_in_flight(out: Path, asked: int | None) -> int:
    """The number in flight shapes the proposals: a resume keeps the recorded one (whatever the
    workers now), and refuses another one asked for explicitly."""
    done_with = int(read_settings(out).get("in_flight", 1))
    if asked is not None and asked != done_with:
        raise DiswotError(
            f"{out} was searched with {done_with} candidates in flight; resume with "
            f"--in-flight {done_with} (any --workers) or use another --out"
        )
    return done_with


def _group(objective: Objective, asked: int | None, workers: int, backend: str) -> int:
    """Candidates per pass: as asked, else chosen for the scorer's device (1 with workers, or for
    an objective that is not a proxy's: it has no grouped form to use)."""
    if workers != 1 or backend != "local":
        return 1
    scorer = getattr(objective, "scorer", None)
    if scorer is None or not hasattr(objective, "many"):
        return asked or 1
    from diswot.scoring.group import choose_group, grouped_proxies

    proxies = getattr(objective, "proxies", ["diswot"])
    size = choose_group(scorer, proxies, asked)
    if size > 1 and scorer.space is not None:
        rng = random.Random("group-report")  # a private stream: the search's own is untouched
        sample = [scorer.space.sample(rng) for _ in range(2)]
        report = grouped_proxies(scorer, sample, proxies, size)
        print(f"diswot search: {report.text()}", file=sys.stderr)
    return size


def _make_pool(
    objective: Objective,
    factory: Any,
    backend: str,
    workers: int,
    address: str | None,
    gpus_per_task: float,
    device: str,
    group: int = 1,
) -> Any:
    """One local worker: the objective already built (and its teacher checked) runs in this
    process, ``group`` candidates per call; otherwise every worker builds its own from
    ``factory``."""
    from diswot.parallel import GroupPool, InlinePool, make_pool

    if backend == "local" and workers == 1:
        given = GivenObjective(objective)
        return InlinePool(given) if group == 1 else GroupPool(given, group)
    return make_pool(
        factory,
        backend=backend,
        workers=workers,
        address=address,
        gpus_per_task=gpus_per_task,
        device=device,
    )


__all__ = ["run_search"]
