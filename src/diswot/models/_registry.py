"""The model registry, in a module of its own so that model families can register themselves
without importing the package's ``__init__`` (which imports them: that would be a cycle)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from diswot._registry import Registry

ModelFactory = Callable[..., nn.Module]

#: name -> factory ``f(num_classes: int = 100, **kw) -> nn.Module``.
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name`` (case-insensitive)."""
    return MODELS.register(name)  # type: ignore[return-value]


__all__ = ["MODELS", "ModelFactory", "register_model"]
