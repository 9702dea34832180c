"""Score many (architecture, seed) pairs on several processes or a Ray cluster.

Why this shape: a DisWOT evaluation is a deterministic function of ``(arch, seed)`` given the run's
settings (the probe batch, the teacher init and the student init all derive from the seed, and the
student's weights are drawn from a seeded CPU generator), so evaluations can run anywhere, in any
order, and the scores are the same numbers as the serial path's. What is *not* free to move is the
shared state: each worker builds its own :class:`~diswot.probe.Scorer` once and computes the
teacher cache of every seed once, then scores a stream of candidates against it. Rebuilding per
candidate would cost a teacher forward per student, which for ``resnet110`` is more than the
student itself.

The parent alone writes the run's ``scores.jsonl``: workers return ``(arch, seed, values,
seconds)`` records and :func:`diswot.rank.run_rank` appends each one as it arrives, so the cache
format, resume and ``--merge`` are the serial path's, whichever backend produced the lines. An
interrupted parallel run therefore resumes, serially or in parallel, without rescoring.

Two backends share :func:`score_stream`, built on the same pools as ``search``'s asynchronous
evolution (:class:`ProcessPool`, :class:`RayPool`, at the end of this module):

* ``local`` (``--workers N``): ``N`` spawned processes (``spawn``, not ``fork``: a forked child of a
  process whose OpenMP pool is already running can deadlock), one intra-op thread each, fed chunks
  of candidates with a bounded number in flight (memory stays constant for any sample size).
* ``ray`` (``--backend ray``): one actor per worker, each holding a Scorer. Actors restart when
  their process dies and their in-flight calls are retried by Ray; if an actor is gone for good its
  chunk is re-submitted to a surviving actor. A chunk is never dropped: it is either scored or the
  run stops with a :class:`~diswot.errors.DiswotError`, and what was scored is already cached.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from diswot.errors import DiswotError

#: One unit of work: an architecture, a seed and the proxies still missing for it.
Task = tuple[str, int, list[str]]
#: One result, in the shape ``run_rank`` writes: arch, seed, proxy values, exclusive seconds.
Record = tuple[str, int, dict[str, float], dict[str, float]]

BACKENDS = ("local", "ray")
RAY_HINT = "pip install 'diswot[ray]'"


@dataclass
class ScorerRecipe:
    """What a worker needs to rebuild the parent's Scorer: the run plan (without its sample and
    ground truth, which workers never read) and the data folder. Pickled once per worker."""

    plan: Any  # diswot.rank._Plan; typed loosely to keep this module import-light
    data_root: str | None
    warm_teacher: bool  # compute every seed's teacher cache at start-up (fail fast, once)

    def build(self):  # -> Scorer
        from diswot.rank import _make_scorer

        scorer = _make_scorer(self.plan, self.data_root)
        if self.warm_teacher:
            for s in self.plan.seeds:
                scorer.teacher(s)
        return scorer


def score_chunk(scorer, chunk: Sequence[Task]) -> list[Record]:
    """Evaluate a chunk on one worker's Scorer, exactly as the serial path does."""
    from diswot.rank import evaluate_timed

    out: list[Record] = []
    scorer.expect((arch, seed) for arch, seed, _ in chunk)
    for arch, seed, need in chunk:
        values, secs = evaluate_timed(scorer, arch, need, seed)
        out.append((arch, seed, values, secs))
    return out


def default_chunk_size(n_tasks: int, workers: int) -> int:
    """Small enough that every worker gets several chunks (load balance, little lost on a kill),
    large enough that the per-chunk messaging is negligible next to scoring (~0.1-1 s/candidate)."""
    return max(1, min(8, math.ceil(n_tasks / (4 * max(workers, 1)))))


def _chunks(tasks: Sequence[Task], size: int) -> list[list[Task]]:
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def check_backend(backend: str, address: str | None, gpus_per_task: float) -> None:
    """Refuse a backend choice before any work: an unknown backend, a negative GPU share, or
    Ray-only options given to the local backend (which would silently ignore them)."""
    if backend not in BACKENDS:
        raise DiswotError(f"unknown backend '{backend}'; use {' or '.join(BACKENDS)}")
    if not float(gpus_per_task) >= 0.0:  # NaN too
        raise DiswotError(f"--gpus-per-task must be 0 or more (e.g. 0.25, 1), got {gpus_per_task}")
    if backend != "ray":
        given = [f for f, v in (("--address", address), ("--gpus-per-task", gpus_per_task)) if v]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise DiswotError(f"{' and '.join(given)} {verb} to Ray only; add --backend ray")


