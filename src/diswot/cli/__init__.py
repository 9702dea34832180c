"""The ``diswot`` command line.

Each subcommand lives in its own module of this package and exposes two functions::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers "diswot <name>"
    def run(args: argparse.Namespace) -> int                 # does the work, returns the exit code

so adding a command is one new file plus one name in ``COMMANDS``. User mistakes raise
:class:`~diswot.errors.DiswotError`; ``main`` prints them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Sequence

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
        note = _choose_threads(args)
        return int(args._run(args) or 0)
    except DiswotError as exc:
        print(f"diswot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diswot: interrupted; results written so far are kept{_resume_hint(args)}",
              file=sys.stderr)  # fmt: skip
        return 130
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
        if not _out_of_memory(exc):
            raise
        print(
            "diswot: error: out of memory; lower --batch-size (or --image-size, --workers)",
            file=sys.stderr,
        )
        return 2
    finally:
        if note is not None:
            note.cancel()


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


def _out_of_memory(exc: BaseException) -> bool:
    """CPU or GPU allocation failure (torch raises both as RuntimeError subclasses or plain)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "CUDA out of memory" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
