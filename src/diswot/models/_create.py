"""``create_model``: every network built from its name alone.

Kept out of the package ``__init__`` so that :mod:`diswot.models.cost` (imported by the
``__init__`` with every other family module) can build models by name without importing the
package back.
"""

from __future__ import annotations

import re

from torch import nn

from diswot.errors import DiswotError
from diswot.models._registry import MODELS
from diswot.models.cifar_resnet import CifarResNet
from diswot.models.nb201 import NB201Network, is_arch_string

__all__ = ["create_model", "is_model_name"]

_S1_CODE = re.compile(r"^[1-9]{3}$")
_DEPTH_TRIPLE = re.compile(r"^resnet_(\d+)-(\d+)-(\d+)$", re.IGNORECASE)


def _accepted_forms() -> str:
    return (
        f"accepted: a registered name ({', '.join(MODELS.names())}), a 3-digit S1 code like "
        "'713', 'resnet_7-1-3', or an NB201 arch string like "
        "'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|'"
    )


def is_model_name(name: str) -> bool:
    """Whether :func:`create_model` knows the form of ``name`` (without building it): a registered
    name, an NB201 arch string, an S1 code or a ``resnet_a-b-c`` depth triple. Architectures of the
    other search spaces are built by their space (:func:`diswot.spaces.get_space`)."""
    key = str(name).strip()
    return (
        key in MODELS
        or is_arch_string(key)
        or bool(_S1_CODE.match(key) or _DEPTH_TRIPLE.match(key))
    )


def create_model(name: str, num_classes: int = 100, **kw) -> nn.Module:
    """Build a model from its name.

    ``name`` is one of: a registered name (``resnet20``; case-insensitive); an S1 code of three
    digits 1-9 giving BasicBlocks per stage of a 16/32/64 CIFAR ResNet (``"713"``); the general
    form ``"resnet_7-1-3"`` for any depths; or an NB201 arch string. Extra ``kw`` go to the
    builder (``widths=`` for CIFAR ResNets, ``C=``/``N=`` for NB201).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise DiswotError(f"--num-classes must be an integer >= 2; got {num_classes!r}")
    if not isinstance(name, str) or not name.strip():
        raise DiswotError(f"model name must be a non-empty string; {_accepted_forms()}")
    key = name.strip()
    if key in MODELS:
        return MODELS.get(key)(num_classes=num_classes, **kw)
    if is_arch_string(key):
        return NB201Network(key, num_classes=num_classes, **kw)
    if _S1_CODE.match(key):
        return CifarResNet(tuple(int(c) for c in key), num_classes=num_classes, **kw)
    m = _DEPTH_TRIPLE.match(key)
    if m:
        depths = tuple(int(g) for g in m.groups())
        if min(depths) < 1:
            raise DiswotError(f"model {name!r}: every stage depth must be >= 1")
        return CifarResNet(depths, num_classes=num_classes, **kw)
    raise DiswotError(f"unknown model {name!r}; {_accepted_forms()}")