def score_stream(
    recipe: ScorerRecipe,
    tasks: Sequence[Task],
    *,
    backend: str = "local",
    workers: int = 2,
    chunk_size: int | None = None,
    address: str | None = None,
    gpus_per_task: float = 0.0,
) -> Iterator[Record]:
    """Yield a record per task, in completion order, from ``workers`` processes or Ray actors."""
    if backend not in BACKENDS:
        raise DiswotError(f"unknown backend '{backend}'; use {' or '.join(BACKENDS)}")
    if not tasks:
        return iter(())
    if backend == "local":
        if workers < 1:
            raise DiswotError(f"--workers must be at least 1, got {workers}")
        size = chunk_size or default_chunk_size(len(tasks), workers)
        return _local_stream(recipe, _chunks(tasks, size), workers)
    return _ray_stream(recipe, tasks, workers, chunk_size, address, gpus_per_task)


# ------------------------------------------------------------------------------------ local


def assign_gpu(counter: Any) -> int | None:
    """Give this worker process its own GPU when the machine has several: worker ``i`` (in start
    order, from a shared counter) uses GPU ``i mod n``. Returns the GPU index, or None when
    nothing was set (no counter, or fewer than two GPUs)."""
    if counter is None:
        return None
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    n = torch.cuda.device_count()
    if n < 2:
        return None
    torch.cuda.set_device(index % n)
    return index % n


def _gpu_counter(ctx: Any, device: str) -> Any:
    """A process-shared counter for :func:`assign_gpu`, only for an unindexed ``cuda`` device."""
    return ctx.Value("i", 0) if str(device) == "cuda" else None


def check_spawnable() -> None:
    """Spawned workers re-import the main script; one read from stdin cannot be (they would die at
    start-up, and on some Pythons the pool then hangs): say so before starting any."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file):
        raise DiswotError(
            f"worker processes re-import the main script, and {main_file} is not a file; save the "
            "script to a file (with an `if __name__ == '__main__':` guard) or use --workers 1"
        )


def warn_shared_gpu(device: str, workers: int) -> None:
    """More local workers than GPUs: say once that processes sharing a GPU measured slower."""
    if workers < 2 or not str(device).startswith("cuda"):
        return
    gpus = 1 if str(device) != "cuda" else max(torch.cuda.device_count(), 1)
    if workers > gpus:
        import sys

        print(
            f"diswot: note: {workers} worker processes share {gpus} GPU(s); on an H200, processes "
            "sharing one GPU measured slower than one process (kernels of different processes "
            "are time-sliced, docs/scale.md); prefer one worker per GPU, CUDA MPS, or --backend "
            "ray with --gpus-per-task 1",
            file=sys.stderr,
        )


@dataclass
class _ChunkScorer:
    """Pool factory for ``rank``: each worker builds its Scorer (and teacher caches) once, then
    scores chunks of tasks with it."""

    recipe: ScorerRecipe

    def __call__(self) -> Callable[[list[Task]], list[Record]]:
        return partial(score_chunk, self.recipe.build())


def _local_stream(recipe: ScorerRecipe, chunks: list[list[Task]], workers: int) -> Iterator[Record]:
    pool = ProcessPool(
        _ChunkScorer(recipe), min(workers, len(chunks)), recipe.plan.settings["device"]
    )
    pending = deque(chunks)
    in_flight: set[Future] = set()
    try:
        while pending or in_flight:
            # Two chunks per worker in flight: no worker idles while the parent writes results.
            while pending and len(in_flight) < 2 * workers:
                in_flight.add(pool.submit(pending.popleft()))
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                yield from pool.result(fut)
    finally:
        for fut in in_flight:
            fut.cancel()
        pool.close()


# ------------------------------------------------------------------------------------ ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DiswotError(f"--backend ray needs Ray; {RAY_HINT}") from None
    return ray


def _ray_connect(ray, address: str | None, workers: int) -> bool:
    """Join the cluster at ``address`` (or start a local runtime); True when we started it."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        _check_reachable(address)
        kwargs["address"] = address
    elif workers > 0:
        kwargs["num_cpus"] = workers
    try:
        ray.init(**kwargs)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"at {address}" if address else "locally"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiswotError(
            f"cannot start or reach a Ray cluster {where} ({msg}); check --address "
            f"(host:port of 'ray start --head', or 'auto'), and that Ray is installed: {RAY_HINT}"
        ) from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a ``host:port`` nobody listens on; ``ray.init`` would retry for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return  # 'auto' and other forms are Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DiswotError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
            f"'ray start --head' or fix --address (Ray itself: {RAY_HINT})"
        ) from None


