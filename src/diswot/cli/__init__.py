"""The ``diswot`` command line.

Each subcommand lives in its own module of this package and exposes two functions::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers "diswot <name>"
    def run(args: argparse.Namespace) -> int                 # does the work, returns the exit code

so adding a command is one new file plus one name in ``COMMANDS``. User mistakes raise
:class:`~diswot.errors.DiswotError`; ``main`` prints them as one line and exits with status 2.

Ctrl-C (SIGINT) and SIGTERM (``kill``, a scheduler's preemption or time limit, ``docker stop``) end a
command the same way: what was written so far is kept (every run folder is written append-only or
atomically) and one line says how to continue. The exit status stays the signal's conventional one,
130 for SIGINT and 143 for SIGTERM (128 + the signal number), so a scheduler or shell script still
sees which signal ended the command; a second SIGTERM during the clean-up ends it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from diswot.errors import DiswotError

#: Subcommand modules, in the order ``diswot --help`` lists them.
COMMANDS: tuple[str, ...] = ("score", "rank", "search", "train", "distill", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    from diswot import __version__

    parser = argparse.ArgumentParser(
        prog="diswot",
        description="Pick the best student for a teacher without training, then distill it.",
    )
    parser.add_argument("--version", action="version", version=f"diswot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"diswot.cli.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 0
    note = None
    try:
        with _sigterm_as_interrupt():
            note = _choose_threads(args)
            return int(args._run(args) or 0)
    except DiswotError as exc:
        print(f"diswot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"diswot: {what}; results written so far are kept{_resume_hint(args)}",
              file=sys.stderr)  # fmt: skip
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        # The reader of stdout went away (``diswot ... | head``): nothing left to say. Silence the
        # interpreter's own flush at exit too (the recipe of Python's signal docs).
        with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the machine refused a file operation: say which and why, in one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"diswot: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        from diswot.scoring.memory import out_of_memory

        if not out_of_memory(exc):
            raise
        print(
            "diswot: error: out of memory; lower --batch-size (or --image-size, --workers)",
            file=sys.stderr,
        )
        return 2
    finally:
        if note is not None:
            note.cancel()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by :func:`_sigterm_as_interrupt`'s handler.

    A :class:`KeyboardInterrupt`, so every ``finally`` and ``except KeyboardInterrupt`` that tidies
    up after Ctrl-C (pools shut down, journals closed, progress bars ended) does the same for it.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    # A second SIGTERM while the first is being handled ends the process at once (the default).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` instead of killing the process
    without a word; the previous handler comes back afterwards (``main`` may run inside a larger
    program or a test). Python runs signal handlers in the main thread only: elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _choose_threads(args: argparse.Namespace) -> threading.Timer | None:
    """Resolve ``--threads`` once for the command: given, or one per CPU other work leaves free.

    When the automatic choice is below torch's default (a busy machine), a run that goes on for
    more than a second says so on stderr, with how to override it; a command that ends sooner (a
    one-line error, a quick score) stays quiet. Returns the pending note, to cancel at the end.
    """
    if not hasattr(args, "threads"):
        return None
    from diswot.runtime import choose_threads

    workers = getattr(args, "workers", None) or 1
    choice = choose_threads(args.threads, workers=workers if isinstance(workers, int) else 1)
    args.threads = choice
    if choice.given or choice.threads >= choice.usable:
        return None
    note = threading.Timer(
        _NOTE_AFTER_S, lambda: print(f"diswot: {choice.text()}", file=sys.stderr)
    )
    note.daemon = True
    note.start()
    return note


#: How long a command runs before the automatic thread choice is reported.
_NOTE_AFTER_S = 1.0


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted command that can resume."""
    if args.command == "search":
        folder = getattr(args, "folder", None)  # set by the search command once it knows it
        return f"; continue with: diswot search --resume {folder}" if folder else ""
    if args.command == "rank":  # its run folder (--out or the default) is its result cache
        return "; rerun the same command to continue (scored cells are not rescored)"
    if args.command in ("train", "distill") and args.out:
        return "; continue with the same command plus --resume"
    return ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
