"""The proxy contract, run on every registered proxy (``diswot.proxies.PROXIES``): a proxy added
later is tested by registering it, with no edit here.

Every proxy, on a tiny S1 student (``"111"``, batch 8, 10 classes), must be finite, give the same
value twice under one seed, leave the shared student network as it found it (no ``.grad``, same
weights), and declare honestly what it needs: ``needs_teacher`` proxies refuse without a teacher and
the others give the same value without one; ``needs_batchnorm`` proxies are refused on a BN-free
space and the others are finite on a BN-free student; proxies that do not declare ``needs_labels``
do not read the labels. Where the right order of two students is known, ``higher_is_better`` must
agree with it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.models import create_model
from diswot.proxies import PROXIES, get_proxy, resolve_proxies
from diswot.scoring import Scorer

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

#: Composites rank their terms against a reference sample of a space (tests/test_reference.py).
NAMES = [n for n in PROXIES.names() if not PROXIES.get(n).needs_space]
STUDENT = "111"
CLASSES = 10
#: Proxy -> (student that must rank lower, student that must rank higher), where that is known:
#: the size baselines count a strictly bigger network.
KNOWN_ORDER = {"params": ("111", "333"), "flops": ("111", "333")}


def _scorer(teacher: str | None = "resnet8") -> Scorer:
    return Scorer(teacher, num_classes=CLASSES, batch_size=8)


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return _scorer()


@pytest.fixture(scope="module")
def scorer_again() -> Scorer:
    """A second scorer with the same settings: nothing cached is shared with ``scorer``."""
    return _scorer()


@pytest.fixture(scope="module")
def teacher_free() -> Scorer:
    return _scorer(None)


def _without_batchnorm(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return model


def _bn_free_student() -> nn.Module:
    model = _without_batchnorm(create_model(STUDENT, num_classes=CLASSES))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return model


def test_registry_holds_the_builtin_proxies_with_help_lines() -> None:
    assert {"diswot", "params", "flops", "synflow", "zen", "kd"} <= set(NAMES)
    for name in NAMES:
        spec = get_proxy(name)
        assert spec.name == name and spec.doc, name
        assert spec.sign == (1.0 if spec.higher_is_better else -1.0)


@pytest.mark.parametrize("name", NAMES)
def test_finite_and_deterministic(scorer: Scorer, scorer_again: Scorer, name: str) -> None:
    a = scorer.evaluate(STUDENT, [name], 0)[name]
    assert math.isfinite(a), f"{name} = {a} on student {STUDENT}"
    assert scorer_again.evaluate(STUDENT, [name], 0)[name] == a
    assert scorer.evaluate(STUDENT, [name], 0)[name] == a  # and again on a warm scorer


@pytest.mark.parametrize("name", NAMES)
def test_leaves_the_shared_network_as_it_found_it(scorer: Scorer, name: str) -> None:
    probe = scorer.probe(STUDENT, 0)
    model = probe.model  # shared by every proxy of one evaluation
    before = [p.detach().clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    get_proxy(name).fn(probe)
    assert all(p.grad is None for p in model.parameters()), f"{name} left .grad on the model"
    assert [p.requires_grad for p in model.parameters()] == flags
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p.detach()), f"{name} changed the shared model's weights"


@pytest.mark.parametrize("name", NAMES)
def test_teacher_flag_is_honest(scorer: Scorer, teacher_free: Scorer, name: str) -> None:
    spec = get_proxy(name)
    if spec.needs_teacher:
        with pytest.raises(DiswotError, match="teacher"):
            resolve_proxies(name, has_teacher=False)
        with pytest.raises(DiswotError, match="teacher"):
            teacher_free.evaluate(STUDENT, [name], 0)
        assert name not in resolve_proxies("all", has_teacher=False)
    else:
        assert resolve_proxies(name, has_teacher=False) == [name]
        without = teacher_free.evaluate(STUDENT, [name], 0)[name]
        assert without == scorer.evaluate(STUDENT, [name], 0)[name]  # the teacher plays no part


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_flag_is_honest(
    scorer: Scorer, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = get_proxy(name)
    kept = resolve_proxies("all", has_batchnorm=False, space="bn-free")
    if spec.needs_batchnorm:
        with pytest.raises(DiswotError, match="BatchNorm"):
            resolve_proxies(name, has_batchnorm=False, space="bn-free")
        assert name not in kept and name in capsys.readouterr().err
    else:
        assert name in kept
        value = scorer.evaluate(_bn_free_student, [name], 0)[name]
        assert math.isfinite(value), f"{name} = {value} on a BN-free student"


@pytest.mark.parametrize("name", [n for n in NAMES if not get_proxy(n).needs_labels])
def test_label_free_proxies_ignore_the_labels(scorer: Scorer, name: str) -> None:
    probe = scorer.probe(STUDENT, 0)
    probe.labels = (probe.labels + 1) % CLASSES  # every label wrong, same inputs
    assert float(get_proxy(name).fn(probe)) == scorer.evaluate(STUDENT, [name], 0)[name]


@pytest.mark.parametrize("name", sorted(set(KNOWN_ORDER) & set(NAMES)))
def test_direction_agrees_with_a_known_order(scorer: Scorer, name: str) -> None:
    worse, better = KNOWN_ORDER[name]
    sign = get_proxy(name).sign
    low = scorer.evaluate(worse, [name], 0)[name]
    high = scorer.evaluate(better, [name], 0)[name]
    assert sign * high > sign * low, f"{name}: {better}={high} should rank above {worse}={low}"