def _ray_workers(ray, workers: int | None, gpus_per_task: float) -> int:
    if workers and workers > 0:
        return workers
    res = ray.cluster_resources()
    if gpus_per_task > 0:
        return max(1, int(res.get("GPU", 0) / gpus_per_task))
    return max(1, int(res.get("CPU", 1)))


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def _ray_stream(
    recipe: ScorerRecipe,
    tasks: Sequence[Task],
    workers: int | None,
    chunk_size: int | None,
    address: str | None,
    gpus_per_task: float,
) -> Iterator[Record]:
    pool = RayPool(
        _ChunkScorer(recipe),
        workers,
        address=address,
        gpus_per_task=gpus_per_task,
        device=recipe.plan.settings["device"],
        name="diswot-scorer",
    )
    try:
        size = chunk_size or default_chunk_size(len(tasks), pool.workers)
        pending = deque(_chunks(tasks, size))
        in_flight: list[list] = []
        while pending or in_flight:
            # Two chunks per live actor in flight, as in the local pool.
            while pending and len(in_flight) < 2 * len(pool.alive):
                in_flight.append(pool.submit(pending.popleft()))
            ready, _ = pool.ray.wait([t[0] for t in in_flight], num_returns=1)
            ticket = next(t for t in in_flight if t[0] == ready[0])
            in_flight.remove(ticket)
            yield from pool.result(ticket)  # a chunk whose actor died is re-sent from here
    finally:
        pool.close()


# ------------------------------------------------------------------------------------ pools
#
# ``rank`` streams independent chunks and takes results in completion order. ``search`` needs
# something else: candidates whose results feed the next proposals, so the results must be
# claimed in *submission* order to keep a run reproducible (the same seed and the same number in
# flight give the same candidates, whichever backend or machine ran them, and a killed run replays
# exactly). A pool evaluates one pure function ``fn(item)``, built in every worker once by a
# picklable zero-argument ``factory``; ``submit`` returns a ticket, ``result(ticket)`` blocks.


class InlinePool:
    """No workers: ``fn(item)`` runs in this process when its result is claimed. With one
    candidate in flight this is exactly the serial loop."""

    def __init__(self, factory: Any) -> None:
        self.fn = factory()

    def submit(self, item: Any) -> Any:
        return item

    def result(self, ticket: Any) -> Any:
        return self.fn(ticket)

    @property
    def draws_ahead(self) -> bool:
        """Whether :meth:`hint` pays: the function, in this process, can prepare an item early."""
        return bool(getattr(self.fn, "draws_ahead", False))

    def hint(self, item: Any) -> None:
        """``item`` is probably submitted next (only called when :attr:`draws_ahead`)."""
        self.fn.hint(item)

    def close(self) -> None:
        pass


_POOL_FN = None


def _pool_init(factory: Any, counter: Any = None) -> None:
    global _POOL_FN
    torch.set_num_threads(1)  # N workers with default threads would oversubscribe N-fold
    assign_gpu(counter)
    _POOL_FN = factory()


def _pool_call(item: Any) -> Any:
    assert _POOL_FN is not None, "worker not initialised"
    return _POOL_FN(item)


