"""Seeded probe batches, the seeds derived from a probe seed, and the scoring memory layout.

Seed ``s`` selects the probe batch, the teacher's init (``s * 1000 + 1``) and the student's init
(``s * 1000 + 2``). Teacher and student never share an init seed, so a student of the teacher's
own architecture is a *different* random network, as in the paper.
"""

from __future__ import annotations

import itertools
from typing import overload

import torch
from torch import Tensor, nn

from diswot.config import ProbeConfig
from diswot.data import probe_batch

__all__ = ["STUDENT", "TEACHER", "Layout", "ProbeBatches", "seed_of"]

#: Roles of :func:`seed_of`: the init seed of the teacher and of the student.
TEACHER, STUDENT = 1, 2


def seed_of(seed: int, role: int) -> int:
    """The seed of ``role`` (:data:`TEACHER`, :data:`STUDENT`) under probe seed ``seed``."""
    return seed * 1000 + role


class Layout:
    """The scoring memory format: channels-last when ``channels_last`` is on (oneDNN's fast path
    on a CPU, see ``docs/scale.md``), otherwise tensors and modules as they are."""

    def __init__(self, channels_last: bool) -> None:
        self.channels_last = channels_last

    @overload
    def __call__(self, x: nn.Module) -> nn.Module: ...
    @overload
    def __call__(self, x: Tensor) -> Tensor: ...
    def __call__(self, x: nn.Module | Tensor) -> nn.Module | Tensor:
        """A module or 4-D batch in this layout (a module converted in place)."""
        if not self.channels_last:
            return x
        if isinstance(x, Tensor):
            return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        # Module.to walks and re-wraps every tensor even when none changes: convert only when
        # some 4-D tensor is not channels-last yet (the ops a retarget just built).
        tensors = itertools.chain(x.parameters(), x.buffers())
        if any(
            t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last) for t in tensors
        ):
            x.to(memory_format=torch.channels_last)
        return x


class ProbeBatches:
    """The probe batch and labels of each seed, drawn on first use and kept for every student."""

    def __init__(self, config: ProbeConfig, device: torch.device, layout: Layout) -> None:
        self.config = config
        self.device = device
        self.layout = layout
        self._batches: dict[int, tuple[Tensor, Tensor]] = {}

    def __call__(self, seed: int) -> tuple[Tensor, Tensor]:
        if seed not in self._batches:
            cfg = self.config
            x, y = probe_batch(
                cfg.data,
                batch_size=cfg.batch_size,
                num_classes=cfg.num_classes,
                seed=seed,
                data_root=cfg.data_root,
                image_size=cfg.image_size,
                device=self.device,
            )
            self._batches[seed] = (self.layout(x), y)
        return self._batches[seed]
