"""The DisWOT metrics: closed forms against definitions, symmetry, bounds, precision."""

from __future__ import annotations

import math

import pytest
import torch

from diswot.metrics import (
    Reference,
    classifier_gradient,
    diswot_score,
    relation_similarity,
    semantic_channel,
    semantic_channel_reference,
    semantic_class,
    semantic_similarity,
)


def _grad(k: int, c: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, c, generator=g, dtype=torch.float64) * scale


def test_semantic_closed_form_matches_matrix_definition() -> None:
    g_t, g_s = _grad(10, 16, 0), _grad(10, 16, 1)
    g_s[3, 5] = 0.0  # an exact zero must be handled like the matrix form (a zero row)
    g_t[7] = 0.0  # and a whole zero class row
    assert semantic_channel(g_t, g_s).item() == pytest.approx(
        semantic_channel_reference(g_t, g_s).item(), rel=1e-12
    )


def test_semantic_equals_two_minus_two_m_cos() -> None:
    g_t, g_s = _grad(5, 8, 2), _grad(5, 8, 3)
    m = (torch.sign(g_t) * torch.sign(g_s)).mean(1)
    cos = torch.nn.functional.cosine_similarity(g_t, g_s, dim=1)
    expected = (2 - 2 * m * cos).mean()
    assert semantic_channel(g_t, g_s).item() == pytest.approx(expected.item(), rel=1e-12)


def test_semantic_survives_tiny_rows_where_float32_matrix_form_fails() -> None:
    g_t, g_s = _grad(4, 8, 4, scale=1e-7), _grad(4, 8, 5, scale=1e-7)
    exact = semantic_channel(g_t, g_s).item()
    # The float32 matrix form with F.normalize's default eps silently zeroes these rows.
    a = lambda g: torch.nn.functional.normalize((g.unsqueeze(2) * g.unsqueeze(1)).float(), dim=2)  # noqa: E731
    naive = ((a(g_s) - a(g_t)) ** 2).sum().item() / (8 * 4)
    assert exact > 0.5  # random directions: about 2 on average
    assert naive < 0.1 * exact  # the bug the exact form avoids: tiny rows are crushed
    assert exact == pytest.approx(semantic_channel(g_t * 1e7, g_s * 1e7).item(), rel=1e-9)


def test_semantic_symmetry_identity_and_bounds() -> None:
    g_t, g_s = _grad(6, 12, 6), _grad(6, 12, 7)
    assert semantic_channel(g_t, g_s).item() == pytest.approx(semantic_channel(g_s, g_t).item())
    assert semantic_channel(g_t, g_t).item() == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= semantic_channel(g_t, g_s).item() <= 4.0
    # g g^T does not see a global sign flip of a class row, so neither does M_s.
    assert semantic_channel(g_t, -g_t).item() == pytest.approx(0.0, abs=1e-12)


def test_width_independent_semantic_form() -> None:
    g_t, g_s = _grad(10, 64, 8), _grad(10, 16, 9)
    ms, form = semantic_similarity(g_t, g_s)
    assert form == "class"
    assert 0.0 <= ms.item() <= 4 / 10 + 1e-12
    assert semantic_class(g_t, g_t).item() == pytest.approx(0.0, abs=1e-12)
    ms_same, form_same = semantic_similarity(g_t[:, :16], g_s)
    assert form_same == "channel"
    with pytest.raises(ValueError):
        semantic_channel(g_t, g_s)


