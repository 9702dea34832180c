"""Scoring students against a teacher without training.

:class:`Scorer` owns everything that is shared across candidates: the probe batch of each seed and the
teacher side of the DisWOT metrics (pre-pool features and closed-form classifier gradient), computed
once per seed and reused for every student. For each student and seed it builds a
:class:`StudentProbe`, which constructs and initialises the student under a seed, runs **one** forward
pass (BN in train mode, no autograd) and lazily evaluates whatever proxies are asked of it.

Seeds: seed ``s`` selects the probe batch, the teacher's init (``s * 1000 + 1``) and the student's init
(``s * 1000 + 2``). Teacher and student never share an init seed, so a student of the teacher's own
architecture is a *different* random network, as in the paper.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.data import probe_batch
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor, Features
from diswot.metrics import Reference, SemanticMode, classifier_gradient, diswot_score
from diswot.models import create_model, init_weights, reinit_covers
from diswot.models.cost import ModelCost, profile, profile_arch
from diswot.proxies import get_proxy
from diswot.runtime import resolve_device

StudentLike = str | nn.Module | Callable[[], nn.Module]


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 convolutions and matmuls on CUDA while scoring.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs, which rounds
    their inputs to 10 mantissa bits: with it, DisWOT scores on an H200 differed from the CPU's by
    up to 2.7% (Kendall 0.9989 over 60 NB201 cells). Scores are meant to be fp32, so TF32 is off
    inside scoring and the caller's settings are restored after. No effect on the CPU.
    """
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


#: ``--precision`` names and the dtype of the student's forward pass under autocast. fp16 is named
#: only to be refused with its reason (see :func:`check_precision`).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str) -> None:
    """Refuse a precision that cannot score: an unknown one, or fp16.

    Random networks are where fp16 breaks: activations pass its largest value (65504) in some NB201
    cells, and the overflow does not surface as NaN, the scores just go wrong. Measured on 100 NB201
    cells (``benchmarks/precision.py``): under the paper's N(0,1) init 14 cells overflowed, Kendall
    with the fp32 scores 0.82, one score off by 19x; under PyTorch's default init 2 cells, one M_r
    off by 5.5x. bf16 keeps fp32's exponent range: Kendall 0.98-0.99, no overflow.
    """
    if precision not in PRECISIONS:
        raise DiswotError(f"unknown precision '{precision}'; use fp32 or bf16")
    if precision == "fp16":
        raise DiswotError(
            "fp16 overflows in random networks (inf activations in 14 of 100 NB201 cells under "
            "N(0,1) init, 2 under the default init) and silently corrupts scores; use "
            "--precision bf16"
        )


#: ``--engine`` names: how a named student's forward pass is produced. ``modules`` builds (or
#: recycles) the student as an ``nn.Module``, for any space. ``supernet`` runs it from a space's
#: preallocated weight store instead (NB201: :mod:`diswot.models.nb201_supernet`): no construction
#: and, on CUDA, one replayed graph per forward, with the same features bit for bit. ``auto`` (the
#: default) takes ``supernet`` where the space has one and the init is gaussian, else ``modules``.
ENGINES: tuple[str, ...] = ("auto", "modules", "supernet")


class Supernet(Protocol):
    """What ``--engine supernet`` needs from a space's supernet (see :data:`ENGINES`)."""

    #: Whether :meth:`prefetch` prepares weights ahead (on CUDA: a draw thread), so hints pay.
    overlap: bool

    def load(self, arch: str, seed: int) -> None:
        """Make ``arch``, initialised as ``init_weights`` would under ``seed``, the current one."""

    def features(self, x: Tensor, dtype: torch.dtype | None = None) -> Features:
        """The current candidate's features on ``x`` (under autocast to ``dtype`` if given)."""

    def prefetch(self, arch: str, seed: int) -> None:
        """A hint: ``load(arch, seed)`` comes next, its weights may be prepared meanwhile."""


