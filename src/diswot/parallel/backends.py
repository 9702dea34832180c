"""The backend names and the checks every caller makes before it starts any work."""

from __future__ import annotations

from diswot.errors import DiswotError

BACKENDS = ("local", "ray")
RAY_HINT = "pip install 'diswot[ray]'"


def check_backend(backend: str, address: str | None, gpus_per_task: float) -> None:
    """Refuse a backend choice before any work: an unknown backend, a negative GPU share, or
    Ray-only options given to the local backend (which would silently ignore them)."""
    refuse_unknown(backend)
    if not float(gpus_per_task) >= 0.0:  # NaN too
        raise DiswotError(f"--gpus-per-task must be 0 or more (e.g. 0.25, 1), got {gpus_per_task}")
    if backend != "ray":
        given = [f for f, v in (("--address", address), ("--gpus-per-task", gpus_per_task)) if v]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise DiswotError(f"{' and '.join(given)} {verb} to Ray only; add --backend ray")


def refuse_unknown(backend: str) -> None:
    """A one-line error for a backend that is not in :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise DiswotError(f"unknown backend '{backend}'; use {' or '.join(BACKENDS)}")


def refuse_no_workers(workers: int) -> None:
    """A one-line error for a local worker count below one."""
    if workers < 1:
        raise DiswotError(f"--workers must be at least 1, got {workers}")
