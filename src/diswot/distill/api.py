"""The Python API of the distillation stage: :func:`train_model`, :func:`distill` and
:func:`evaluate_checkpoint` (``diswot train`` / ``distill`` / ``evaluate`` as functions).

Options are passed as keywords: any :class:`~.settings.TrainSettings` field (``epochs``, ``lr``,
``seed``, ``amp`` ...) and any :class:`~.datasets.DataConfig` field (``image_size``,
``synthetic_train`` ...), so a script spells a setting the way the CLI's flag does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from diswot.distill.checkpoint import load_checkpoint, load_weights_into
from diswot.distill.datasets import BatchLoader, DataConfig, ImageData, load_dataset
from diswot.distill.loop import evaluate
from diswot.distill.run import run_training
from diswot.distill.settings import AMP_MODES, TrainSettings, amp_dtype, use_channels_last
from diswot.distill.students import build_model, resolve_student
from diswot.errors import DiswotError
from diswot.runtime import resolve_device, torch_threads

__all__ = ["distill", "evaluate_checkpoint", "train_model"]

_SETTING_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}
_DATA_KEYS = {f.name for f in dataclasses.fields(DataConfig)} - {"name", "root"}


def _split_options(
    options: dict[str, Any], student: str | None = None
) -> tuple[TrainSettings, dict[str, Any]]:
    """Settings and data options; ``image_size`` defaults to the size ``student``'s space builds
    it for (224 for resnet-imagenet, pit and autoformer students), else to the data's default."""
    unknown = sorted(set(options) - _SETTING_KEYS - _DATA_KEYS)
    if unknown:
        raise DiswotError(
            f"unknown option {', '.join(unknown)}; accepted: "
            f"{', '.join(sorted(_SETTING_KEYS | _DATA_KEYS))}"
        )
    s = {k: v for k, v in options.items() if k in _SETTING_KEYS}
    if s.get("milestones") is not None:
        s["milestones"] = tuple(s["milestones"])
    d = {k: v for k, v in options.items() if k in _DATA_KEYS}
    if d.get("image_size") is None and student is not None:
        d.pop("image_size", None)
        size = resolve_student(student).image_size
        if size is not None:
            d["image_size"] = size
    return TrainSettings(**s), d


def _train(
    student: str,
    dataset: str,
    data_root: str | Path | None,
    out: str | Path,
    options: dict[str, Any],
    **run: Any,
) -> dict[str, Any]:
    """:func:`~.run.run_training` with keyword ``options`` split into settings and data."""
    settings, d = _split_options(options, student)
    cfg = DataConfig(name=dataset, root=None if data_root is None else str(data_root), **d)
    return run_training(student, cfg, out, settings, **run)


def train_model(
    model: str,
    dataset: str = "cifar100",
    data_root: str | Path | None = None,
    out: str | Path = "runs/train",
    *,
    device: str = "auto",
    resume: bool | str | Path = False,
    progress: bool = True,
    threads: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` from scratch (teachers, vanilla baselines); returns the result dict.

    ``options`` are :class:`TrainSettings` fields (``epochs``, ``lr``, ``seed``, ``amp`` ...) and
    :class:`~.datasets.DataConfig` fields (``image_size``, ``synthetic_train`` ...). ``model`` may be
    a search's ``result.json`` or a space's architecture (see :func:`resolve_student`); a
    resnet-imagenet, pit or autoformer network trains at the 224 px its space builds it for.
    """
    return _train(
        model, dataset, data_root, out, options, method="ce", device=device, resume=resume,
        progress=progress, threads=threads,
    )  # fmt: skip


def distill(
    teacher: str | None,
    teacher_ckpt: str | Path | None,
    student: str,
    method: str = "kd",
    dataset: str = "cifar100",
    data_root: str | Path | None = None,
    out: str | Path = "runs/distill",
    *,
    weights: dict[str, float] | None = None,
    device: str = "auto",
    resume: bool | str | Path = False,
    progress: bool = True,
    threads: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Distill ``teacher`` (weights from ``teacher_ckpt``) into ``student`` with ``method``.

    ``student`` is a model name, S1 code, NB201 string, a resnet-imagenet/pit/autoformer architecture
    (224 px data) or a search's ``result.json``. ``teacher`` may
    be ``None`` when ``teacher_ckpt`` is a diswot checkpoint (it names its arch); ``teacher_ckpt=None``
    distills from a randomly initialised teacher, which is only meaningful for benchmarks and tests.
    """
    return _train(
        student, dataset, data_root, out, options, method=method, teacher=teacher,
        teacher_ckpt=teacher_ckpt, weights=weights, device=device, resume=resume,
        progress=progress, threads=threads,
    )  # fmt: skip


def evaluate_checkpoint(
    ckpt: str | Path,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    *,
    batch_size: int = 256,
    device: str = "auto",
    amp: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Rebuild the model a checkpoint describes and measure it on the test split of its dataset.

    ``dataset`` / ``data_root`` override the stored ones (e.g. the data moved); the class count must
    still match. Returns ``top1``/``top5``/``loss`` plus the stored ``best_top1`` / ``last_top1``.
    """
    with torch_threads(threads):
        return _evaluate_checkpoint(ckpt, dataset, data_root, batch_size, device, amp)


def _evaluate_checkpoint(
    ckpt: str | Path,
    dataset: str | None,
    data_root: str | Path | None,
    batch_size: int,
    device: str,
    amp: str,
) -> dict[str, Any]:
    path = Path(ckpt).expanduser().resolve()
    obj = load_checkpoint(path)
    stored = DataConfig(**obj["dataset"])
    if dataset is not None and str(dataset).lower() != stored.name:
        stored = DataConfig(name=dataset, root=None)
    if data_root is not None:
        stored = dataclasses.replace(stored, root=str(data_root))
    cfg = stored.normalized()
    dev = resolve_device(device)
    if amp not in AMP_MODES:
        raise DiswotError(f"unknown amp mode '{amp}'; accepted: {', '.join(AMP_MODES)}")
    _, test_set = load_dataset(cfg)
    _check_classes(test_set, int(obj["num_classes"]), path)
    model = build_model(obj["arch"], int(obj["num_classes"]))
    load_weights_into(model, obj["model"], f"checkpoint {path}")
    cl = use_channels_last("auto", dev)
    model.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format)
    loader = BatchLoader(test_set, batch_size, dev, False, channels_last=cl)
    ev = evaluate(model, loader, amp_dtype(amp, dev))
    hist = obj.get("history") or []
    return {
        "checkpoint": str(path),
        "arch": obj["arch"],
        "method": obj["method"],
        "dataset": cfg.name,
        "num_classes": int(obj["num_classes"]),
        "epoch": int(obj["epoch"]),
        "num_images": len(test_set),
        "top1": ev["top1"],
        "top5": ev["top5"],
        "loss": ev["loss"],
        "best_top1": obj["best"]["top1"],
        "last_top1": hist[-1]["test_top1"] if hist else None,
    }


def _check_classes(data: ImageData, k: int, path: Path) -> None:
    if data.num_classes != k:
        raise DiswotError(
            f"checkpoint {path} predicts {k} classes but {data.name} has {data.num_classes}; "
            "evaluate on the dataset it was trained on"
        )
