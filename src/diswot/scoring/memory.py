"""Will a probe batch fit, and does its resolution leave a feature map? Checked before scoring.

A probe batch too large for the machine does not fail politely on a CPU: the kernel's out-of-memory
killer ends the process with SIGKILL, without a word and without the ``finally`` clauses that close a
run folder. So before the first teacher or student pass, :func:`check_probe_fits` estimates the peak
memory of scoring and refuses, in one line, a batch whose estimate exceeds what the device has
available. The estimate comes from shapes, not from a trial at the full batch: teacher and student
run once at batch 2 on the CPU (forward hooks record every layer's input and output), and the
per-sample sizes are scaled to the batch. Its parts, for ``N`` samples:

* the probe batch itself (and the teacher's resized copy when the teacher runs at another size);
* a network's first pass holds every tensor that enters or leaves one of its layers until it ends:
  the feature extractor's detection keeps them all to pick the pre-pool map afterwards, and every
  teacher and student pass of the scorer is such a first pass. The teacher's pass, then a
  student's with the teacher's features kept (a proxy that takes gradients holds the activations
  again as gradients), then the metrics on both feature maps in float64: the largest counts;
* the DisWOT family compares ``N x N`` sample-relation matrices in float64, about four of them alive
  at once (the teacher's, the student's, their difference and its square): ``32 N^2`` bytes, which
  is what makes a batch of 100,000 need hundreds of GiB whatever the networks.

The estimate follows the measured peak resident memory of ``diswot score`` on the CPU closely
(``docs/scale.md``, "Probe batch memory", has the figures).

The same batch-2 pass tells whether the resolution collapses a network's pre-pool feature map to
one position (``--image-size 4`` on a CIFAR ResNet that downsamples 4x): the relation term then has
no spatial structure to compare, and a warning says which size gives the network a 2 x 2 map.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.models import create_model
from diswot.proxies import get_proxy

if TYPE_CHECKING:
    from diswot.scoring.scorer import Scorer
    from diswot.scoring.student import StudentLike

__all__ = [
    "Estimate",
    "Footprint",
    "available_bytes",
    "check_probe_fits",
    "estimate_probe_memory",
    "footprint",
    "out_of_memory",
]

#: Float64 ``N x N`` relation matrices alive at once while ``M_r`` is computed (see the module doc).
RELATION_MATRICES = 4
#: The batch the networks are traced at: the smallest a train-mode BatchNorm accepts.
TRACE_BATCH = 2
#: The size a collapsed network is traced at again to find how much it downsamples.
STRIDE_PROBE = 64


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or CUDA), whatever torch raised it as."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "CUDA out of memory" in text


@dataclass(frozen=True)
class Footprint:
    """What one network's forward pass holds, per sample (bytes), from a traced pass."""

    #: Every distinct tensor that enters or leaves a leaf module: what the scorer's first pass of a
    #: network holds at its end (the feature extractor's detection keeps them all to pick the
    #: pre-pool map afterwards), and what autograd keeps for a proxy's backward pass.
    kept: int
    #: The pre-pool feature map the scorer keeps (float32).
    feature: int
    #: The pre-pool feature map's shape without the batch dimension.
    feature_shape: tuple[int, ...]
    #: Parameters and buffers (bytes, not per sample).
    weights: int

    @property
    def collapsed(self) -> bool:
        """A spatial pre-pool map reduced to one position."""
        return len(self.feature_shape) == 3 and self.feature_shape[1] * self.feature_shape[2] == 1


def _tensors(x: object) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def footprint(
    model: nn.Module,
    image_size: int,
    classifier: str | None = None,
    feature: str | None = None,
) -> Footprint:
    """Trace ``model`` (on the CPU, train mode, no grad) at :data:`TRACE_BATCH` ``image_size`` px
    images and return its per-sample :class:`Footprint`."""
    seen: dict[int, int] = {}  # storage address -> bytes: a tensor passed on is counted once

    def hook(_m: nn.Module, inp: tuple, out: object) -> None:
        for t in (*_tensors(inp), *_tensors(out)):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model.train()
        with torch.no_grad():
            x = torch.zeros(TRACE_BATCH, 3, image_size, image_size)
            fmap = FeatureExtractor(model, classifier, feature)(x).feature_map
    finally:
        for h in handles:
            h.remove()
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return Footprint(
        kept=sum(seen.values()) // TRACE_BATCH,
        feature=fmap[0].numel() * 4,
        feature_shape=tuple(fmap.shape[1:]),
        weights=weights,
    )


