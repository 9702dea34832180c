"""The training loop behind ``diswot train`` and ``diswot distill`` (and their Python API).

One loop serves both: training from scratch is "distillation" with the :class:`~.methods.Vanilla`
(cross-entropy) method and no teacher. Defaults are the DisWOT / CRD CIFAR recipe: SGD lr 0.05,
momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr x0.1 at epochs 150/180/210. When
``epochs`` is changed the milestones keep their *fractions* of the run (62.5/75/87.5%), so a short run
still anneals; pass ``milestones`` to pin them.

Engineering:

* mixed precision (``amp``: ``auto`` = bf16 on CUDA when supported, else fp16 with a GradScaler; off
  on CPU) and channels-last memory format on CUDA;
* data as on-device uint8 tensors with batched augmentation (:mod:`.datasets`);
* a checkpoint after every epoch, written atomically, holding model, optimizer, scheduler, scaler,
  distiller (learned projections) and every RNG state incl. the data-order generator, so
  ``resume`` continues bit-exactly on CPU (a crash or kill loses at most the running epoch);
* ``log.csv`` and ``log.jsonl`` with one row per epoch, ``result.json`` at the end, and tqdm
  progress bars on stderr.

"Best" top-1 is the maximum test accuracy over epochs, as the DisWOT / CRD code reports it; "last"
is the final epoch's, the number that involves no selection on the test set.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.distill.checkpoint import (
    FORMAT,
    _load_any,
    atomic_save,
    load_checkpoint,
    load_weights_into,
    state_dict_from,
)
from diswot.distill.datasets import BatchLoader, DataConfig, ImageData, load_dataset
from diswot.distill.methods import Distiller, FeatureInfo, StepOutputs, build_distiller
from diswot.errors import DiswotError, flag
from diswot.features import FeatureExtractor
from diswot.models import is_model_name
from diswot.runtime import resolve_device, run_folder, torch_threads

__all__ = [
    "KILL_AFTER_EPOCH_ENV",
    "StudentSpec",
    "TrainSettings",
    "arch_space",
    "build_model",
    "distill",
    "evaluate_checkpoint",
    "resolve_arch",
    "resolve_student",
    "run_training",
    "train_model",
]

#: Testing hook: when set to ``N``, the process SIGKILLs itself right after epoch ``N``'s checkpoint is
#: written - a real, uncatchable kill at a known point, to prove ``--resume`` loses nothing.
KILL_AFTER_EPOCH_ENV = "DISWOT_KILL_AFTER_EPOCH"

#: Milestones of the paper's 240-epoch schedule, as fractions of the run.
_MILESTONE_FRACTIONS = (150 / 240, 180 / 240, 210 / 240)
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; all but the last three define the run and must match on resume."""

    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] | None = None
    lr_decay: float = 0.1
    seed: int = 0
    # Not part of the run's identity: a run may resume on another device or precision.
    amp: str = "auto"
    channels_last: str = "auto"
    eval_batch_size: int = 256

    def validated(self) -> TrainSettings:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DiswotError(f"{flag(key)} must be a positive integer, got {v!r}")
        if self.batch_size < 2:
            raise DiswotError(
                "--batch-size must be at least 2 (BatchNorm and relation losses need 2)"
            )
        for key in ("lr", "momentum", "weight_decay", "lr_decay"):
            if not float(getattr(self, key)) >= 0:  # NaN too
                raise DiswotError(f"{flag(key)} must be >= 0, got {getattr(self, key)}")
        if self.amp not in AMP_MODES:
            raise DiswotError(f"unknown amp mode '{self.amp}'; accepted: {', '.join(AMP_MODES)}")
        cl = str(self.channels_last).lower()
        if cl not in ("auto", "on", "off", "true", "false"):
            raise DiswotError(
                f"--channels-last must be auto, on or off, got '{self.channels_last}'"
            )
        ms = self.resolved_milestones()
        if list(ms) != sorted(set(ms)) or (ms and (ms[0] < 1 or ms[-1] > self.epochs)):
            raise DiswotError(
                f"--milestones must be increasing epochs within 1..{self.epochs}, got {list(ms)}"
            )
        return self

    def resolved_milestones(self) -> tuple[int, ...]:
        """Explicit milestones, or the paper's 150/180/210-of-240 scaled to ``epochs``."""
        if self.milestones is not None:
            return tuple(int(m) for m in self.milestones)
        ms = sorted({max(1, round(f * self.epochs)) for f in _MILESTONE_FRACTIONS})
        return tuple(m for m in ms if m < self.epochs) if self.epochs > 1 else ()

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": float(self.lr),
            "momentum": float(self.momentum),
            "weight_decay": float(self.weight_decay),
            "milestones": list(self.resolved_milestones()),
            "lr_decay": float(self.lr_decay),
            "seed": int(self.seed),
        }


