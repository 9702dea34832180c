"""Pools that evaluate one pure function ``fn(item)`` on workers, results claimed by ticket.

Why tickets: ``search`` proposes candidates from the results of earlier ones, so it must claim
results in *submission* order to stay reproducible (the same seed and the same number in flight give
the same candidates, whichever backend or machine ran them, and a killed run replays exactly);
``rank`` streams independent chunks and claims them in completion order (:mod:`.stream`). Either
way a pool only knows ``fn``: every worker builds it once from a picklable zero-argument
``factory``, so the caller decides what a worker holds (a Scorer and its teacher caches, a user's
objective) and this package imports nothing of it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from diswot.errors import DiswotError
from diswot.parallel.backends import refuse_no_workers, refuse_unknown
from diswot.parallel.raypool import RayPool
from diswot.parallel.workers import (
    _gpu_counter,
    assign_gpu,
    check_picklable,
    check_spawnable,
    warn_shared_gpu,
)


class InlinePool:
    """No workers: ``fn(item)`` runs in this process when its result is claimed. With one
    candidate in flight this is exactly the serial loop."""

    def __init__(self, factory: Any) -> None:
        self.fn = factory()

    def submit(self, item: Any) -> Any:
        return item

    def result(self, ticket: Any) -> Any:
        return self.fn(ticket)

    def close(self) -> None:
        pass


class GroupPool:
    """No workers, ``group`` items per call: the first claim of a ticket not yet evaluated runs
    ``fn.many`` on up to ``group`` items submitted and not yet evaluated, in submission order
    (``fn(item)`` one by one when the function has no ``many``). With ``group=1`` this is
    :class:`InlinePool`. Items must be claimed in submission order, as ``search`` claims them."""

    def __init__(self, factory: Any, group: int) -> None:
        self.fn = factory()
        self.group = max(1, int(group))
        self._pending: list[tuple[int, Any]] = []
        self._done: dict[int, Any] = {}
        self._next = 0

    def submit(self, item: Any) -> int:
        ticket = self._next
        self._next += 1
        self._pending.append((ticket, item))
        return ticket

    def result(self, ticket: int) -> Any:
        if ticket not in self._done:
            batch, self._pending = self._pending[: self.group], self._pending[self.group :]
            if not batch or batch[0][0] != ticket:
                raise RuntimeError("GroupPool results must be claimed in submission order")
            items = [item for _, item in batch]
            many = getattr(self.fn, "many", None)
            outs = many(items) if many is not None and len(items) > 1 else [self.fn(i) for i in items]
            self._done.update(zip((t for t, _ in batch), outs))
        return self._done.pop(ticket)

    def close(self) -> None:
        self._pending.clear()
        self._done.clear()


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
    bounds throughput on a GPU, not the GPU.

    ``spawn``, not ``fork``: a forked child of a process whose OpenMP pool is already running can
    deadlock.
    """

    def __init__(self, factory: Any, workers: int, device: str = "cpu") -> None:
        refuse_no_workers(workers)
        check_spawnable()
        warn_shared_gpu(device, workers)
        check_picklable(factory)
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
    refuse_unknown(backend)
    if backend == "ray":
        return RayPool(
            factory, workers or None, address=address, gpus_per_task=gpus_per_task, device=device
        )
    refuse_no_workers(workers)
    return InlinePool(factory) if workers == 1 else ProcessPool(factory, workers, device)
