"""diswot: training-free student architecture search for knowledge distillation."""

from __future__ import annotations

__version__ = "0.1.0"

from diswot.errors import DiswotError  # noqa: E402

__all__ = ["DiswotError", "__version__"]
