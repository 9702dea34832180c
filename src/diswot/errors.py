"""User-facing errors.

Every mistake a user can make (bad architecture string, missing data folder, class-count mismatch ...)
raises :class:`DiswotError` with a one-line message that says what is wrong and what is accepted. The
CLI prints such errors as ``diswot: error: <message>`` and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class DiswotError(ValueError):
    """A user-facing error whose message is a single line naming the fix."""


def flag(name: str) -> str:
    """The command-line option of a setting (``batch_size`` -> ``--batch-size``): messages name
    the flag, which Python callers recognise as their keyword too."""
    return "--" + name.replace("_", "-")
