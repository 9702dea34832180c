"""What a ``--student`` / ``--model`` value names, and the network it builds.

A student may be anything :func:`diswot.models.create_model` builds (model names, S1 codes, NB201
strings), an architecture of a search space (resnet-imagenet, pit, autoformer: built by that space at
the resolution it was searched at), or a search's ``result.json``, whose winner is used with the
search's space and settings. Training, distillation and ``diswot score`` all read students here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from diswot.distill.datasets import DataConfig
from diswot.errors import DiswotError
from diswot.models import is_model_name

__all__ = [
    "StudentSpec",
    "arch_space",
    "build_model",
    "check_resolution",
    "resolve_arch",
    "resolve_student",
]


@dataclass(frozen=True)
class StudentSpec:
    """What a ``--student`` / ``--model`` value names: an architecture and where it comes from.

    ``space`` is the search space the architecture belongs to when that is known (the search's, for
    a ``result.json``; found by validation for a bare resnet-imagenet, pit or autoformer code), and
    ``builder_space`` the one whose builder must make the network: ``None`` when
    :func:`diswot.models.create_model` builds it (registered names, S1 codes, NB201 strings).
    ``source``, ``settings`` and ``winner`` are set for a search's ``result.json``: its path, the
    search's recorded settings (``None`` when the file and its folder hold none) and its winner.
    """

    arch: str
    space: str | None = None
    source: Path | None = None
    settings: dict[str, Any] | None = None
    winner: dict[str, Any] | None = None

    @property
    def builder_space(self) -> str | None:
        return None if is_model_name(self.arch) else self.space

    @property
    def image_size(self) -> int | None:
        """Side of the images the network is built (and was searched) for; ``None`` when it takes
        any size (the networks ``create_model`` builds, whose resolution the data decides)."""
        space = self.builder_space
        if space is None:
            return None
        if self.settings and self.settings.get("image_size"):
            return int(self.settings["image_size"])
        from diswot.spaces import get_space

        return get_space(space).dataset(None).image_size


def arch_space(arch: str, space: str | None = None) -> str | None:
    """The search space whose builder makes ``arch``, or ``None`` when ``create_model`` does.

    ``space`` names the space to check it against (a search's); otherwise every registered space
    is tried and the first that accepts ``arch`` is returned (``None`` when none does).
    """
    if is_model_name(arch):
        return None
    from diswot.spaces import get_space, list_spaces

    if space is not None:
        sp = get_space(space)
        sp.validate(arch)  # a foreign arch: the space's own one-line error
        return sp.name
    for name in list_spaces():
        try:
            get_space(name).validate(arch)
        except Exception:  # noqa: BLE001 - any failure means "not this space's"
            continue
        return name
    return None


def _read_search_settings(path: Path, doc: dict[str, Any]) -> dict[str, Any] | None:
    """A search's settings: ``result.json``'s own, else its folder's ``settings.json``, else None."""
    settings = doc.get("settings")
    if isinstance(settings, dict):
        return settings
    sibling = path.parent / "settings.json"
    if sibling.is_file():
        try:
            settings = json.loads(sibling.read_text())["settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DiswotError(
                f"{sibling} is unreadable; it should hold the search's settings"
            ) from exc
        if isinstance(settings, dict):
            return settings
    return None


def resolve_student(spec: str) -> StudentSpec:
    """The :class:`StudentSpec` of a ``--student`` / ``--model`` value.

    Accepts anything :func:`diswot.models.create_model` accepts, an architecture of a search space
    (resnet-imagenet ``stem7x64mp|B3x64x2s1|...``, pit ``b32_r4_d2-6-4_h2-4-8``, autoformer
    ``e192_r4-..._h3-...``), or the path of a search's ``result.json``, whose ``winner.arch`` is
    used, with the search's space and settings.
    """
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if not (spec.endswith(".json") or path.is_file()):
        return StudentSpec(spec, arch_space(spec))
    if not path.is_file():
        raise DiswotError(f"search result {path} does not exist; pass a result.json of a search")
    try:
        doc = json.loads(path.read_text())
        winner = doc["winner"]
        arch = winner["arch"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DiswotError(
            f'{path} is not a search result.json (needs {{"winner": {{"arch": ...}}}})'
        ) from exc
    if not isinstance(arch, str) or not arch:
        raise DiswotError(f"{path}: winner.arch must be a non-empty architecture name")
    settings = _read_search_settings(path, doc)
    space = (settings or {}).get("space") or doc.get("space")
    if space is not None and not isinstance(space, str):
        raise DiswotError(f"{path}: the search's space must be a space name, got {space!r}")
    try:
        found = arch_space(arch, space)
    except DiswotError as exc:
        raise DiswotError(f"{path}: {exc}") from exc
    return StudentSpec(arch, found or space, path, settings, dict(winner))


def resolve_arch(spec: str) -> str:
    """The architecture name for a ``--student`` / ``--model`` value (see :func:`resolve_student`)."""
    return resolve_student(spec).arch


def build_model(arch: str, num_classes: int, space: str | None = None) -> nn.Module:
    """The network of ``arch``, any failure turned into a one-line :class:`DiswotError`.

    ``space`` names the search space whose builder makes it; by default that is found from the
    architecture (:func:`arch_space`), and :func:`~diswot.models.create_model` builds the rest.
    """
    from diswot.models import create_model

    try:
        space = arch_space(arch, space)
        if space is not None:
            from diswot.spaces import get_space

            return get_space(space).build(arch, num_classes)
        return create_model(arch, num_classes=num_classes)
    except DiswotError:
        raise
    except Exception as exc:  # a malformed name may fail deep inside a builder
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DiswotError(f"cannot build model '{arch}': {first}") from exc


def check_resolution(student: StudentSpec, data: DataConfig) -> None:
    """Refuse data whose images are not the size a space's fixed-size student is built for."""
    size = student.image_size
    if size is None or size == data.image_size:
        return
    how = f"--image-size {size} (image_size={size} in Python)"
    fix = (
        f"{data.name} is {data.image_size} px only: use --dataset imagefolder --data-root DIR "
        f"or --dataset synthetic, with {how}"
        if data.name.startswith("cifar")
        else f"pass {how}"
    )
    raise DiswotError(
        f"student {student.arch} is a {student.builder_space} network searched at {size} px but "
        f"the {data.name} images are {data.image_size} px; {fix}"
    )