def check_engine(engine: str, supernet: object | None, init: str) -> None:
    """Refuse an engine this run cannot use, before any work: an unknown name, ``supernet`` on a
    space without one, or ``supernet`` with an init it does not reproduce."""
    if engine not in ENGINES:
        raise DiswotError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if engine == "supernet":
        if supernet is None:
            raise DiswotError(
                "--engine supernet exists for the nb201 space only; use --engine modules"
            )
        if init != "gaussian":
            raise DiswotError(
                "--engine supernet reproduces the gaussian init only; use --init gaussian or "
                "--engine modules"
            )


def resolve_engine(
    engine: str, supernet: object | None, init: str, custom_hooks: bool = False
) -> str:
    """The engine a run uses (``auto`` resolved), after :func:`check_engine`'s refusals."""
    check_engine(engine, supernet, init)
    if engine == "supernet" and custom_hooks:
        raise DiswotError(
            "--engine supernet computes the space's own features; drop the student "
            "classifier/feature hooks or use --engine modules"
        )
    auto = engine == "auto" and supernet is not None and init == "gaussian" and not custom_hooks
    return "supernet" if engine == "supernet" or auto else "modules"


#: Values of run settings added after run folders were first written: a ``rank`` or ``search``
#: folder that lacks one was written with this value (before ``--precision``, everything was fp32).
SETTINGS_ADDED = {"precision": "fp32"}


def stored_setting(settings: dict, key: str) -> object:
    """``settings[key]`` of a run folder, or what a folder written before ``key`` existed used."""
    return settings.get(key, SETTINGS_ADDED.get(key))


#: Numerical failures of a proxy on one network: its value is NaN (ranked last), not a crash.
NUMERICAL_FAILURES = (RuntimeError, ValueError, FloatingPointError, ZeroDivisionError)


def proxy_value(name: str, probe: StudentProbe) -> float:
    """One proxy on one probe, in strict fp32; a numerical failure gives NaN, a user error
    (:class:`DiswotError`) propagates. The one policy every scoring path follows."""
    spec = get_proxy(name)
    try:
        with strict_fp32():
            return float(spec.fn(probe))
    except DiswotError:
        raise
    except NUMERICAL_FAILURES:
        return math.nan


def _needs_grad(proxies: Sequence[str]) -> bool:
    return any(get_proxy(p).needs_grad for p in proxies)


def module_label(model: nn.Module) -> str:
    """How run folders record a teacher given as a module: its class and a digest of its
    architecture (``repr``: layers and shapes, not weights, which the probe re-initialises), so
    resuming with another architecture of the same class is refused, not silently mixed."""
    digest = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
    return f"{type(model).__name__}#{digest}"


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _seed_of(seed: int, role: int) -> int:
    return seed * 1000 + role


@dataclass
class TeacherCache:
    """Teacher-side quantities for one seed: pre-pool features and classifier gradient."""

    feature_map: Tensor
    grad: Tensor
    logits: Tensor
    seconds: float

    _derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def reference(self) -> Reference:
        """The teacher's half of the DisWOT metrics, computed once for every student."""
        return Reference(self.grad, self.feature_map)

    def derived(self, name: str, compute: Callable[[TeacherCache], Any]) -> Any:
        """``compute(self)``, once: a teacher-side term a proxy reuses for every student."""
        if name not in self._derived:
            self._derived[name] = compute(self)
        return self._derived[name]


@dataclass
class ScoreResult:
    """Proxy values of one student, averaged over seeds (``values``) with ``std`` and per-seed detail."""

    arch: str
    values: dict[str, float]
    std: dict[str, float]
    per_seed: list[dict[str, float]]
    params: int
    flops: int
    seconds: float
    info: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "values": self.values,
            "std": self.std,
            "per_seed": self.per_seed,
            "params": self.params,
            "flops": self.flops,
            "seconds": self.seconds,
            **({"info": self.info} if self.info else {}),
        }


