"""Scoring students against a teacher without training: :class:`Scorer`.

The scorer owns everything shared across candidates: the probe batch of each seed and the teacher
side of the DisWOT metrics (pre-pool features and closed-form classifier gradient), computed once
per seed and reused for every student. For each student and seed it builds a
:class:`~diswot.scoring.student.StudentProbe`, which constructs and initialises the student under
a seed, runs **one** forward pass (BN in train mode, no autograd) and lazily evaluates whatever
proxies are asked of it. Seeds are described in :mod:`diswot.scoring.batch`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from diswot import config as configs
from diswot.config import ProbeConfig
from diswot.errors import DiswotError
from diswot.features import FeatureExtractor, Features
from diswot.models import create_model, init_weights, reinit_covers
from diswot.models.cost import ModelCost, profile, profile_arch
from diswot.runtime import resolve_device
from diswot.scoring.batch import TEACHER, Layout, ProbeBatches, seed_of
from diswot.scoring.engine import Supernet, SupernetFactory, resolve_engine
from diswot.scoring.memory import check_probe_fits, out_of_memory
from diswot.scoring.numerics import (
    PRECISIONS,
    autocast,
    check_precision,
    needs_grad,
    proxy_value,
    strict_fp32,
)
from diswot.scoring.student import StudentLike, StudentProbe
from diswot.scoring.teacher import TeacherCache, resolve_teacher_init, teacher_cache

if TYPE_CHECKING:
    from diswot.scoring.reference import ReferenceSample

__all__ = ["ScoreResult", "Scorer"]

Builder = Callable[[str, int], nn.Module]
Coster = Callable[[str, int, tuple[int, int, int, int]], ModelCost]
Rebuilder = Callable[[nn.Module, str, int], "nn.Module | None"]


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


class Scorer:
    """Score students for one teacher on seeded probe batches.

    Args:
        teacher: a model name for :func:`~diswot.models.create_model`, an ``nn.Module`` (a trained
            teacher, say: see ``teacher_init``), or ``None`` for teacher-free proxies only.
        teacher_init: ``"keep"`` scores a module with its own weights (a copy: the module given is
            never modified or run); ``"random"`` re-initialises a copy under each probe seed with
            ``init``, the paper's setting. The default, ``None``, is ``keep`` for a module and
            ``random`` for a name (untrained, it has nothing to keep). Until this option existed
            a module was always re-initialised: pass ``teacher_init="random"`` for those scores.
            Either way the teacher runs with BatchNorm in train mode, normalising by the probe
            batch's own statistics like the students (:func:`~diswot.scoring.teacher.teacher_cache`
            says why). A checkpoint file is read by
            :func:`~diswot.scoring.teacher.load_teacher_checkpoint`.
        config: the probe settings (:class:`~diswot.config.ProbeConfig`; its defaults if
            ``None``). ``seeds`` may be a count ``n``, meaning ``0..n-1``; ``device`` a
            ``torch.device``. See ``ProbeConfig``'s fields for each setting; in short:
            ``precision`` ``bf16`` runs the students' shared forward pass under autocast (the
            teacher, the metrics and proxies that run their own passes stay fp32; fp16 is
            refused, :func:`~diswot.scoring.numerics.check_precision`); ``channels_last``
            ``None`` means on the CPU only, where oneDNN is fastest in it (the same values either
            way up to float rounding, and every backend of one run uses the same format);
            ``engine`` is ``auto``, ``modules`` or ``supernet``
            (:mod:`diswot.scoring.engine`; every engine gives the same scores).
        space: a search space to wire in (optional attributes): its ``build``, ``cost``,
            ``rebuild`` and ``supernet``, and the settings it asks for (``feature_hooks`` for the
            student hooks, ``semantic``, ``teacher_image_size``), which replace the config's.
        builder: ``f(arch, num_classes) -> nn.Module`` for named students (default: the space's
            ``build``, else :func:`~diswot.models.create_model`).
        coster: ``f(arch, num_classes, input_size) -> ModelCost`` for named students (default: the
            space's ``cost``, else :func:`~diswot.models.cost.profile_arch`).
        rebuilder: ``f(model, arch, num_classes) -> model | None`` turning a finished student's
            network into ``arch``'s in place (a space's ``rebuild``), to skip construction.
        supernet: ``f(num_classes, device, channels_last)`` giving the supernet of
            ``--engine supernet`` (a space's ``supernet``).
        **settings: ``ProbeConfig`` fields, replacing the config's (and the space's).
    """

    def __init__(
        self,
        teacher: str | nn.Module | None = "resnet110",
        config: ProbeConfig | None = None,
        *,
        space: object | None = None,
        builder: Builder | None = None,
        coster: Coster | None = None,
        rebuilder: Rebuilder | None = None,
        supernet: SupernetFactory | None = None,
        teacher_init: str | None = None,
        **settings: Any,
    ) -> None:
        #: ``keep`` (the teacher's own weights) or ``random`` (re-initialised per probe seed).
        self.teacher_init: str = resolve_teacher_init(teacher, teacher_init)
        if space is not None:
            classifier, feature = getattr(space, "feature_hooks", (None, None))
            asked = {
                "student_classifier": classifier,
                "student_feature": feature,
                "semantic": getattr(space, "semantic", "auto"),
                "teacher_image_size": getattr(space, "teacher_image_size", None),
            }
            settings = {**asked, **settings}
            builder = builder or space.build  # type: ignore[attr-defined]
            coster = coster or _space_coster(space)
            rebuilder = rebuilder or getattr(space, "rebuild", None)
            supernet = supernet or getattr(space, "supernet", None)
        cfg = configs.replace(config or ProbeConfig(), **settings)
        #: The settings scored under (``seeds`` as a tuple; device, layout and engine as asked:
        #: :attr:`device`, :attr:`channels_last` and :attr:`engine` hold what they resolved to).
        self.config: ProbeConfig = _checked(cfg)
        self.teacher_spec = teacher
        self.builder: Builder = builder or (lambda arch, k: create_model(arch, num_classes=k))
        self.coster: Coster = coster or profile_arch
        self.rebuilder = rebuilder
        custom_hooks = cfg.student_classifier is not None or cfg.student_feature is not None
        #: The engine in use, ``auto`` resolved (``modules`` after a supernet fallback).
        self.engine = resolve_engine(cfg.engine, supernet, cfg.init, custom_hooks)
        self.device = resolve_device(cfg.device)
        #: On CUDA, an unexpected error of the supernet falls back to built networks (the same
        #: scores) instead of ending the run: a GPU stack it has not run on should cost speed,
        #: not a long run. On the CPU its errors surface.
        self.supernet_fallback = self.device.type == "cuda"
        #: Channels-last networks and batches (``docs/scale.md``: faster on CPUs, slower on GPUs).
        self.channels_last: bool = (
            self.device.type == "cpu" if cfg.channels_last is None else cfg.channels_last
        )
        self.layout = Layout(self.channels_last)
        self.batch = ProbeBatches(self.config, self.device, self.layout)
        self._supernet_factory = supernet
        self._supernet: Supernet | None = None
        #: The search space wired in (``None`` without one): composites draw their reference
        #: samples from it (:meth:`reference`).
        self.space = space
        self._references: dict[str, ReferenceSample] = {}
        self._teachers: dict[int, TeacherCache] = {}
        #: (student, network) of the last evaluation, for the next one to recycle.
        self._spare: tuple[str, nn.Module] | None = None
        #: What the last :meth:`score_many` ran grouped and what one at a time, and why
        #: (:class:`~diswot.scoring.group.GroupReport`); ``None`` before the first.
        self.last_group: Any = None
        #: The grouped NB201 forward of :mod:`diswot.scoring.group`, made on first use.
        self._grouped: Any = None

    @classmethod
    def for_space(cls, space: object, teacher: str | nn.Module | None, **kwargs: Any) -> Scorer:
        """A Scorer wired to a search space (``Scorer(teacher, space=space, **kwargs)``)."""
        return cls(teacher, space=space, **kwargs)

    # -- settings ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.seeds

    @property
    def init(self) -> str:
        return self.config.init

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def precision(self) -> str:
        return self.config.precision

    @property
    def semantic(self) -> str:
        return self.config.semantic

    @property
    def has_teacher(self) -> bool:
        return self.teacher_spec is not None

    @property
    def input_size(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    # -- what a StudentProbe asks of its scorer ----------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the student's forward pass (a no-op for fp32)."""
        return autocast(self.device, self.precision)

    def student_extractor(self, model: nn.Module) -> FeatureExtractor:
        """A feature extractor of a student network, with the students' hooks."""
        cfg = self.config
        return FeatureExtractor(model, cfg.student_classifier, cfg.student_feature)

    def build(self, spec: StudentLike, seed: int, *, teacher: bool = False) -> nn.Module:
        """Build (or take) a model and initialise it deterministically under ``seed``.

        Students given by name go through the space's ``builder``; a teacher given by name always
        through :func:`~diswot.models.create_model`, since teachers live outside the search space.
        A teacher module kept as given (:attr:`teacher_init` ``keep``) is copied, not initialised.
        """
        if teacher and self.teacher_init == "keep" and isinstance(spec, nn.Module):
            return self.layout(copy.deepcopy(spec).to(self.device))
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

    def recycle(self, spare: tuple[str, nn.Module], student: str, seed: int) -> nn.Module | None:
        """``student``'s network under init seed ``seed`` made from a finished evaluation's
        ``spare = (its student, its network)``, or ``None`` when that cannot be done (another
        architecture and no ``rebuilder``, or the rebuilder refused): see
        :meth:`evaluation_probe`. The weights are the ones a fresh build would have."""
        arch, model = spare
        if arch != student:
            rebuild = self.rebuilder
            model = rebuild(model, student, self.num_classes) if rebuild else None  # type: ignore[assignment]
        if model is None:
            return None
        # Re-drawn under this seed. A retargeted network holds newly built ops: they get the
        # layout a fresh build has.
        return self.layout(init_weights(model, self.init, seed))

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

    def supernet_features(self, student: StudentLike, seed: int, x: Tensor) -> Features | None:
        """``student``'s features on ``x`` under init seed ``seed`` from the supernet engine, or
        ``None`` when the student is to be built (``modules`` engine, a module, or the supernet
        just failed on CUDA: see :attr:`supernet_fallback`)."""
        supernet = self.supernet_for(student)
        if supernet is None:
            return None
        try:
            supernet.load(student, seed)  # type: ignore[arg-type]  # a str here
            with strict_fp32(), torch.no_grad():
                return supernet.features(x, PRECISIONS[self.precision])
        except DiswotError:
            raise
        except Exception as e:
            if not self.supernet_fallback or out_of_memory(e):  # a smaller batch, not a fallback
                raise
            self._drop_supernet(e)  # then the student is built: the same numbers
            return None

    def _drop_supernet(self, error: Exception) -> None:
        """Score with built networks from now on, after the supernet failed on this device: the
        modules engine gives the same scores, so nothing changes but speed; the note says why."""
        print(
            f"diswot: note: the NB201 supernet failed on {self.device} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "scoring with built networks instead (the same scores, slower); please report it",
            file=sys.stderr,
        )
        self.engine = "modules"
        self._supernet = None

    def teacher(self, seed: int) -> TeacherCache:
        """Teacher features and gradient for ``seed``, computed once and reused for every student."""
        if not self.has_teacher:
            raise DiswotError("this proxy needs a teacher; pass --teacher NAME")
        if seed not in self._teachers:
            check_probe_fits(self)  # the batch and the teacher's pass, before either is made
            t0 = time.perf_counter()
            model = self.build(self.teacher_spec, seed_of(seed, TEACHER), teacher=True)  # type: ignore[arg-type]  # has_teacher
            x, y = self.batch(seed)
            self._teachers[seed] = teacher_cache(model, x, y, self.config, t0)
        return self._teachers[seed]

    def reference(self, name: str, seed: int | None = None) -> ReferenceSample:
        """The reference sample composite proxy ``name`` ranks its terms against, holding every
        probe seed of this scorer (and ``seed``): from the user's cache, else scored here once and
        cached (:mod:`diswot.scoring.reference`). Without a space, a one-line error."""
        from diswot.scoring.reference import load_reference

        sample = self._references.get(name)
        seeds = [*self.seeds, *([] if seed is None else [seed])]
        if sample is None or any(s not in sample.values for s in seeds):
            sample = self._references[name] = load_reference(self, name, seeds)
        return sample

    def cost(self, spec: StudentLike, model: nn.Module | None = None) -> ModelCost:
        """Parameters and FLOPs of a student: from its name (the coster), else of its network."""
        if isinstance(spec, str):
            return self.coster(spec, self.num_classes, self.input_size)
        if model is None:
            model = spec if isinstance(spec, nn.Module) else self.build(spec, 0)
        return profile(model, self.input_size)

    # -- scoring -----------------------------------------------------------------------------------
    def probe(self, student: StudentLike, seed: int) -> StudentProbe:
        """A fresh probe of ``student`` under ``seed`` (nothing recycled)."""
        return StudentProbe(self, student, seed)

    def evaluation_probe(
        self, student: StudentLike, proxies: Sequence[str], seed: int
    ) -> StudentProbe:
        """The probe for one evaluation (pair it with :meth:`release`).

        Construction, not the forward, bounds scoring on a GPU (``docs/scale.md``), so a finished
        evaluation's network is recycled when that cannot change a number:

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
        check_probe_fits(self, student, proxies)  # once: before the first student's batch
        spare, self._spare = self._spare, None
        if spare is None or not isinstance(student, str) or needs_grad(proxies):
            spare = None
        return StudentProbe(self, student, seed, spare=spare)

    def release(self, probe: StudentProbe, proxies: Sequence[str]) -> None:
        """End an evaluation; keep its network for the next one if that is safe (see above)."""
        model = probe.built_model
        if model is None:
            self._spare = probe.spare  # nothing built: the unused network waits for the next
        elif (
            isinstance(probe.student, str)
            and (len(self.seeds) > 1 or self.rebuilder is not None)
            and not needs_grad(proxies)
            and reinit_covers(model)
        ):
            self._spare = (probe.student, model)

    def evaluate(self, student: StudentLike, proxies: Iterable[str], seed: int) -> dict[str, float]:
        """Values of ``proxies`` for one student and one seed; a failing proxy gives NaN, not a crash."""
        proxies = list(proxies)
        probe = self.evaluation_probe(student, proxies, seed)
        out: dict[str, float] = {}
        for name in proxies:
            out[name] = proxy_value(name, probe)
        self.release(probe, proxies)
        if probe.has_diswot:
            out["_semantic_form"] = probe.diswot["semantic_form"]  # type: ignore[assignment]
        return out

    def score(
        self, student: StudentLike, proxies: Iterable[str] = ("diswot", "ms", "mr")
    ) -> ScoreResult:
        """Evaluate ``proxies`` over every seed; returns means, stds and per-seed values."""
        proxies = list(proxies)
        t0 = time.perf_counter()
        per_seed = []
        info: dict[str, str] = {}
        for s in self.seeds:
            vals = self.evaluate(student, proxies, s)
            form = vals.pop("_semantic_form", None)
            if form is not None:
                info["semantic_form"] = str(form)
            per_seed.append(vals)
        return self.result(student, proxies, per_seed, time.perf_counter() - t0, info)

    def score_many(
        self,
        students: Sequence[StudentLike],
        proxies: Iterable[str] = ("diswot", "ms", "mr"),
    ) -> list[ScoreResult]:
        """:meth:`score` of every student, several at once where the space and proxies allow
        (one grouped pass per seed: :mod:`diswot.scoring.group`); the same values as scoring
        them one by one, to float tolerance. What ran grouped is in :attr:`last_group`."""
        from diswot.scoring.group import score_group

        return score_group(self, list(students), list(proxies))

    def result(
        self,
        student: StudentLike,
        proxies: Sequence[str],
        per_seed: list[dict[str, float]],
        seconds: float,
        info: dict[str, str] | None = None,
    ) -> ScoreResult:
        """A student's :class:`ScoreResult` from its per-seed values: means, stds and its cost."""
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
            seconds=seconds,
            info=info or {},
        )


