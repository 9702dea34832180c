"""One training run, fresh or resumed: the engine behind ``diswot train`` and ``diswot distill``.

One loop serves both: training from scratch is "distillation" with the :class:`~.methods.Vanilla`
(cross-entropy) method and no teacher. :func:`run_training` resolves the student, loads the data and
the teacher, builds the :class:`~.loop.Session` (seeded; the same order fresh or resumed, so RNG
consumption matches), restores ``last.pt`` on ``resume``, runs the epochs and writes
``result.json``.

Engineering:

* mixed precision (``amp``: ``auto`` = bf16 on CUDA when supported, else fp16 with a GradScaler; off
  on CPU) and channels-last memory format on CUDA;
* data as on-device uint8 tensors with batched augmentation (:mod:`.datasets`);
* a checkpoint after every epoch, written atomically, holding every state incl. the data-order
  generator, so ``resume`` continues bit-exactly on CPU (a crash or kill loses at most the running
  epoch);
* ``log.csv`` and ``log.jsonl`` with one row per epoch, ``result.json`` at the end, and tqdm
  progress bars on stderr.

"Best" top-1 is the maximum test accuracy over epochs, as the DisWOT / CRD code reports it; "last"
is the final epoch's, the number that involves no selection on the test set.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diswot.distill.base import FeatureInfo
from diswot.distill.checkpoint import FORMAT, check_same_run, load_checkpoint, load_teacher
from diswot.distill.datasets import BatchLoader, DataConfig, ImageData, load_dataset
from diswot.distill.logs import EpochLog
from diswot.distill.loop import Session, run_epochs
from diswot.distill.methods import DISTILLERS, build_distiller
from diswot.distill.settings import TrainSettings, amp_dtype, use_channels_last
from diswot.distill.students import StudentSpec, build_model, check_resolution, resolve_student
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.models.cost import ModelCost, profile_arch
from diswot.runfolder import atomic_write_json
from diswot.runtime import resolve_device, run_folder, torch_threads

__all__ = ["run_training"]


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


def _resume_point(out: Path, resume: bool | str | Path, progress: bool) -> dict[str, Any] | None:
    """The checkpoint to continue (``None``: start fresh); refuses to overwrite a finished run."""
    last_path = out / "last.pt"
    if resume not in (False, None):
        src = last_path if resume is True else Path(resume).expanduser()
        if src.is_file():
            return load_checkpoint(src, "resume checkpoint")
        if resume is not True:
            raise DiswotError(f"resume checkpoint {src} does not exist")
        if progress:
            print(f"diswot: no checkpoint in {out}; starting a new run", file=sys.stderr)
    elif last_path.exists():
        raise DiswotError(
            f"{out} already holds a run (last.pt); pass --resume to continue it or choose another --out"
        )
    return None


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
        DISTILLERS.get(method)  # unknown method: fail before loading any data

    ckpt = _resume_point(out, resume, progress)
    student_spec = resolve_student(arch_spec)
    arch = student_spec.arch
    check_resolution(student_spec, data)  # before any data is loaded
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
    student = build_model(arch, k, student_spec.builder_space)
    t_model, t_info = (None, None)
    if distilling:
        t_model, t_info = load_teacher(teacher, teacher_ckpt, k)
        identity["teacher"] = {"arch": t_info["arch"], "sha256": t_info["sha256"]}
    if ckpt is not None:
        check_same_run(ckpt, identity, Path(resume if resume is not True else out / "last.pt"))
    session = _session(
        student, student_spec, t_model, method, weights, settings, dev, gen, train_set, test_set
    )
    start = 1 if ckpt is None else session.resume_from(ckpt)
    if ckpt is not None:  # said even with --quiet: which epochs this run trains is no progress bar
        print(
            f"diswot: resuming from epoch {start} ({start - 1} of {settings.epochs} done)",
            file=sys.stderr,
        )

    run_folder(out)
    EpochLog(out).rewrite(session.history)  # a resumed run's logs catch up with its checkpoint
    meta = {
        "format": FORMAT,
        **identity,
        "num_classes": k,
        "teacher_ckpt": t_info["ckpt"] if t_info else None,
        "amp": settings.amp,
        "channels_last": settings.channels_last,
        "distiller_settings": session.distiller.settings(),
    }
    cost = _cost(student_spec, k, train_set)
    ips = run_epochs(session, start, settings.epochs, out, meta, progress)
    session.close()

    history, best = session.history, session.best
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
        "checkpoint": str(out / "last.pt"),
        "best_checkpoint": str(out / "best.pt"),
        "out": str(out),
        "resumed_from_epoch": start - 1,
        "train_images_per_s": round(ips, 1) if start <= settings.epochs else None,
        "history": history,
    }
    atomic_write_json(out / "result.json", result)
    return result


def _session(
    student: nn.Module,
    spec: StudentSpec,
    t_model: nn.Module | None,
    method: str,
    weights: dict[str, float] | None,
    settings: TrainSettings,
    dev: torch.device,
    gen: torch.Generator,
    train_set: ImageData,
    test_set: ImageData,
) -> Session:
    """Place the networks, hook their features, and build the method, optimiser and loaders."""
    autocast = amp_dtype(settings.amp, dev)
    cl = use_channels_last(settings.channels_last, dev)
    mf = torch.channels_last if cl else torch.contiguous_format
    student.to(dev, memory_format=mf)
    hooks: tuple[str | None, str | None] = (None, None)
    if spec.builder_space is not None:
        from diswot.spaces import get_space

        hooks = get_space(spec.builder_space).feature_hooks  # e.g. a ViT's head and token map
    fx_s = FeatureExtractor(student, *hooks)
    fx_t = None
    probe = torch.zeros((2, *train_set.image_shape), device=dev).contiguous(memory_format=mf)
    student.eval()  # detection forward must not touch BatchNorm statistics
    with torch.no_grad():
        s_info = FeatureInfo.of(fx_s(probe))
        t_info = None
        if t_model is not None:
            t_model.to(dev, memory_format=mf).eval()
            for p in t_model.parameters():
                p.requires_grad_(False)
            fx_t = FeatureExtractor(t_model)
            t_info = FeatureInfo.of(fx_t(probe))
    student.train()
    distiller = build_distiller(method, t_info, s_info, weights, settings.epochs).to(dev)
    if cl:
        distiller.to(memory_format=torch.channels_last)
    params = list(student.parameters()) + list(distiller.parameters())
    optimizer = torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(settings.resolved_milestones()), gamma=settings.lr_decay
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast == torch.float16)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Session(
        student=student,
        fx_s=fx_s,
        fx_t=fx_t,
        distiller=distiller,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=BatchLoader(train_set, settings.batch_size, dev, True, gen, channels_last=cl),
        test_loader=BatchLoader(test_set, settings.eval_batch_size, dev, False, channels_last=cl),
        amp_dtype=autocast,
        generator=gen,
    )


def _cost(spec: StudentSpec, k: int, train_set: ImageData) -> ModelCost:
    """The student's parameter and FLOP count, as its space's search counted them when it has one."""
    if spec.builder_space is None:
        return profile_arch(spec.arch, k, (1, *train_set.image_shape))
    from diswot.spaces import get_space

    return get_space(spec.builder_space).cost(spec.arch, k, train_set.image_shape[-1])