class StudentProbe:
    """One student under one seed: built, initialised and forwarded at most once, on demand."""

    def __init__(self, scorer: Scorer, student: StudentLike, seed: int) -> None:
        self.scorer = scorer
        self.student = student
        self.seed = seed
        self.inputs, self.labels = scorer.batch(seed)
        self._owned_module = isinstance(student, nn.Module)
        #: A finished evaluation's (student, network), recycled if this probe builds its student.
        self._spare: tuple[str, nn.Module] | None = None

    @property
    def num_classes(self) -> int:
        return self.scorer.num_classes

    @property
    def device(self) -> torch.device:
        return self.scorer.device

    @property
    def init_seed(self) -> int:
        """The seed the student's weights are drawn under."""
        return _seed_of(self.seed, 2)

    def fresh_model(self) -> nn.Module:
        """A newly built, initialised student (for proxies that change weights or need gradients)."""
        return self.scorer.build(self.student, self.init_seed)

    @cached_property
    def model(self) -> nn.Module:
        spare, self._spare = self._spare, None
        if spare is not None:  # recycle the last evaluation's network (Scorer.evaluation_probe)
            arch, model = spare
            if arch != self.student:
                rebuild = self.scorer.rebuilder
                model = rebuild(model, self.student, self.num_classes) if rebuild else None  # type: ignore[arg-type]
            if model is not None:
                # Re-drawn under this probe's seed: the weights a fresh build would have. A
                # retargeted network holds newly built ops: they get the layout a fresh build has.
                return self.scorer.layout(init_weights(model, self.scorer.init, self.init_seed))
        return self.fresh_model()

    @cached_property
    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(
            self.model, self.scorer.student_classifier, self.scorer.student_feature
        )

    def _supernet_features(self, supernet: Supernet) -> Features:
        supernet.load(self.student, self.init_seed)  # type: ignore[arg-type]  # a str here
        upcoming = self.scorer._upcoming(self.student, self.seed)  # type: ignore[arg-type]
        if upcoming is not None:  # its weights are drawn while this one is scored
            supernet.prefetch(upcoming[0], _seed_of(upcoming[1], 2))
        with strict_fp32(), torch.no_grad():
            return supernet.features(self.inputs, PRECISIONS[self.scorer.precision])

    @cached_property
    def features(self) -> Features:
        supernet = self.scorer.supernet_for(self.student)
        f = None
        if supernet is not None:  # the same features without building the student
            try:
                f = self._supernet_features(supernet)
            except DiswotError:
                raise
            except Exception as e:
                if not self.scorer._supernet_fallback:
                    raise
                self.scorer._drop_supernet(e)  # then build the student: the same numbers
        if f is None:
            self.model.train()
            with strict_fp32(), torch.no_grad(), self.scorer.autocast():
                f = self.extractor(self.inputs)
        if f.logits.shape[1] != self.num_classes:  # before any proxy reads it (kd would be NaN)
            raise DiswotError(
                f"student outputs {f.logits.shape[1]} classes but the teacher/probe has "
                f"{self.num_classes}; build the student with num_classes={self.num_classes}"
            )
        # Under bf16 the pass ran in low precision; every metric reads fp32 (or float64).
        return f if f.logits.dtype == torch.float32 else Features(*(t.float() for t in f))

    @cached_property
    def grad(self) -> Tensor:
        f = self.features  # its class count already checked
        return classifier_gradient(f.logits, f.pooled, self.labels)

    @cached_property
    def teacher(self) -> TeacherCache:
        return self.scorer.teacher(self.seed)

    @cached_property
    def diswot(self) -> dict[str, float | str]:
        t = self.teacher
        return diswot_score(
            t.reference, None, self.grad, self.features.feature_map, self.scorer.semantic
        )

    @cached_property
    def cost(self) -> ModelCost:
        # A named student is costed from its name (cached); only a module needs the built model.
        model = None if isinstance(self.student, str) else self.model
        return self.scorer.cost(self.student, model)