def available_bytes(device: torch.device) -> int | None:
    """Memory scoring can still take on ``device``: CUDA's free memory plus what torch's caching
    allocator holds unused; on the CPU ``MemAvailable`` (what can be allocated without swapping),
    capped by a cgroup limit (a container's) when there is one. ``None`` when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + idle)
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    if not found:  # no /proc (macOS): free pages, an underestimate where caches could be dropped
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap = int(Path(limit).read_text().split()[0])
            found.append(cap - int(Path(usage).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue  # no such cgroup, or "max" (no limit)
    return min(found) if found else None


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of scoring at batch ``n``: ``quadratic * n^2 + linear * n + fixed``."""

    quadratic: int
    linear: int
    fixed: int
    #: The traced networks, by role (``teacher``, ``student``): what the estimate covers.
    names: dict[str, str]

    def at(self, n: int) -> int:
        return self.quadratic * n * n + self.linear * n + self.fixed

    def largest_fitting(self, budget: int) -> int:
        """The largest batch whose estimate is within ``budget`` (0 when none is)."""
        a, b, c = self.quadratic, self.linear, self.fixed - budget
        if c > 0:
            return 0
        n = int(-c // b) if a == 0 else int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
        while n > 0 and self.at(n) > budget:
            n -= 1
        return n


#: A network to trace: (module, image size, classifier hook, feature hook, name).
_Net = tuple[nn.Module, int, str | None, str | None, str]


def _networks(scorer: Scorer, student: StudentLike | None) -> dict[str, _Net]:
    """CPU copies of the scorer's teacher and of ``student``, as the scorer would hook them."""
    cfg = scorer.config
    nets: dict[str, _Net] = {}
    if scorer.has_teacher:
        spec = scorer.teacher_spec
        nets["teacher"] = (
            create_model(spec, num_classes=cfg.num_classes).float()
            if isinstance(spec, str)
            else _cpu_copy(spec),
            cfg.teacher_image_size or cfg.image_size,
            cfg.teacher_classifier,
            cfg.teacher_feature,
            _name(spec),
        )
    if student is not None:
        nets["student"] = (
            scorer.builder(student, cfg.num_classes).to("cpu").float()
            if isinstance(student, str)
            else _cpu_copy(student),
            cfg.image_size,
            cfg.student_classifier,
            cfg.student_feature,
            _name(student),
        )
    return nets


def _cpu_copy(model: nn.Module | Any) -> nn.Module:
    """A float32 CPU module to trace: a callable is called, a given module copied (the caller's
    is never run: a train-mode pass would move its BatchNorm statistics)."""
    model = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
    return model.to("cpu").float()


def _name(spec: Any) -> str:
    return spec if isinstance(spec, str) else type(spec).__name__


def _traced(
    scorer: Scorer, student: StudentLike | None
) -> tuple[dict[str, _Net], dict[str, Footprint]] | None:
    """The networks and their footprints, or None when one cannot be built or run at batch 2
    (its own error then surfaces where it is really run)."""
    try:
        with torch.random.fork_rng(devices=[]):
            nets = _networks(scorer, student)
            traced = {role: footprint(*net[:4]) for role, net in nets.items()}
    except Exception:  # noqa: BLE001  # not estimable here: the real pass reports its own error
        return None
    return nets, traced


def estimate_probe_memory(
    scorer: Scorer, student: StudentLike | None = None, proxies: Sequence[str] = ("diswot",)
) -> Estimate | None:
    """The peak memory of scoring ``student`` with ``proxies`` (see the module docstring) as a
    function of the batch; ``student=None`` covers the teacher's pass and the relation matrices.
    ``None`` when a network cannot be traced."""
    found = _traced(scorer, student)
    return None if found is None else _estimate(scorer, found[1], student, proxies, found[0])


#: Scorers already checked, with what was checked (``"teacher"``; ``"student"`` or ``"grad"``).
_CHECKED: weakref.WeakKeyDictionary[Scorer, set[str]] = weakref.WeakKeyDictionary()


def check_probe_fits(
    scorer: Scorer, student: StudentLike | None = None, proxies: Sequence[str] = ()
) -> None:
    """Refuse, in one line, a probe batch whose scoring would not fit in memory, and warn once
    when the resolution collapses a network's pre-pool feature map (see the module docstring).

    Called by the scorer before its first teacher pass (``student=None``) and before its first
    student evaluation; each estimate is made once per scorer (again only when a proxy that takes
    gradients first appears).
    """
    grad = any(get_proxy(p).needs_grad for p in proxies)
    key = "teacher" if student is None else ("grad" if grad else "student")
    done = _CHECKED.setdefault(scorer, set())
    if key in done or (key == "teacher" and done) or (key == "student" and "grad" in done):
        return
    done.add(key)
    found = _traced(scorer, student)
    if found is None:
        return
    nets, traced = found
    _refuse_if_too_large(scorer, _estimate(scorer, traced, student, proxies, nets))
    if key in ("student", "grad"):  # the teacher's map too: both are traced here
        _warn_collapsed(scorer.image_size, traced, nets)


def _estimate(
    scorer: Scorer,
    traced: dict[str, Footprint],
    student: StudentLike | None,
    proxies: Sequence[str],
    nets: dict[str, _Net],
) -> Estimate:
    """The peak of the three phases of scoring: the teacher's pass; a student's pass (a proxy that
    takes gradients holds the activations twice, with their gradients) with the teacher's
    features kept; the metrics, which read both feature maps in float64. The relation matrices
    count when a proxy reads the teacher (the DisWOT family), or before any student is known."""
    specs = [get_proxy(p) for p in proxies]
    grad = any(p.needs_grad for p in specs)
    relation = scorer.has_teacher and (student is None or any(p.needs_teacher for p in specs))
    cfg = scorer.config
    image = 3 * cfg.image_size**2 * 4
    t_size = cfg.teacher_image_size or cfg.image_size
    batch = 2 * image + (3 * t_size**2 * 4 if t_size != cfg.image_size else 0)  # drawn + layout
    t, s = traced.get("teacher"), traced.get("student")
    phases = [t.kept] if t else []
    held = t.feature if t else 0
    if s is not None:
        phases.append(held + s.kept * (2 if grad else 1))
        phases.append(held + s.feature + 2 * (held + s.feature))
    return Estimate(
        quadratic=RELATION_MATRICES * 8 if relation else 0,
        linear=batch + max(phases, default=0),
        fixed=sum(f.weights for f in traced.values()),
        names={role: net[4] for role, net in nets.items()},
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def _refuse_if_too_large(scorer: Scorer, estimate: Estimate) -> None:
    n = scorer.batch_size
    need = estimate.at(n)
    have = available_bytes(scorer.device)
    if have is None or need <= have:
        return
    nets = " and ".join(f"{role} {name}" for role, name in estimate.names.items())
    parts = f"activations of {nets or 'the networks'} at {scorer.image_size} px "
    parts += f"~{_gib(estimate.linear * n)}"
    if estimate.quadratic:
        parts += f", {n:,} x {n:,} relation matrices ~{_gib(estimate.quadratic * n * n)}"
    fits = estimate.largest_fitting(have)
    hint = f"lower --batch-size (about {fits:,} fits)" if fits >= 2 else "free memory"
    raise DiswotError(
        f"batch {n:,} needs ~{_gib(need)} ({parts}), {_gib(have)} available on "
        f"{scorer.device}; {hint}"
    )


def _warn_collapsed(
    image_size: int,
    traced: dict[str, Footprint],
    nets: dict[str, tuple[nn.Module, int, str | None, str | None, str]],
) -> None:
    """Warn when a network's pre-pool map is 1 x 1 at this resolution while larger images give it
    more: say how much it downsamples (traced again at :data:`STRIDE_PROBE` px) and which
    ``--image-size`` gives every network a 2 x 2 map."""
    found: list[tuple[str, int]] = []
    for role, fp in traced.items():
        model, size, classifier, feature, name = nets[role]
        if not fp.collapsed or size >= STRIDE_PROBE:
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                wide = footprint(model, STRIDE_PROBE, classifier, feature).feature_shape
        except Exception:  # noqa: BLE001  # a network that takes one size only: nothing to advise
            continue
        if len(wide) == 3 and wide[1] > 1:
            found.append((f"{role} {name}", STRIDE_PROBE // wide[1]))
    if not found:
        return
    which = " and of ".join(f"{net} to 1x1 (it downsamples {stride}x)" for net, stride in found)
    print(
        f"diswot: warning: --image-size {image_size} collapses the pre-pool feature map of "
        f"{which}: the relation term M_r then compares one position per image; use "
        f"--image-size {2 * max(stride for _, stride in found)} or more for a 2x2 map",
        file=sys.stderr,
    )