def test_relation_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    f_t = torch.randn(8, 64, 4, 4, generator=gen)
    f_s = torch.randn(8, 16, 2, 2, generator=gen)
    n = 8
    mr = relation_similarity(f_t, f_s).item()
    assert 0.0 <= mr <= 4 / n
    assert mr == pytest.approx(relation_similarity(f_s, f_t).item())
    assert relation_similarity(f_t, f_t).item() == pytest.approx(0.0, abs=1e-15)
    # Scale invariance of the row-normalised Gram matrix.
    assert relation_similarity(f_t, 3.0 * f_s).item() == pytest.approx(mr, rel=1e-6)
    # The definition, written out.
    ft, fs = f_t.double().flatten(1), f_s.double().flatten(1)
    gt = torch.nn.functional.normalize(ft @ ft.T, dim=1)
    gs = torch.nn.functional.normalize(fs @ fs.T, dim=1)
    assert mr == pytest.approx(((gt - gs) ** 2).sum().item() / n**2, rel=1e-9)


def test_classifier_gradient_matches_autograd() -> None:
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    fc = torch.nn.Linear(5, 3).double()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = fc(h)
    loss = torch.nn.functional.cross_entropy(logits, y)
    (auto,) = torch.autograd.grad(loss, fc.weight)
    closed = classifier_gradient(logits, h, y)
    assert torch.allclose(auto, closed, atol=1e-12)
    assert fc.weight.grad is None  # nothing accumulates on the module


def test_diswot_score_is_negative_sum() -> None:
    g_t, g_s = _grad(4, 8, 10), _grad(4, 8, 11)
    gen = torch.Generator().manual_seed(2)
    f_t, f_s = torch.randn(4, 8, 2, 2, generator=gen), torch.randn(4, 8, 2, 2, generator=gen)
    d = diswot_score(g_t, f_t, g_s, f_s)
    assert d["score"] == pytest.approx(-(d["ms"] + d["mr"]))
    assert d["semantic_form"] == "channel"
    assert all(math.isfinite(d[k]) for k in ("score", "ms", "mr"))


def test_teacher_reference_gives_the_same_numbers() -> None:
    # The teacher's terms computed once (what the Scorer keeps per seed) change no bit of any form.
    g_t, f_t = (
        _grad(10, 16, 4),
        torch.randn(8, 16, 4, 4, generator=torch.Generator().manual_seed(5)),
    )
    ref = Reference(g_t.float(), f_t)
    for width, seed in ((16, 6), (24, 7), (16, 8)):  # channel form, class form, channel again
        g_s = _grad(10, width, seed)
        f_s = torch.randn(8, width, 2, 2, generator=torch.Generator().manual_seed(seed))
        assert diswot_score(ref, None, g_s, f_s) == diswot_score(g_t.float(), f_t, g_s, f_s)
        for mode in ("class",) if width != 16 else ("channel", "class"):
            a = semantic_similarity(ref, g_s, mode)[0]
            assert torch.equal(a, semantic_similarity(g_t.float(), g_s, mode)[0])
        assert torch.equal(relation_similarity(ref, f_s), relation_similarity(f_t, f_s))
    assert "sample_relation" in ref.__dict__ and "class_relation" in ref.__dict__  # kept
    with pytest.raises(ValueError, match="batch sizes differ"):
        relation_similarity(ref, f_s[:4])
    with pytest.raises(ValueError, match="without the teacher's feature map"):
        relation_similarity(Reference(g_t), f_s)
    with pytest.raises(ValueError, match="teacher has 10 classes, student 3"):
        semantic_class(ref, _grad(3, 16, 9))


def test_scorer_forms_the_teachers_terms_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import diswot.metrics as metrics
    from diswot.scoring import Scorer
    from diswot.spaces import get_space

    grams: list[int] = []
    real = metrics._unit_gram

    def counting(x: torch.Tensor) -> torch.Tensor:
        grams.append(x.shape[0])
        return real(x)

    monkeypatch.setattr(metrics, "_unit_gram", counting)
    scorer = Scorer.for_space(get_space("s1"), "resnet20", batch_size=4, seeds=(0, 1))
    for arch in ("111", "333", "131"):
        scorer.score(arch, ["diswot", "ms", "mr"])
    # Per seed one teacher Gram, then one per candidate: 2 + 3 x 2, all sample relations (N = 4).
    assert grams == [4] * 8
