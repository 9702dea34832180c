"""Evaluate many items on several processes or a Ray cluster, with the serial path's results.

Why this shape: a DisWOT evaluation is a deterministic function of ``(arch, seed)`` given the run's
settings (the probe batch, the teacher init and the student init all derive from the seed, and the
student's weights are drawn from a seeded CPU generator), so evaluations can run anywhere, in any
order, and the scores are the same numbers as the serial path's. What is *not* free to move is the
shared state: each worker builds its own function once, from a picklable zero-argument ``factory``
the caller passes (``rank``'s builds a Scorer and every seed's teacher cache, ``search``'s its
objective), then evaluates a stream of items with it. Rebuilding per candidate would cost a teacher
forward per student, which for ``resnet110`` is more than the student itself.

This package knows nothing of scoring: callers hand it the factory, so it imports nothing above it.
The caller alone writes its run folder: workers return results and the parent persists each one as
it arrives, so an interrupted parallel run resumes, serially or in parallel, without rescoring.

* :mod:`.pools`: :class:`InlinePool`, :class:`ProcessPool`, :class:`RayPool` and :func:`make_pool`,
  results claimed by ticket in submission order (``search``).
* :mod:`.stream`: :func:`stream_chunks`, chunks of tasks with results in completion order (``rank``).
* ``local`` (``--workers N``): ``N`` spawned processes, one intra-op thread each (:mod:`.workers`).
* ``ray`` (``--backend ray``, :mod:`.raypool`): one actor per worker. Actors restart when their
  process dies and their in-flight calls are retried by Ray; if an actor is gone for good its item
  is re-submitted to a surviving actor. An item is never dropped: it is either evaluated or the run
  stops with a :class:`~diswot.errors.DiswotError`, and what was evaluated is already saved.
"""

from __future__ import annotations

from diswot.parallel.backends import BACKENDS, RAY_HINT, check_backend
from diswot.parallel.pools import GroupPool, InlinePool, ProcessPool, make_pool
from diswot.parallel.raypool import RayPool
from diswot.parallel.stream import default_chunk_size, stream_chunks
from diswot.parallel.workers import _gpu_counter, assign_gpu, check_spawnable, warn_shared_gpu

__all__ = [
    "BACKENDS",
    "RAY_HINT",
    "GroupPool",
    "InlinePool",
    "ProcessPool",
    "RayPool",
    "_gpu_counter",
    "assign_gpu",
    "check_backend",
    "check_spawnable",
    "default_chunk_size",
    "make_pool",
    "stream_chunks",
    "warn_shared_gpu",
]
