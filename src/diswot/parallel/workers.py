"""What a local worker process needs before it can score: a start method that works, its own GPU
where there are several, and a warning when processes would share one GPU."""

from __future__ import annotations

import ast
import multiprocessing
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from diswot.errors import DiswotError


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


#: What every message about the main script's guard names as the fix.
_GUARD = '`if __name__ == "__main__":`'


def check_spawnable() -> None:
    """Spawned workers re-import the main script; one read from stdin cannot be (they would die at
    start-up, and on some Pythons the pool then hangs), and one whose top-level code starts the
    workers without a guard would run again in every worker: say so before starting any."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file):
        raise DiswotError(
            f"worker processes re-import the main script, and {main_file} is not a file; save the "
            f"script to a file (with an {_GUARD} guard) or use --workers 1"
        )
    line = _unguarded_main_line()
    if line is not None:
        raise DiswotError(
            f"{main_file} starts worker processes from its top-level code (line {line}) without "
            f"an {_GUARD} guard: every worker re-imports the script and would run that code "
            f"again; put the script's top-level code under {_GUARD}, or use workers=1"
        )


def _unguarded_main_line() -> int | None:
    """The line of the main script's top-level code that is running now (the call that led here)
    when it is not inside a top-level ``if`` testing ``__name__ == "__main__"``; ``None`` when it
    is, or when there is no main script to read (an interactive session, ``python -c``, a
    notebook)."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is None or not main_file:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return None  # a package's __main__ (python -m diswot): spawn never re-imports those
    frame = sys._getframe(1)
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(main_file).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        guarded = isinstance(node, ast.If) and any(_is_main_test(n) for n in ast.walk(node.test))
        if guarded and node.lineno <= line <= (node.end_lineno or node.lineno):
            return None
    return line


def _is_main_test(node: ast.AST) -> bool:
    """``__name__ == "__main__"`` (either way round): the test that keeps spawned workers out,
    which import the script as ``__mp_main__``."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return False
    if not isinstance(node.ops[0], ast.Eq):
        return False
    sides = [node.left, *node.comparators]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in sides
    )


def refuse_reimported_main(what: str) -> None:
    """Stop a spawned worker that is running ``what`` (``run_search``...) while it re-imports the
    main script: that script's top-level code lacks a guard, and this call would otherwise start
    the whole run again inside the worker (its own folder, its own workers) and end in a misleading
    "a worker process died". One line on stderr, and the worker exits; the parent then reports the
    dead worker. A no-op anywhere else (the main process, a worker already running)."""
    # The flag multiprocessing itself checks (``_check_not_importing_main``): set while a spawned
    # child unpickles its start-up data and imports the main script, before its parent_process().
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    frame = sys._getframe(1)  # the script being imported is the frame run as __mp_main__
    while frame is not None and frame.f_globals.get("__name__") != "__mp_main__":
        frame = frame.f_back  # type: ignore[assignment]
    main_file = (frame.f_globals.get("__file__") if frame else None) or "the main script"
    raise SystemExit(
        f"diswot: error: {what} was called in a worker process while it re-imported {main_file}: "
        f"the script's top-level code is not under an {_GUARD} guard, so every worker runs it "
        f"again; put it under {_GUARD}"
    )


def check_picklable(factory: Any) -> None:
    """Worker processes receive the factory pickled: refuse one that cannot be, in one line, before
    any process starts (a lambda or a local class would otherwise fail inside every worker)."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise DiswotError(
            f"the objective or teacher cannot be sent to worker processes "
            f"({type(exc).__name__}); use a module-level function or class, or --workers 1"
        ) from None


def warn_shared_gpu(device: str, workers: int) -> None:
    """More local workers than GPUs: say once that processes sharing a GPU measured slower."""
    if workers < 2 or not str(device).startswith("cuda"):
        return
    gpus = 1 if str(device) != "cuda" else max(torch.cuda.device_count(), 1)
    if workers > gpus:
        print(
            f"diswot: note: {workers} worker processes share {gpus} GPU(s); on an H200, processes "
            "sharing one GPU measured slower than one process (kernels of different processes "
            "are time-sliced, docs/scale.md); prefer one worker per GPU, CUDA MPS, or --backend "
            "ray with --gpus-per-task 1",
            file=sys.stderr,
        )
