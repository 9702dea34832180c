"""The ``diswot`` command line.

Each subcommand lives in its own module of this package and exposes two functions::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers "diswot <name>"
    def run(args: argparse.Namespace) -> int                 # does the work, returns the exit code

so adding a command is one new file plus one name in ``COMMANDS``. User mistakes raise
:class:`~diswot.errors.DiswotError`; ``main`` prints them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
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
    try:
        return int(args._run(args) or 0)
    except DiswotError as exc:
        print(f"diswot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diswot: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
