"""One student under one seed, as the proxies see it (:class:`StudentProbe`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor, Features
from diswot.metrics import classifier_gradient, diswot_score
from diswot.models.cost import ModelCost
from diswot.scoring.batch import STUDENT, seed_of
from diswot.scoring.numerics import strict_fp32
from diswot.scoring.teacher import TeacherCache

if TYPE_CHECKING:
    from diswot.scoring.scorer import Scorer

__all__ = ["StudentLike", "StudentProbe"]

#: A student: a name its space (or :func:`~diswot.models.create_model`) builds, a module (copied,
#: then re-initialised) or a callable returning a module.
StudentLike = str | nn.Module | Callable[[], nn.Module]


class StudentProbe:
    """One student under one seed: built, initialised and forwarded at most once, on demand.

    What proxies read: :attr:`inputs`/:attr:`labels` (the seed's probe batch), :attr:`model` (the
    initialised student), :attr:`features` (its one train-mode, no-grad forward), :attr:`grad` (the
    closed-form classifier gradient), :attr:`teacher`, :attr:`diswot`, :attr:`cost`,
    :meth:`fresh_model` and :attr:`memo`, a per-probe store for passes several proxies share.
    The scorer creates a probe per (student, seed), so nothing leaks between candidates.

    Args:
        scorer: the :class:`~diswot.scoring.Scorer` it belongs to (batches, teacher, builds).
        student: the student (see :data:`StudentLike`).
        seed: the probe seed (batch, teacher init and student init, see :mod:`.batch`).
        spare: a finished evaluation's ``(student, network)`` this probe may recycle instead of
            building its student (:meth:`Scorer.evaluation_probe` hands it over).
    """

    def __init__(
        self,
        scorer: Scorer,
        student: StudentLike,
        seed: int,
        spare: tuple[str, nn.Module] | None = None,
    ) -> None:
        self.scorer = scorer
        self.student = student
        self.seed = seed
        self.inputs, self.labels = scorer.batch(seed)
        #: The network handed over for recycling, until :attr:`model` takes it.
        self.spare = spare
        #: Results of passes shared by several proxies, by key (``proxies._shared.cached``).
        self.memo: dict[str, Any] = {}
        #: Seconds of each shared pass in :attr:`memo` (``proxies._shared.pass_seconds``).
        self.pass_seconds: dict[str, float] = {}
        self._model: nn.Module | None = None
        self._features: Features | None = None

    @property
    def num_classes(self) -> int:
        return self.scorer.num_classes

    @property
    def device(self) -> torch.device:
        return self.scorer.device

    @property
    def init_seed(self) -> int:
        """The seed the student's weights are drawn under."""
        return seed_of(self.seed, STUDENT)

    def fresh_model(self) -> nn.Module:
        """A newly built, initialised student (for proxies that change weights or need gradients)."""
        return self.scorer.build(self.student, self.init_seed)

    @property
    def model(self) -> nn.Module:
        """The initialised student, built (or recycled from :attr:`spare`) on first use."""
        if self._model is None:
            spare, self.spare = self.spare, None
            model = None
            if spare is not None:
                model = self.scorer.recycle(spare, self.student, self.init_seed)  # type: ignore[arg-type]  # a str
            self._model = model if model is not None else self.fresh_model()
        return self._model

    @property
    def built_model(self) -> nn.Module | None:
        """The student's network if this probe built (or recycled) one, else ``None``."""
        return self._model

    def feature_extractor(self, model: nn.Module) -> FeatureExtractor:
        """A feature extractor of ``model`` with the students' classifier/feature hooks."""
        return self.scorer.student_extractor(model)

    @cached_property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor of :attr:`model`."""
        return self.feature_extractor(self.model)

    @property
    def has_features(self) -> bool:
        """Whether the shared forward pass (:attr:`features`) has run."""
        return self._features is not None

    @property
    def features(self) -> Features:
        """Logits, pre-pool feature map and pooled features of the student's one shared forward
        (train-mode BatchNorm, no autograd, in the scorer's precision), read as fp32."""
        if self._features is None:
            # Named students may come from the supernet engine: the same features, no build.
            f = self.scorer.supernet_features(self.student, self.init_seed, self.inputs)
            if f is None:
                self.model.train()
                with strict_fp32(), torch.no_grad(), self.scorer.autocast():
                    f = self.extractor(self.inputs)
            self._features = self._accept(f)
        return self._features

    def forward_with(self, mode: contextlib.AbstractContextManager) -> Features:
        """One train-mode, no-grad forward of :attr:`model` inside ``mode`` (a
        ``TorchFunctionMode`` recording activations, say), returning its features. When the shared
        forward has not run yet, this pass is it: :attr:`features` then returns what it computed,
        so a proxy that records activations costs DisWOT no second pass."""
        model = self.model
        model.train()
        with torch.no_grad(), mode:
            f = self.extractor(self.inputs)
        if self._features is None:
            self._features = self._accept(f)
        return f

    def _accept(self, f: Features) -> Features:
        """``f`` as the shared features: its class count checked before any proxy reads it (kd
        would be NaN), and in fp32 (under bf16 the pass ran in low precision; every metric reads
        fp32 or float64)."""
        if f.logits.shape[1] != self.num_classes:
            raise DiswotError(
                f"student outputs {f.logits.shape[1]} classes but the teacher/probe has "
                f"{self.num_classes}; build the student with num_classes={self.num_classes}"
            )
        return f if f.logits.dtype == torch.float32 else Features(*(t.float() for t in f))

    @cached_property
    def grad(self) -> Tensor:
        """The closed-form gradient of the cross-entropy w.r.t. the student's classifier."""
        f = self.features  # its class count already checked
        return classifier_gradient(f.logits, f.pooled, self.labels)

    @cached_property
    def teacher(self) -> TeacherCache:
        """The teacher's side of this seed (shared by every student)."""
        return self.scorer.teacher(self.seed)

    @cached_property
    def diswot(self) -> dict[str, float | str]:
        """The DisWOT score, its components and the semantic form used."""
        t = self.teacher
        return diswot_score(
            t.reference, None, self.grad, self.features.feature_map, self.scorer.semantic
        )

    @property
    def has_diswot(self) -> bool:
        """Whether :attr:`diswot` was computed (a proxy asked for it)."""
        return "diswot" in self.__dict__

    @cached_property
    def cost(self) -> ModelCost:
        """Parameters and FLOPs: a named student costed from its name (cached), a module built."""
        model = None if isinstance(self.student, str) else self.model
        return self.scorer.cost(self.student, model)
