"""Stream many independent tasks through a pool, results in completion order (what ``rank`` needs).

Tasks are cut into chunks, and every worker's function (built once by the caller's picklable
``factory``) maps a chunk to a list of results. Chunks keep the messaging small next to the work
and bound what a killed worker loses; a bounded number in flight keeps memory constant for any
number of tasks. Results are yielded as chunks finish, so the caller can persist each one at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from diswot.parallel.backends import refuse_no_workers, refuse_unknown
from diswot.parallel.pools import ProcessPool
from diswot.parallel.raypool import RayPool


def default_chunk_size(n_tasks: int, workers: int) -> int:
    """Small enough that every worker gets several chunks (load balance, little lost on a kill),
    large enough that the per-chunk messaging is negligible next to scoring a candidate."""
    return max(1, min(8, math.ceil(n_tasks / (4 * max(workers, 1)))))


def _chunks(tasks: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def stream_chunks(
    factory: Any,
    tasks: Sequence[Any],
    *,
    backend: str = "local",
    workers: int | None = 2,
    chunk_size: int | None = None,
    address: str | None = None,
    gpus_per_task: float = 0.0,
    device: str = "cpu",
    name: str = "diswot-eval",
) -> Iterator[Any]:
    """Yield the results of ``fn(chunk)`` over chunks of ``tasks``, chunk by chunk as they finish.

    ``factory()`` builds ``fn`` once on every worker: ``workers`` spawned processes (``local``) or
    Ray actors named ``<name>-...`` (``ray``; ``workers`` 0 or None: the cluster's CPUs, or its GPUs
    over ``gpus_per_task``). ``fn`` returns an iterable per chunk, whose items are yielded.
    """
    refuse_unknown(backend)
    if not tasks:
        return iter(())
    if backend == "local":
        refuse_no_workers(workers or 0)
        size = chunk_size or default_chunk_size(len(tasks), workers or 1)
        return _local_stream(factory, _chunks(tasks, size), workers or 1, device)
    return _ray_stream(factory, tasks, workers, chunk_size, address, gpus_per_task, device, name)


def _local_stream(
    factory: Any, chunks: list[list[Any]], workers: int, device: str
) -> Iterator[Any]:
    pool = ProcessPool(factory, min(workers, len(chunks)), device)
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


def _ray_stream(
    factory: Any,
    tasks: Sequence[Any],
    workers: int | None,
    chunk_size: int | None,
    address: str | None,
    gpus_per_task: float,
    device: str,
    name: str,
) -> Iterator[Any]:
    pool = RayPool(
        factory, workers, address=address, gpus_per_task=gpus_per_task, device=device, name=name
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