class ProcessPool:
    """``workers`` spawned processes, each holding its own ``factory()`` (its own Scorer and
    teacher cache, its own CUDA context on a GPU): students are built in parallel, which is what
    bounds throughput on a GPU, not the GPU."""

    def __init__(self, factory: Any, workers: int, device: str = "cpu") -> None:
        if workers < 1:
            raise DiswotError(f"--workers must be at least 1, got {workers}")
        check_spawnable()
        warn_shared_gpu(device, workers)
        try:
            import pickle

            pickle.dumps(factory)
        except Exception as exc:
            raise DiswotError(
                f"the objective or teacher cannot be sent to worker processes "
                f"({type(exc).__name__}); use a module-level function or class, or --workers 1"
            ) from None
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_pool_init,
            initargs=(factory, _gpu_counter(ctx, device)),
        )

    def submit(self, item: Any) -> Future:
        return self.pool.submit(_pool_call, item)

    def result(self, ticket: Future) -> Any:
        try:
            return ticket.result()
        except BrokenProcessPool:
            raise DiswotError(
                "a worker process died (out of memory, killed, or failed at start-up: see its "
                "traceback above); what was scored is saved, rerun the same command to resume"
            ) from None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayEvaluator:
    """A Ray actor holding one ``factory()`` (its Scorer and teacher caches built once)."""

    def __init__(self, factory: Any, cpu_threads: bool) -> None:
        if cpu_threads:
            torch.set_num_threads(1)
        self.fn = factory()

    def call(self, item: Any) -> Any:
        return self.fn(item)


class RayPool:
    """One actor per worker (named ``<name>-<run id>-<i>``). A dead actor process is restarted by Ray and its call retried; an
    actor Ray gave up on is dropped and its item sent to a survivor (at most ``max_resubmits``
    times), so an item is scored or the run stops with a one-line error, never silently lost."""

    def __init__(
        self,
        factory: Any,
        workers: int | None,
        *,
        address: str | None = None,
        gpus_per_task: float = 0.0,
        device: str = "cpu",
        max_resubmits: int = 3,
        name: str = "diswot-eval",
    ) -> None:
        self.ray = _import_ray()
        if str(device).startswith("cuda") and gpus_per_task <= 0:
            gpus_per_task = 1.0  # an actor without a GPU reservation may not see any GPU
        self.started = _ray_connect(self.ray, address, workers or 0)
        try:
            n = _ray_workers(self.ray, workers, gpus_per_task)
            cls = self.ray.remote(_RayEvaluator)
            # A dead actor process is restarted (it rebuilds its factory) and the calls it had in
            # flight are retried by Ray; evaluations are pure, so a retry is always safe.
            opts = dict(num_cpus=1, num_gpus=gpus_per_task, max_restarts=3, max_task_retries=3)
            run_id = uuid.uuid4().hex[:8]
            cpu_threads = not str(device).startswith("cuda")
            self.actors = [
                cls.options(name=f"{name}-{run_id}-{i}", **opts).remote(factory, cpu_threads)
                for i in range(n)
            ]
        except BaseException:
            self.close()
            raise
        self.workers = n
        self.alive = list(range(n))
        self.load = dict.fromkeys(self.alive, 0)
        self.max_resubmits = max_resubmits

    def submit(self, item: Any, tries: int = 0) -> list:
        if not self.alive:
            raise DiswotError(
                "every Ray worker died; what was scored is saved, rerun the same command to resume"
            )
        i = min(self.alive, key=lambda k: self.load[k])
        self.load[i] += 1
        return [self.actors[i].call.remote(item), i, item, tries]

    def result(self, ticket: list) -> Any:
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        while True:
            ref, i, item, tries = ticket
            try:
                out = self.ray.get(ref)
            except RayTaskError as exc:  # the evaluation itself failed: a user error
                raise DiswotError(_cause(exc)) from None
            except (RayActorError, GetTimeoutError) as exc:
                if i in self.alive:
                    self.alive.remove(i)
                if tries >= self.max_resubmits or not self.alive:
                    raise DiswotError(
                        f"Ray workers died and a candidate failed {tries + 1} times "
                        f"({_cause(exc)}); what was scored is saved, rerun the same command to resume"
                    ) from None
                ticket[:] = self.submit(item, tries + 1)
                continue
            self.load[i] -= 1
            return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def make_pool(
    factory: Any,
    *,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    gpus_per_task: float = 0.0,
    device: str = "cpu",
) -> InlinePool | ProcessPool | RayPool:
    """The pool for a backend: ``local`` with one worker runs inline (no process is started)."""
    if backend not in BACKENDS:
        raise DiswotError(f"unknown backend '{backend}'; use {' or '.join(BACKENDS)}")
    if backend == "ray":
        return RayPool(
            factory, workers or None, address=address, gpus_per_task=gpus_per_task, device=device
        )
    if workers < 1:
        raise DiswotError(f"--workers must be at least 1, got {workers}")
    return InlinePool(factory) if workers == 1 else ProcessPool(factory, workers, device)