# -- helpers ----------------------------------------------------------------------------------------
def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _channels_last(flag: str, device: torch.device) -> bool:
    flag = str(flag).lower()
    return device.type == "cuda" if flag == "auto" else flag in ("on", "true")


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


def _check_resolution(student: StudentSpec, data: DataConfig) -> None:
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_teacher(
    arch: str | None, ckpt: str | Path | None, num_classes: int
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the teacher and load its weights; the arch may come from a diswot checkpoint."""
    info: dict[str, Any] = {"arch": arch, "ckpt": None, "sha256": None}
    state = None
    if ckpt is not None:
        path = Path(ckpt).expanduser().resolve()
        obj = _load_any(path, "teacher checkpoint")
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            if arch is not None and resolve_arch(arch) != obj["arch"]:
                raise DiswotError(
                    f"teacher checkpoint {path} holds a {obj['arch']}, not a {arch}; "
                    f"pass --teacher {obj['arch']} or the matching checkpoint"
                )
            arch = obj["arch"]
            if int(obj["num_classes"]) != num_classes:
                raise DiswotError(
                    f"teacher checkpoint {path} predicts {obj['num_classes']} classes but the "
                    f"dataset has {num_classes}; use a teacher trained on this dataset"
                )
        try:
            state = state_dict_from(obj)
        except DiswotError as exc:
            raise DiswotError(f"teacher checkpoint {path}: {exc}") from exc
        info.update(ckpt=str(path), sha256=_sha256(path))
    if arch is None:
        raise DiswotError("name the teacher architecture (--teacher) or pass a diswot checkpoint")
    arch = resolve_arch(arch)
    info["arch"] = arch
    teacher = build_model(arch, num_classes)
    if state is not None:
        load_weights_into(
            teacher, state, f"teacher checkpoint {info['ckpt']} ({arch}, {num_classes} classes)"
        )
    return teacher, info


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "data": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    gen.set_state(state["data"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def _topk_correct(logits: Tensor, target: Tensor, k: int) -> Tensor:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == target[:, None]).any(dim=1).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    dev = loader.device
    c1 = torch.zeros((), device=dev, dtype=torch.long)
    c5 = torch.zeros((), device=dev, dtype=torch.long)
    loss = torch.zeros((), device=dev)
    n = 0
    for x, y in loader:
        with torch.autocast(
            dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = model(x)
        logits = logits.float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        c1 += _topk_correct(logits, y, 1)
        c5 += _topk_correct(logits, y, 5)
        n += y.shape[0]
    model.train(was_training)
    n = max(n, 1)
    return {
        "top1": 100.0 * float(c1) / n,
        "top5": 100.0 * float(c5) / n,
        "loss": float(loss) / n,
    }


class _Logger:
    """Per-epoch CSV + JSON-lines logs, rebuilt from the checkpoint's history on resume."""

    def __init__(self, out: Path) -> None:
        self.csv = out / "log.csv"
        self.jsonl = out / "log.jsonl"

    @staticmethod
    def _atomic_text(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        if history:
            w = csv.DictWriter(buf, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
        self._atomic_text(self.csv, buf.getvalue())
        self._atomic_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in history))


def _fmt_diff(a: Any, b: Any) -> str:
    return f"{json.dumps(a, sort_keys=True)[:60]} vs {json.dumps(b, sort_keys=True)[:60]}"


# -- the loop ---------------------------------------------------------------------------------------
def run_training(
    arch_spec: str,
    data: DataConfig,
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    method: str = "ce",
    teacher: str | None = None,
    teacher_ckpt: str | Path | None = None,
    weights: dict[str, float] | None = None,
    device: str | torch.device = "auto",
    resume: bool | str | Path = False,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train ``arch_spec`` on ``data`` (with ``method``; ``"ce"`` = from scratch) into ``out``.

    Returns the result dict also written to ``out/result.json``. ``resume=True`` continues from
    ``out/last.pt`` when it exists (and starts fresh otherwise); a path resumes from that file.
    Starting fresh into a folder that already holds ``last.pt`` is refused, so a finished run is never
    overwritten by accident.

    Training seeds the global RNGs (torch, ``random``, NumPy) for its own reproducibility; the
    caller's states are restored afterwards, so a script's own random stream is left alone.
    """
    with torch_threads(threads), _global_rng_kept():
        return _run_training(
            arch_spec, data, out, settings, method=method, teacher=teacher,
            teacher_ckpt=teacher_ckpt, weights=weights, device=device, resume=resume,
            progress=progress,
        )  # fmt: skip


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Restore the global torch (CPU and CUDA), ``random`` and NumPy states on exit."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _run_training(
    arch_spec: str,
    data: DataConfig,
    out: str | Path,
    settings: TrainSettings | None,
    *,
    method: str,
    teacher: str | None,
    teacher_ckpt: str | Path | None,
    weights: dict[str, float] | None,
    device: str | torch.device,
    resume: bool | str | Path,
    progress: bool,
) -> dict[str, Any]:
    settings = (settings or TrainSettings()).validated()
    method = str(method).lower()
    dev = resolve_device(device)
    data = data.normalized()
    out = Path(out).expanduser().resolve()
    distilling = method != "ce"
    if distilling and teacher is None and teacher_ckpt is None:
        raise DiswotError(f"method {method} needs a teacher (--teacher and --teacher-ckpt)")
    if distilling:
        from diswot.distill.methods import DISTILLERS

        DISTILLERS.get(method)  # unknown method: fail before loading any data

    # -- where to start ------------------------------------------------------------------------
    last_path = out / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume not in (False, None):
        src = last_path if resume is True else Path(resume).expanduser()
        if src.is_file():
            ckpt = load_checkpoint(src, "resume checkpoint")
        elif resume is not True:
            raise DiswotError(f"resume checkpoint {src} does not exist")
        elif progress:
            print(f"diswot: no checkpoint in {out}; starting a new run", file=sys.stderr)
    elif last_path.exists():
        raise DiswotError(
            f"{out} already holds a run (last.pt); pass --resume to continue it or choose another --out"
        )

    student_spec = resolve_student(arch_spec)
    arch = student_spec.arch
    space = student_spec.builder_space
    _check_resolution(student_spec, data)  # before any data is loaded
    train_set, test_set = load_dataset(data)
    k = train_set.num_classes

    identity = {
        "kind": "distill" if distilling else "train",
        "arch": arch,
        "method": method,
        "dataset": data.to_dict(),
        "settings": settings.identity(),
        "weights": dict(sorted((weights or {}).items())),
    }

    # -- build everything (same order fresh or resumed, so RNG consumption matches) -------------
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed % 2**32)
    gen = torch.Generator().manual_seed(settings.seed)
    student = build_model(arch, k, space)
    t_model, t_info = (None, None)
    if distilling:
        t_model, t_info = _load_teacher(teacher, teacher_ckpt, k)
        identity["teacher"] = {"arch": t_info["arch"], "sha256": t_info["sha256"]}
    if ckpt is not None:
        _check_same_run(ckpt, identity, Path(resume if resume is not True else last_path))

    amp_dtype = _amp_dtype(settings.amp, dev)
    cl = _channels_last(settings.channels_last, dev)
    mf = torch.channels_last if cl else torch.contiguous_format
    student.to(dev, memory_format=mf)
    hooks: tuple[str | None, str | None] = (None, None)
    if space is not None:
        from diswot.spaces import get_space

        hooks = get_space(space).feature_hooks  # e.g. a ViT's head and final patch-token map
    fx_s = FeatureExtractor(student, *hooks)
    fx_t = None
    probe = torch.zeros((2, *train_set.image_shape), device=dev).contiguous(memory_format=mf)
    student.eval()  # detection forward must not touch BatchNorm statistics
    with torch.no_grad():
        s_info = FeatureInfo.of(fx_s(probe))
        tinfo = None
        if t_model is not None:
            t_model.to(dev, memory_format=mf).eval()
            for p in t_model.parameters():
                p.requires_grad_(False)
            fx_t = FeatureExtractor(t_model)
            tinfo = FeatureInfo.of(fx_t(probe))
    student.train()
    distiller = build_distiller(method, tinfo, s_info, weights, settings.epochs).to(dev)
    if cl:
        distiller.to(memory_format=torch.channels_last)
    params = list(student.parameters()) + list(distiller.parameters())
    optimizer = torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(settings.resolved_milestones()), gamma=settings.lr_decay
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_loader = BatchLoader(train_set, settings.batch_size, dev, True, gen, channels_last=cl)
    test_loader = BatchLoader(test_set, settings.eval_batch_size, dev, False, channels_last=cl)

    history: list[dict[str, Any]] = []
    best = {"top1": -1.0, "top5": 0.0, "epoch": 0}
    start = 1
    if ckpt is not None:
        load_weights_into(student, ckpt["model"], "resume checkpoint")
        distiller.load_state_dict(ckpt["distiller"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], gen)
        history = list(ckpt["history"])
        best = dict(ckpt["best"])
        start = int(ckpt["epoch"]) + 1
    resumed_from = start - 1

    run_folder(out)
    logger = _Logger(out)
    logger.rewrite(history)
    meta = {
        "format": FORMAT,
        **identity,
        "num_classes": k,
        "teacher_ckpt": t_info["ckpt"] if t_info else None,
        "amp": settings.amp,
        "channels_last": settings.channels_last,
        "distiller_settings": distiller.settings(),
    }
    kill_after = os.environ.get(KILL_AFTER_EPOCH_ENV)
    from diswot.models.cost import profile_arch

    if space is None:
        cost = profile_arch(arch, k, (1, *train_set.image_shape))
    else:  # the space's own count, the one its search budgeted with
        from diswot.spaces import get_space

        cost = get_space(space).cost(arch, k, train_set.image_shape[-1])
    ips = 0.0

    from tqdm.auto import tqdm

    for epoch in range(start, settings.epochs + 1):
        lr_now = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = _train_one_epoch(
            student,
            fx_s,
            fx_t,
            distiller,
            optimizer,
            scaler,
            train_loader,
            amp_dtype,
            epoch,
            settings.epochs,
            progress,
            tqdm,
        )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_time = time.perf_counter() - t0
        ips = stats.pop("images") / max(train_time, 1e-9)
        scheduler.step()
        ev = evaluate(student, test_loader, amp_dtype)
        is_best = ev["top1"] > best["top1"]
        if is_best:
            best = {"top1": ev["top1"], "top5": ev["top5"], "epoch": epoch}
        row = {
            "epoch": epoch,
            "lr": lr_now,
            **stats,
            "test_loss": ev["loss"],
            "test_top1": ev["top1"],
            "test_top5": ev["top5"],
            "best_top1": best["top1"],
            "epoch_time_s": round(time.perf_counter() - t0, 3),
            "train_images_per_s": round(ips, 1),
        }
        history.append(row)
        state = {
            **meta,
            "epoch": epoch,
            "model": student.state_dict(),
            "distiller": distiller.state_dict(),
            "history": history,
            "best": best,
        }
        if is_best:
            atomic_save(state, out / "best.pt")
        atomic_save(
            {
                **state,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": _rng_state(gen),
            },
            last_path,
        )
        logger.rewrite(history)
        if progress:
            print(
                f"epoch {epoch}/{settings.epochs} loss {row['train_loss']:.4f} "
                f"train {row['train_top1']:.2f}% test {ev['top1']:.2f}% (best {best['top1']:.2f}%) "
                f"{ips:.0f} img/s",
                file=sys.stderr,
            )
        if kill_after is not None and int(kill_after) == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    fx_s.close()
    if fx_t is not None:
        fx_t.close()
    last = history[-1] if history else {}
    result = {
        "kind": identity["kind"],
        "arch": arch,
        "method": method,
        "teacher": t_info["arch"] if t_info else None,
        "dataset": data.name,
        "num_classes": k,
        "epochs": settings.epochs,
        "params": cost.params,
        "flops": cost.flops,
        "best_top1": best["top1"] if history else None,
        "best_top5": best["top5"] if history else None,
        "best_epoch": best["epoch"] if history else None,
        "last_top1": last.get("test_top1"),
        "last_top5": last.get("test_top5"),
        "checkpoint": str(last_path),
        "best_checkpoint": str(out / "best.pt"),
        "out": str(out),
        "resumed_from_epoch": resumed_from,
        "train_images_per_s": round(ips, 1) if start <= settings.epochs else None,
        "history": history,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check_same_run(ckpt: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint whose run-defining settings differ from the requested ones."""
    diffs = []
    if "optimizer" not in ckpt:
        raise DiswotError(
            f"{path} is a best-model checkpoint without optimizer state; resume from last.pt"
        )
    for key, want in identity.items():
        have = ckpt.get(key)
        if key == "dataset":  # the data may move between sessions; what it is must not change
            have = {k: v for k, v in (have or {}).items() if k != "root"}
            want = {k: v for k, v in want.items() if k != "root"}
        if key == "settings":
            for sk, sv in want.items():
                if have is None or have.get(sk) != sv:
                    diffs.append(f"{sk} {_fmt_diff(None if have is None else have.get(sk), sv)}")
        elif have != want:
            diffs.append(f"{key} {_fmt_diff(have, want)}")
    if diffs:
        raise DiswotError(
            f"resume checkpoint {path} is from a different run ({'; '.join(diffs[:3])}; "
            "checkpoint vs requested); repeat its settings or choose a new --out"
        )


def _train_one_epoch(
    student: nn.Module,
    fx_s: FeatureExtractor,
    fx_t: FeatureExtractor | None,
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader: BatchLoader,
    amp_dtype: torch.dtype | None,
    epoch: int,
    epochs: int,
    progress: bool,
    tqdm: Any,
) -> dict[str, Any]:
    """One pass over the training data; returns mean loss, its parts, train top-1 and image count.

    Running sums stay on the device (no per-step ``.item()`` sync); the progress bar reads them every
    few steps.
    """
    student.train()
    distiller.train()
    dev = loader.device
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    part_sums: dict[str, Tensor] = {}
    seen = 0
    s_head = fx_s.classifier.weight
    t_head = fx_t.classifier.weight if fx_t is not None else None
    every = max(1, len(loader) // 20)
    bar = tqdm(
        total=len(loader),
        desc=f"epoch {epoch}/{epochs}",
        disable=not progress,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        for step, (x, y) in enumerate(loader):
            with torch.autocast(
                dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                t_out = None
                if fx_t is not None:
                    with torch.no_grad():
                        t_out = fx_t(x)
                s_out = fx_s(x)
                loss, parts = distiller(StepOutputs(s_out, t_out, y, s_head, t_head, epoch))
            optimizer.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            n = y.shape[0]
            seen += n
            loss_sum += loss.detach().float() * n
            correct += (s_out.logits.detach().argmax(1) == y).sum()
            for key, v in parts.items():
                part_sums[key] = part_sums.get(key, torch.zeros((), device=dev)) + v.float() * n
            bar.update(1)
            # Reading the sums syncs with the device, so refresh the postfix ~20 times an epoch.
            if progress and (step % every == 0 or step == len(loader) - 1):
                bar.set_postfix(
                    loss=f"{float(loss_sum) / seen:.3f}", acc=f"{100.0 * float(correct) / seen:.1f}"
                )
    mean_loss = float(loss_sum) / max(seen, 1)
    if not np.isfinite(mean_loss) and not scaler.is_enabled():
        raise DiswotError(
            f"training diverged in epoch {epoch} (loss {mean_loss}); lower --lr or the loss weights"
        )
    stats: dict[str, Any] = {
        "train_loss": mean_loss,
        "train_top1": 100.0 * float(correct) / max(seen, 1),
    }
    for key, v in part_sums.items():
        stats[f"loss_{key}"] = float(v) / max(seen, 1)
    stats["images"] = seen
    return stats


# -- public API ---------------------------------------------------------------------------------------
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
    settings, d = _split_options(options, model)
    cfg = DataConfig(name=dataset, root=None if data_root is None else str(data_root), **d)
    return run_training(
        model,
        cfg,
        out,
        settings,
        method="ce",
        device=device,
        resume=resume,
        progress=progress,
        threads=threads,
    )


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
    settings, d = _split_options(options, student)
    cfg = DataConfig(name=dataset, root=None if data_root is None else str(data_root), **d)
    return run_training(
        student,
        cfg,
        out,
        settings,
        method=method,
        teacher=teacher,
        teacher_ckpt=teacher_ckpt,
        weights=weights,
        device=device,
        resume=resume,
        progress=progress,
        threads=threads,
    )


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
    cl = _channels_last("auto", dev)
    model.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format)
    loader = BatchLoader(test_set, batch_size, dev, False, channels_last=cl)
    ev = evaluate(model, loader, _amp_dtype(amp, dev))
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
