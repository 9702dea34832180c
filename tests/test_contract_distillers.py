"""The distiller contract, run on every registered distillation method (``diswot.distill.DISTILLERS``,
plus ``ce``, plain training): a method added later is tested by registering it, with no edit here.

On a fixed synthetic batch, a few optimisation steps of a tiny student (and of the method's own
learned parts) must lower the method's loss, for a teacher of another width and resolution and for
one of the student's shape. Every loss term must be finite, the loss must be the weighted sum of
its terms, and a method that needs a teacher must refuse to be built without one.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from diswot.distill import DISTILLERS, FeatureInfo, StepOutputs, build_distiller
from diswot.errors import DiswotError
from diswot.features import Features

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ["ce", *DISTILLERS.names()]
CLASSES = 5
STEPS = 12
#: (teacher width, teacher stride), (student width, student stride): a wider teacher at half the
#: student's resolution (projections, pooling and the width-free forms), and equal shapes.
GEOMETRIES = {
    "wider-teacher": ((12, 2), (8, 1)),
    "same-shape": ((8, 1), (8, 1)),
}


class Net(nn.Module):
    """conv-BN-ReLU x2, global pool, linear; returns the :class:`Features` a trainer hands over."""

    def __init__(self, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.fc = nn.Linear(width, CLASSES)

    def forward(self, x: Tensor) -> Features:
        fm = self.body(x)
        pooled = fm.mean((2, 3))
        return Features(self.fc(pooled), fm, pooled)


def _setup(method: str, geometry: str) -> tuple[nn.Module, Net, Net | None, Tensor, Tensor]:
    (tw, ts), (sw, ss) = GEOMETRIES[geometry]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(16, 3, 8, 8)
        y = torch.arange(16) % CLASSES
        teacher = Net(tw, ts).eval()
        student = Net(sw, ss).train()
        with torch.no_grad():
            t_info = FeatureInfo.of(teacher(x))
            s_info = FeatureInfo.of(student(x))
        distiller = build_distiller(method, None if method == "ce" else t_info, s_info, epochs=1)
    return distiller, student, None if method == "ce" else teacher, x, y


def _loss(distiller: nn.Module, student: Net, teacher: Net | None, x: Tensor, y: Tensor):
    s = student(x)
    t = None
    if teacher is not None:
        with torch.no_grad():
            t = teacher(x)
    out = StepOutputs(
        s, t, y, student.fc.weight, None if teacher is None else teacher.fc.weight, epoch=1
    )
    return distiller(out)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("method", METHODS)
def test_a_few_steps_lower_the_loss(method: str, geometry: str) -> None:
    distiller, student, teacher, x, y = _setup(method, geometry)
    params = [*student.parameters(), *distiller.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(STEPS):
        loss, parts = _loss(distiller, student, teacher, x, y)
        assert all(math.isfinite(float(v)) for v in parts.values()), parts
        weighted = sum(distiller.w[k] * v for k, v in parts.items())
        assert loss.item() == pytest.approx(float(weighted), rel=1e-5)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = _loss(distiller, student, teacher, x, y)[0].item()
    assert final < losses[0], f"{method} ({geometry}): loss {losses[0]:.4g} -> {final:.4g}"


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_teacher_methods_refuse_to_build_without_a_teacher(method: str) -> None:
    info = FeatureInfo(8, 4, 4, CLASSES)
    if DISTILLERS.get(method).needs_teacher:
        with pytest.raises(DiswotError, match="needs a teacher"):
            build_distiller(method, None, info)
    else:
        build_distiller(method, None, info)


def test_registry_holds_the_builtin_methods() -> None:
    assert {"kd", "diswot", "diswot+", "fitnet", "at", "sp", "ickd", "dkd"} <= set(DISTILLERS)
