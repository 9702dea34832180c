"""The epoch loop: train one epoch, evaluate, checkpoint, log; and :func:`evaluate` on its own.

:class:`Session` holds what the epochs act on (built once by :mod:`.run`, fresh or resumed, in the
same order either way so RNG consumption matches). Every epoch ends with an atomic ``last.pt``
(model, optimizer, scheduler, scaler, distiller and every RNG state), a ``best.pt`` when the test
top-1 improved, and the rewritten logs, so a kill loses at most the running epoch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.distill.base import Distiller, StepOutputs
from diswot.distill.checkpoint import (
    atomic_save,
    load_weights_into,
    rng_state,
    set_rng_state,
)
from diswot.distill.datasets import BatchLoader
from diswot.distill.logs import EpochLog
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor

__all__ = ["Session", "evaluate", "run_epochs"]


def _no_best() -> dict[str, Any]:
    return {"top1": -1.0, "top5": 0.0, "epoch": 0}


@dataclass
class Session:
    """One run's networks, method, optimisation state and data: everything its epochs act on."""

    student: nn.Module
    fx_s: FeatureExtractor
    fx_t: FeatureExtractor | None
    distiller: Distiller
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: BatchLoader
    test_loader: BatchLoader
    amp_dtype: torch.dtype | None
    generator: torch.Generator  # the data order's: its state travels in every checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)

    def resume_from(self, ckpt: dict[str, Any]) -> int:
        """Load a ``last.pt``'s states into the session; returns the first epoch still to train."""
        load_weights_into(self.student, ckpt["model"], "resume checkpoint")
        self.distiller.load_state_dict(ckpt["distiller"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], self.generator)
        self.history = list(ckpt["history"])
        self.best = dict(ckpt["best"])
        return int(ckpt["epoch"]) + 1

    def close(self) -> None:
        """Remove the feature hooks from the networks."""
        self.fx_s.close()
        if self.fx_t is not None:
            self.fx_t.close()


def run_epochs(
    s: Session, start: int, epochs: int, out: Path, meta: dict[str, Any], progress: bool
) -> float:
    """Train epochs ``start..epochs``, checkpointing and logging each; returns the last epoch's
    training images/s (0.0 when there was nothing left to train)."""
    from tqdm.auto import tqdm

    log = EpochLog(out)
    dev = s.train_loader.device
    ips = 0.0
    for epoch in range(start, epochs + 1):
        lr_now = s.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = _train_one_epoch(s, epoch, epochs, progress, tqdm)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_time = time.perf_counter() - t0
        ips = stats.pop("images") / max(train_time, 1e-9)
        s.scheduler.step()
        ev = evaluate(s.student, s.test_loader, s.amp_dtype)
        is_best = ev["top1"] > s.best["top1"]
        if is_best:
            s.best = {"top1": ev["top1"], "top5": ev["top5"], "epoch": epoch}
        row = {
            "epoch": epoch,
            "lr": lr_now,
            **stats,
            "test_loss": ev["loss"],
            "test_top1": ev["top1"],
            "test_top5": ev["top5"],
            "best_top1": s.best["top1"],
            "epoch_time_s": round(time.perf_counter() - t0, 3),
            "train_images_per_s": round(ips, 1),
        }
        s.history.append(row)
        _save(s, meta, epoch, is_best, out)
        log.rewrite(s.history)
        if progress:
            print(
                f"epoch {epoch}/{epochs} loss {row['train_loss']:.4f} "
                f"train {row['train_top1']:.2f}% test {ev['top1']:.2f}% "
                f"(best {s.best['top1']:.2f}%) {ips:.0f} img/s",
                file=sys.stderr,
            )
    return ips


def _save(s: Session, meta: dict[str, Any], epoch: int, is_best: bool, out: Path) -> None:
    """``best.pt`` (weights and metadata) when the epoch is the best, then ``last.pt`` (all state)."""
    state = {
        **meta,
        "epoch": epoch,
        "model": s.student.state_dict(),
        "distiller": s.distiller.state_dict(),
        "history": s.history,
        "best": s.best,
    }
    if is_best:
        atomic_save(state, out / "best.pt")
    atomic_save(
        {
            **state,
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else None,
            "rng": rng_state(s.generator),
        },
        out / "last.pt",
    )


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


def _train_one_epoch(
    s: Session, epoch: int, epochs: int, progress: bool, tqdm: Any
) -> dict[str, Any]:
    """One pass over the training data; returns mean loss, its parts, train top-1 and image count.

    Running sums stay on the device (no per-step ``.item()`` sync); the progress bar reads them every
    few steps.
    """
    student, fx_s, fx_t, distiller = s.student, s.fx_s, s.fx_t, s.distiller
    optimizer, scaler, loader, amp_dtype = s.optimizer, s.scaler, s.train_loader, s.amp_dtype
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