def _space_coster(space: Any) -> Coster:
    """A space's ``cost(arch, num_classes, image_size)`` as a :data:`Coster`."""

    def coster(arch: str, num_classes: int, size: tuple[int, int, int, int]) -> ModelCost:
        return space.cost(arch, num_classes, size[-1])

    return coster


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _checked(cfg: ProbeConfig) -> ProbeConfig:
    """``cfg`` with ``seeds`` as a tuple, after refusing settings no score can be made under."""
    if not _is_int(cfg.num_classes) or cfg.num_classes < 2:
        raise DiswotError(
            f"--num-classes must be an integer of at least 2, got {cfg.num_classes!r}"
        )
    if not _is_int(cfg.batch_size) or cfg.batch_size < 2:
        raise DiswotError(
            "--batch-size must be an integer of at least 2 (the relation term compares "
            f"samples), got {cfg.batch_size!r}"
        )
    seeds = cfg.seeds
    if _is_int(seeds):  # a count, as run_search and run_rank take it
        seeds = range(seeds)  # type: ignore[arg-type]
    if not seeds:
        raise DiswotError("--seeds must be at least 1 (give at least one probe seed)")
    if cfg.init not in ("gaussian", "default"):
        raise DiswotError(f"unknown init '{cfg.init}'; use gaussian or default")
    if cfg.semantic not in ("auto", "channel", "class"):
        raise DiswotError(f"unknown semantic form '{cfg.semantic}'; use auto, channel or class")
    if torch.get_default_dtype() != torch.float32:
        # Probe batches are float32; networks built under another default would meet them
        # with float64 weights and every proxy would fail as NaN.
        raise DiswotError(
            f"torch's default dtype is {torch.get_default_dtype()}; diswot scores float32 "
            "networks: call torch.set_default_dtype(torch.float32) first"
        )
    check_precision(cfg.precision)
    return dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds))