class Scorer:
    """Score students for one teacher on seeded probe batches.

    Args:
        teacher: a model name for :func:`~diswot.models.create_model`, an ``nn.Module`` (used as given,
            after the chosen init), or ``None`` for teacher-free proxies only.
        num_classes: classes of the probe labels, the teacher and every student.
        batch_size: probe batch size (at least 2).
        seeds: seeds to average over (a count ``n`` means ``0..n-1``); each gives its own batch,
            teacher init and student init.
        init: ``gaussian`` (the paper's N(0,1)) or ``default`` (PyTorch's init under the seed).
        data: ``synthetic`` or ``cifar10``/``cifar100`` (then ``data_root`` is needed).
        semantic: ``auto`` (channel form when widths match, class-relation form otherwise),
            ``channel`` or ``class``.
        builder: ``f(arch, num_classes) -> nn.Module`` for string students (a search space's
            ``build``); defaults to :func:`~diswot.models.create_model`.
        coster: ``f(arch, num_classes, input_size) -> ModelCost`` for string students; defaults to
            :func:`~diswot.models.cost.profile_arch`.
        teacher_image_size: resolution the teacher sees when it differs from the students' (a CIFAR
            teacher at 32 px scoring 224 px ViT students): the same probe batch, bilinearly resized.
        rebuilder: ``f(model, arch, num_classes) -> model | None`` turning a finished student's
            network into ``arch``'s in place (a space's ``rebuild``), to skip construction.
        precision: ``fp32`` (default) or ``bf16``: the dtype of the student's shared forward pass
            under autocast (the pass the DisWOT and distillation proxies read). The teacher,
            computed once per seed, the metrics and the proxies that run their own passes stay
            fp32. fp16 is refused (it overflows; :func:`check_precision`).
        channels_last: hold networks and probe batches in the channels-last memory format
            (``None``: on the CPU only, where oneDNN's convolutions run about 2x faster in it).
            The same values either way up to float rounding; every backend of one run uses the
            same format, so they still agree bit for bit.
        engine: ``auto`` (default), ``modules`` or ``supernet``: how named students' shared
            forward pass is produced (see :data:`ENGINES`); ``supernet`` needs a space that
            provides one (``supernet(num_classes, device, channels_last)``, NB201), the gaussian
            init and the space's own feature hooks. Students given as modules, and proxies that
            run their own passes, always use modules. Every engine gives the same scores.
        supernet: the space's supernet factory (:meth:`for_space` passes it).
    """

    def __init__(
        self,
        teacher: str | nn.Module | None = "resnet110",
        *,
        num_classes: int = 100,
        batch_size: int = 64,
        seeds: Sequence[int] | int = (0,),
        init: str = "gaussian",
        data: str = "synthetic",
        data_root: str | None = None,
        image_size: int = 32,
        device: str | torch.device = "cpu",
        semantic: SemanticMode = "auto",
        teacher_classifier: str | None = None,
        teacher_feature: str | None = None,
        student_classifier: str | None = None,
        student_feature: str | None = None,
        builder: Callable[[str, int], nn.Module] | None = None,
        coster: Callable[[str, int, tuple[int, int, int, int]], ModelCost] | None = None,
        teacher_image_size: int | None = None,
        rebuilder: Callable[[nn.Module, str, int], nn.Module | None] | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
        engine: str = "auto",
        supernet: Callable[[int, torch.device, bool], Supernet] | None = None,
    ) -> None:
        if not _is_int(num_classes) or num_classes < 2:
            raise DiswotError(
                f"--num-classes must be an integer of at least 2, got {num_classes!r}"
            )
        if not _is_int(batch_size) or batch_size < 2:
            raise DiswotError(
                "--batch-size must be an integer of at least 2 (the relation term compares "
                f"samples), got {batch_size!r}"
            )
        if _is_int(seeds):  # a count, as run_search and run_rank take it
            seeds = range(seeds)  # type: ignore[arg-type]
        if not seeds:
            raise DiswotError("--seeds must be at least 1 (give at least one probe seed)")
        if init not in ("gaussian", "default"):
            raise DiswotError(f"unknown init '{init}'; use gaussian or default")
        if semantic not in ("auto", "channel", "class"):
            raise DiswotError(f"unknown semantic form '{semantic}'; use auto, channel or class")
        if torch.get_default_dtype() != torch.float32:
            # Probe batches are float32; networks built under another default would meet them
            # with float64 weights and every proxy would fail as NaN.
            raise DiswotError(
                f"torch's default dtype is {torch.get_default_dtype()}; diswot scores float32 "
                "networks: call torch.set_default_dtype(torch.float32) first"
            )
        check_precision(precision)
        custom_hooks = student_classifier is not None or student_feature is not None
        #: The engine in use, ``auto`` resolved.
        self.engine = resolve_engine(engine, supernet, init, custom_hooks)
        self.precision = precision
        self._supernet_factory = supernet
        self._supernet: Supernet | None = None
        self.device = resolve_device(device)
        #: On CUDA, an unexpected error of the supernet falls back to built networks (same
        #: scores) instead of ending the run: a GPU stack unlike the H100/H200 ones it ran on
        #: should cost speed, not a long run.
        self._supernet_fallback = self.device.type == "cuda"
        #: Channels-last convolutions on the CPU: oneDNN's fast path (an NB201 candidate at batch 64
        #: scores 1.9x faster, ``benchmarks/precision.py``); off on CUDA, where it was slower
        #: (23.7 against 14.9 ms per candidate on an H200, ``benchmarks/gpu.py`` stage precision).
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.teacher_spec = teacher
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.seeds = tuple(int(s) for s in seeds)
        self.init = init
        self.data = data
        self.data_root = data_root
        self.image_size = image_size
        self.semantic = semantic
        self.teacher_classifier = teacher_classifier
        self.teacher_feature = teacher_feature
        self.student_classifier = student_classifier
        self.student_feature = student_feature
        self.builder = builder or (lambda arch, k: create_model(arch, num_classes=k))
        self.coster = coster or profile_arch
        self.teacher_image_size = teacher_image_size
        self._batches: dict[int, tuple[Tensor, Tensor]] = {}
        self._teachers: dict[int, TeacherCache] = {}
        self.rebuilder = rebuilder
        #: (student, network) of the last evaluation, for the next one to recycle.
        self._spare: tuple[str, nn.Module] | None = None
        self._expected: collections.deque[tuple[str, int]] = collections.deque()
        self._then: str | None = None  # the student after the current one (expect_next)

    @classmethod
    def for_space(cls, space: object, teacher: str | nn.Module | None, **kwargs: object) -> Scorer:
        """A Scorer wired to a search space: its builder, cost model, feature hooks, the teacher's
        resolution and the semantic form the space asks for (all optional attributes)."""
        classifier, feature = getattr(space, "feature_hooks", (None, None))
        kwargs.setdefault("semantic", getattr(space, "semantic", "auto"))
        kwargs.setdefault("teacher_image_size", getattr(space, "teacher_image_size", None))
        return cls(
            teacher,
            builder=space.build,  # type: ignore[attr-defined]
            coster=lambda arch, k, size: space.cost(arch, k, size[-1]),  # type: ignore[attr-defined]
            student_classifier=classifier,
            student_feature=feature,
            rebuilder=getattr(space, "rebuild", None),
            supernet=getattr(space, "supernet", None),
            **kwargs,  # type: ignore[arg-type]
        )

    # -- shared state ------------------------------------------------------------------------------
    @property
    def has_teacher(self) -> bool:
        return self.teacher_spec is not None

    @property
    def input_size(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    def supernet_for(self, student: StudentLike) -> Supernet | None:
        """The supernet that produces ``student``'s forward pass, or None (``modules`` engine, or a
        student given as a module). Built on first use, then shared by every candidate."""
        if self.engine != "supernet" or not isinstance(student, str):
            return None
        if self._supernet is None:
            factory = self._supernet_factory
            assert factory is not None  # the engine is supernet only with a factory
            self._supernet = factory(self.num_classes, self.device, self.channels_last)
        return self._supernet

    def _drop_supernet(self, error: Exception) -> None:
        """Score with built networks from now on, after the supernet failed on this device.

        Only on CUDA (its graph, pinned copies and draw thread, run on two GPU types so far): the
        modules engine gives the same scores, so nothing changes but speed, and the note says why.
        """
        print(
            f"diswot: note: the NB201 supernet failed on {self.device} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "scoring with built networks instead (the same scores, slower); please report it",
            file=sys.stderr,
        )
        self.engine = "modules"
        self._supernet = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the student's forward pass (a no-op for fp32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def batch(self, seed: int) -> tuple[Tensor, Tensor]:
        if seed not in self._batches:
            x, y = probe_batch(
                self.data,
                batch_size=self.batch_size,
                num_classes=self.num_classes,
                seed=seed,
                data_root=self.data_root,
                image_size=self.image_size,
                device=self.device,
            )
            self._batches[seed] = (self.layout(x), y)
        return self._batches[seed]

    def build(self, spec: StudentLike, seed: int, *, teacher: bool = False) -> nn.Module:
        """Build (or take) a model and initialise it deterministically under ``seed``.

        Students given by name go through the space's ``builder``; a teacher given by name always
        through :func:`~diswot.models.create_model`, since teachers live outside the search space.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if isinstance(spec, str):
                make = (lambda a, k: create_model(a, num_classes=k)) if teacher else self.builder
                model = make(spec, self.num_classes)
            elif isinstance(spec, nn.Module):
                model = copy.deepcopy(spec)  # the caller's module (maybe trained) stays as it is
            elif callable(spec):
                model = spec()
            else:
                raise DiswotError(f"cannot build a model from {type(spec).__name__}")
            init_weights(model, self.init, seed)
        return self.layout(model.to(self.device))

    @overload
    def layout(self, x: nn.Module) -> nn.Module: ...
    @overload
    def layout(self, x: Tensor) -> Tensor: ...
    def layout(self, x: nn.Module | Tensor) -> nn.Module | Tensor:
        """A module or 4-D batch in the scoring memory format: channels-last when
        :attr:`channels_last` is on (NB201 scoring 1.9x faster on a CPU), otherwise unchanged."""
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

    def teacher(self, seed: int) -> TeacherCache:
        """Teacher features and gradient for ``seed``, computed once and reused for every student."""
        if not self.has_teacher:
            raise DiswotError("this proxy needs a teacher; pass --teacher NAME")
        if seed not in self._teachers:
            t0 = time.perf_counter()
            model = self.build(self.teacher_spec, _seed_of(seed, 1), teacher=True)
            x, y = self.batch(seed)
            t_size = self.teacher_image_size
            if t_size and t_size != x.shape[-1]:
                x = F.interpolate(
                    x, size=(t_size, t_size), mode="bilinear", align_corners=False, antialias=True
                )
            model.train()
            with (
                strict_fp32(),
                torch.no_grad(),
                FeatureExtractor(model, self.teacher_classifier, self.teacher_feature) as fx,
            ):
                f = fx(x)
            if f.logits.shape[1] != self.num_classes:
                raise DiswotError(
                    f"teacher outputs {f.logits.shape[1]} classes but {self.num_classes} were asked; "
                    f"build the teacher with num_classes={self.num_classes}"
                )
            self._teachers[seed] = TeacherCache(
                feature_map=f.feature_map.detach(),
                grad=classifier_gradient(f.logits, f.pooled, y),
                logits=f.logits.detach(),
                seconds=time.perf_counter() - t0,
            )
        return self._teachers[seed]

    def cost(self, spec: StudentLike, model: nn.Module | None = None) -> ModelCost:
        if isinstance(spec, str):
            return self.coster(spec, self.num_classes, self.input_size)
        if model is None:
            model = spec if isinstance(spec, nn.Module) else self.build(spec, 0)
        return profile(model, self.input_size)

    # -- scoring -----------------------------------------------------------------------------------
    def probe(self, student: StudentLike, seed: int) -> StudentProbe:
        return StudentProbe(self, student, seed)

    def evaluation_probe(
        self, student: StudentLike, proxies: Sequence[str], seed: int
    ) -> StudentProbe:
        """The probe for one evaluation (pair it with :meth:`release`).

        Construction, not the forward, bounds scoring on a GPU (17 of 28 ms per NB201 candidate on
        an H200), so a finished evaluation's network is recycled when that cannot change a number:

        * the next seed of the same named student re-initialises it instead of building it again
          (for networks :func:`~diswot.models.reinit_covers` vouches for);
        * another architecture of a space with a ``rebuild(model, arch, num_classes)`` (NB201)
          turns it into the new architecture in place (on the network's device), then
          re-initialises it.

        Either way the weights equal a fresh build's, bit for bit (tests/test_seed_reuse.py). Only
        evaluations whose proxies need no gradients hand networks on or take them, so a recycled
        network carries no state but its rewritten weights. The network is taken when the probe
        first builds its student, so an evaluation that builds none (the supernet engine) hands
        it on untouched.
        """
        probe = self.probe(student, seed)
        spare, self._spare = self._spare, None
        if spare is not None and isinstance(student, str) and not _needs_grad(proxies):
            probe._spare = spare
        return probe

    def release(self, probe: StudentProbe, proxies: Sequence[str]) -> None:
        """End an evaluation; keep its network for the next one if that is safe (see above)."""
        model = probe.__dict__.get("model")
        if model is None:
            self._spare = probe._spare  # nothing built: the unused network waits for the next
        elif (
            isinstance(probe.student, str)
            and (len(self.seeds) > 1 or self.rebuilder is not None)
            and not _needs_grad(proxies)
            and reinit_covers(model)
        ):
            self._spare = (probe.student, model)

    def expect(self, evaluations: Iterable[tuple[StudentLike, int]]) -> None:
        """The ``(student, seed)`` evaluations that will follow, in order (``rank`` gives its
        whole to-do list). Only a hint: with the supernet engine on CUDA, the next candidate's
        weights are then drawn on a CPU thread while the GPU scores the current one. Evaluating
        in another order is still correct, just not overlapped."""
        self._expected = collections.deque(
            (s, int(seed)) for s, seed in evaluations if isinstance(s, str)
        )

    def expect_next(self, student: StudentLike) -> None:
        """The student the next :meth:`score` call will be for (a search's best guess of its next
        proposal, made while the current one is scored). A hint, like :meth:`expect`."""
        self._then = student if isinstance(student, str) else None

    @property
    def draws_ahead(self) -> bool:
        """Whether hints pay: the supernet engine with its draw thread, which draws the next
        candidate's weights while the device scores the current one. Off by default (NB201's
        supernet slices weights out of per-seed streams, nothing to draw ahead), and ``False``
        until the supernet exists: asked per candidate, only the first hint can be missed."""
        return self.engine == "supernet" and self._supernet is not None and self._supernet.overlap

    def _upcoming(self, student: str, seed: int) -> tuple[str, int] | None:
        """Mark ``(student, seed)`` as evaluated in :meth:`expect`'s list; the one after it."""
        queue = self._expected
        for i in range(min(len(queue), 4)):  # tolerate a few skipped entries, not a reordering
            if queue[i] == (student, seed):
                for _ in range(i + 1):
                    queue.popleft()
                return queue[0] if queue else None
        return None

    def evaluate(self, student: StudentLike, proxies: Iterable[str], seed: int) -> dict[str, float]:
        """Values of ``proxies`` for one student and one seed; a failing proxy gives NaN, not a crash."""
        proxies = list(proxies)
        probe = self.evaluation_probe(student, proxies, seed)
        out: dict[str, float] = {}
        for name in proxies:
            out[name] = proxy_value(name, probe)
        self.release(probe, proxies)
        if "diswot" in probe.__dict__:
            out["_semantic_form"] = probe.diswot["semantic_form"]  # type: ignore[assignment]
        return out

    def score(
        self, student: StudentLike, proxies: Iterable[str] = ("diswot", "ms", "mr")
    ) -> ScoreResult:
        """Evaluate ``proxies`` over every seed; returns means, stds and per-seed values."""
        proxies = list(proxies)
        t0 = time.perf_counter()
        then, self._then = self._then, None
        self.expect((a, s) for a in (student, then) if a is not None for s in self.seeds)
        per_seed = []
        info: dict[str, str] = {}
        for s in self.seeds:
            vals = self.evaluate(student, proxies, s)
            form = vals.pop("_semantic_form", None)
            if form is not None:
                info["semantic_form"] = str(form)
            per_seed.append(vals)
        values, std = {}, {}
        for p in proxies:
            xs = torch.tensor([v[p] for v in per_seed], dtype=torch.float64)
            values[p] = float(xs.mean())
            std[p] = float(xs.std(unbiased=False)) if len(xs) > 1 else 0.0
        cost = self.cost(student)
        name = student if isinstance(student, str) else type(student).__name__
        return ScoreResult(
            arch=name,
            values=values,
            std=std,
            per_seed=per_seed,
            params=cost.params,
            flops=cost.flops,
            seconds=time.perf_counter() - t0,
            info=info,
        )
