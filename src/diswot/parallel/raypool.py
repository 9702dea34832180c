"""A pool of Ray actors: the cluster connection, fast failure on a bad address, and actors that may
die without losing an item."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import torch

from diswot.errors import DiswotError
from diswot.parallel.backends import RAY_HINT


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


class _RayEvaluator:
    """A Ray actor holding one ``factory()`` (its Scorer and teacher caches built once)."""

    def __init__(self, factory: Any, cpu_threads: bool) -> None:
        if cpu_threads:
            torch.set_num_threads(1)
        self.fn = factory()

    def call(self, item: Any) -> Any:
        return self.fn(item)


class RayPool:
    """One actor per worker (named ``<name>-<run id>-<i>``). A dead actor process is restarted by
    Ray and its call retried; an actor Ray gave up on is dropped and its item sent to a survivor (at
    most ``max_resubmits`` times), so an item is scored or the run stops with a one-line error,
    never silently lost."""

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
