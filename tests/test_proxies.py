"""The proxy zoo on tiny models: registry flags, formulas against independent computations,
determinism, no gradient leaks, and the rank-average ensemble."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diswot.errors import DiswotError
from diswot.models.cost import profile
from diswot.proxies import (
    PROXIES,
    ensemble_members,
    get_proxy,
    list_proxies,
    rank_average,
    resolve_proxies,
)
from diswot.proxies._shared import input_jacobian, loss_gradients
from diswot.proxies.distill import at_distance, ickd_distance, kd_divergence, rkd_distance
from diswot.scoring import Scorer

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# name: (higher_is_better, needs_teacher, needs_labels, needs_grad)
EXPECTED = {
    "params": (True, False, False, False),
    "flops": (True, False, False, False),
    "grad_norm": (True, False, True, True),
    "snip": (True, False, True, True),
    "grasp": (True, False, True, True),
    "fisher": (True, False, True, True),
    "jacov": (True, False, False, True),
    "plain": (True, False, True, True),
    "synflow": (True, False, False, True),
    "l2_norm": (True, False, False, False),
    "nwot": (True, False, False, False),
    "zen": (True, False, False, False),
    "epe_nas": (True, False, True, True),
    "diswot": (True, True, True, False),
    "ms": (False, True, True, False),
    "mr": (False, True, False, False),
    "kd": (False, True, False, False),
    "sp": (False, True, False, False),
    "ickd": (False, True, False, False),
    "at": (False, True, False, False),
    "rkd": (False, True, False, False),
}


class TinyNet(nn.Module):
    """conv-BN-ReLU x2, global pool, linear: every kind of layer the proxies touch, in ~1k params."""

    def __init__(self, width: int = 4, num_classes: int = 3, bn: bool = True) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            norm(width),
            nn.ReLU(),
            nn.Conv2d(width, 6, 3, padding=1, bias=False),
            norm(6),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


def _build(arch: str, k: int) -> nn.Module:
    # "w4" -> width 4; "w4-nobn" -> no batch norm.
    width = int(arch.split("-")[0][1:])
    return TinyNet(width, k, bn="nobn" not in arch)


def _scorer(init: str = "default", batch: int = 8, teacher: bool = True) -> Scorer:
    return Scorer(
        TinyNet(5, 3) if teacher else None,
        num_classes=3,
        batch_size=batch,
        image_size=8,
        init=init,
        builder=_build,
        coster=lambda arch, k, size: profile(_build(arch, k), size),
    )


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return _scorer()


def test_registry_has_every_proxy_with_its_flags() -> None:
    assert set(EXPECTED) <= set(list_proxies())
    for name, (hib, teacher, labels, grad) in EXPECTED.items():
        spec = get_proxy(name)
        got = (spec.higher_is_better, spec.needs_teacher, spec.needs_labels, spec.needs_grad)
        assert got == (hib, teacher, labels, grad), name
        assert spec.doc, f"{name} has no help line"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_proxy_is_finite_deterministic_and_leaves_no_gradients(
    scorer: Scorer, name: str
) -> None:
    a = scorer.evaluate("w4", [name], 0)[name]
    assert math.isfinite(a), name
    probe = scorer.probe("w4", 0)
    b = float(get_proxy(name).fn(probe))
    assert a == b  # a fresh probe, same seed: the same number
    assert all(p.grad is None for p in probe.model.parameters())
    assert scorer.evaluate("w4", [name], 1)[name] != a or name in ("params", "flops")


def test_values_do_not_depend_on_evaluation_order(scorer: Scorer) -> None:
    names = sorted(EXPECTED)
    forward = scorer.evaluate("w6", names, 0)
    backward = scorer.evaluate("w6", names[::-1], 0)
    for n in names:
        assert forward[n] == pytest.approx(backward[n], rel=1e-9, abs=1e-12), n


def test_loss_gradient_proxies_match_a_plain_backward(scorer: Scorer) -> None:
    probe = scorer.probe("w4", 0)
    ref = probe.fresh_model()
    ref.train()
    F.cross_entropy(ref(probe.inputs), probe.labels).backward()
    layers = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    gn = sum(float(m.weight.grad.norm()) for m in layers)
    sn = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers)
    pl = sum(float((m.weight.detach() * m.weight.grad).sum()) for m in layers)
    assert get_proxy("grad_norm").fn(probe) == pytest.approx(gn, rel=1e-5)
    assert get_proxy("snip").fn(probe) == pytest.approx(sn, rel=1e-5)
    assert get_proxy("plain").fn(probe) == pytest.approx(pl, rel=1e-4, abs=1e-9)
    assert len(loss_gradients(probe).layers) == 3


def test_fisher_matches_naslib_definition() -> None:
    """Per output channel 0.5 * mean_n (sum_xy a * dL/da)^2, broadcast to its fan-in, summed."""
    sc = _scorer(teacher=False)
    probe = sc.probe("w4", 0)
    model = probe.fresh_model()
    model.train()
    acts: list[torch.Tensor] = []
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def keep(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append(out)

    for m in layers:
        m.register_forward_hook(keep)
    F.cross_entropy(model(probe.inputs), probe.labels).backward()
    total = 0.0
    for m, a in zip(layers, acts):
        prod = (a.detach() * a.grad).double()
        g = prod.flatten(2).sum(2) if prod.dim() > 2 else prod
        total += float(g.pow(2).mean(0).mul(0.5).sum()) * m.weight[0].numel()
    assert get_proxy("fisher").fn(probe) == pytest.approx(total, rel=1e-5)


def test_grasp_is_minus_w_dot_hessian_gradient() -> None:
    """Check -w . H g against an explicit Hessian on a network without BN (small enough)."""
    sc = _scorer(teacher=False, batch=6)
    probe = sc.probe("w2-nobn", 0)
    model = probe.fresh_model()
    model.train()
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    params = dict(model.named_parameters())
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    shapes = [params[n].shape for n in names]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks, i = {}, 0
        for n, s in zip(names, shapes):
            chunks[n] = flat[i : i + s.numel()].reshape(s).float()
            i += s.numel()
        out = torch.func.functional_call(model, {**params, **chunks}, (probe.inputs,))
        return F.cross_entropy(out, probe.labels).double()

    g = torch.autograd.functional.jacobian(loss_of, flat0)
    h = torch.autograd.functional.hessian(loss_of, flat0)
    expected = float(-(flat0 * (h @ g)).sum())
    assert get_proxy("grasp").fn(probe) == pytest.approx(expected, rel=1e-3, abs=1e-9)


def test_jacobian_matches_per_sample_gradients_without_bn() -> None:
    sc = _scorer(teacher=False, batch=4)
    probe = sc.probe("w3-nobn", 0)
    jac = input_jacobian(probe)
    model = probe.model
    for n in range(4):
        x = probe.inputs[n : n + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x)
        torch.testing.assert_close(jac[n].float(), g.reshape(-1), rtol=1e-4, atol=1e-6)
    j = jac.numpy()
    v = np.linalg.eigvalsh(np.corrcoef(j))
    expected = -np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5))
    assert get_proxy("jacov").fn(probe) == pytest.approx(expected, rel=1e-9)
    assert expected <= -4 + 1e-6  # the score's maximum is -N


def test_epe_nas_needs_repeated_classes() -> None:
    few = Scorer(None, num_classes=3, batch_size=9, image_size=8, builder=_build)
    many = Scorer(None, num_classes=12, batch_size=9, image_size=8, builder=_build)
    assert get_proxy("epe_nas").fn(few.probe("w4", 0)) > 0
    # 9 samples over 12 classes: one sample per class, every class scores log(1 + k) -> 0.
    assert get_proxy("epe_nas").fn(many.probe("w4", 0)) == 0.0


def test_nwot_kernel_counts_agreeing_relu_units(scorer: Scorer) -> None:
    probe = scorer.probe("w4", 0)
    model = probe.fresh_model()
    model.train()
    codes = []
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda mod, i, o: codes.append((i[0] > 0).reshape(8, -1)))
    with torch.no_grad():
        model(probe.inputs)
    b = torch.cat(codes, 1).double()
    k = b @ b.t() + (1 - b) @ (1 - b).t()
    assert get_proxy("nwot").fn(probe) == pytest.approx(float(torch.linalg.slogdet(k)[1]))


def test_synflow_of_a_linear_chain_is_depth_times_path_sum() -> None:
    """With |W| and an all-ones input, R = 1^T |W2| |W1| 1 is linear in each layer, so every
    layer's sum |W . dR/dW| equals R and synflow = log(2 R) for two layers."""

    def chain() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(12, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)
        )

    sc = Scorer(None, num_classes=3, batch_size=4, image_size=2, init="default")
    probe = sc.probe(chain, 0)
    net = probe.model  # the student as initialised under the seed
    w1, w2 = (m.weight.detach().double().abs() for m in (net[1], net[3]))
    r = float((w2 @ (w1 @ torch.ones(12, dtype=torch.float64))).sum())
    assert get_proxy("synflow").fn(probe) == pytest.approx(math.log(2 * r), rel=1e-12)
    assert net[1].weight.min() < 0  # synflow made a fresh copy positive, not the probe's model


def test_l2_norm_and_synflow_ignore_the_data(scorer: Scorer) -> None:
    other = Scorer(
        TinyNet(5, 3), num_classes=3, batch_size=4, image_size=8, init="default", builder=_build
    )
    for name in ("l2_norm", "synflow"):
        assert other.evaluate("w4", [name], 0)[name] == scorer.evaluate("w4", [name], 0)[name]


class Blind(TinyNet):
    """Ignores its input: no input-output path, like an NB201 cell of 'none' edges."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 0)


def test_zen_uses_its_own_gaussian_init_and_inputs() -> None:
    a = _scorer(init="default").evaluate("w4", ["zen"], 0)["zen"]
    b = _scorer(init="gaussian").evaluate("w4", ["zen"], 0)["zen"]
    assert a == b
    assert _scorer().evaluate(lambda: Blind(4, 3), ["zen"], 0)["zen"] == -math.inf


def test_zen_adds_bn_rescaling() -> None:
    """Same network with and without BN: the BN version's log-variance term restores the scale."""
    sc = _scorer(teacher=False)
    with_bn = sc.evaluate("w4", ["zen"], 0)["zen"]
    without = sc.evaluate("w4-nobn", ["zen"], 0)["zen"]
    assert math.isfinite(with_bn) and math.isfinite(without)
    assert abs(with_bn - without) < 0.5 * abs(without)


def test_distillation_losses_vanish_on_identical_pairs_and_grow_apart() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, 5, 5, generator=g)
    z = torch.randn(6, 7, generator=g)
    e = torch.randn(6, 9, generator=g)
    assert float(kd_divergence(z, z)) == pytest.approx(0.0, abs=1e-12)
    assert float(ickd_distance(f, f)) == pytest.approx(0.0, abs=1e-12)
    assert float(at_distance(f, f)) == pytest.approx(0.0, abs=1e-12)
    assert float(rkd_distance(e, 3.0 * e)) == pytest.approx(0.0, abs=1e-12)  # scale-free
    other = torch.randn(6, 8, 3, 3, generator=g)  # other width and resolution
    for fn in (ickd_distance, at_distance):
        assert float(fn(f, other)) > 0
    zs = torch.randn(6, 7, generator=g)
    ref = (
        F.kl_div(
            F.log_softmax(zs.double() / 4, 1),
            F.log_softmax(z.double() / 4, 1),
            log_target=True,
            reduction="batchmean",
        )
        * 16
    )
    assert float(kd_divergence(zs, z)) == pytest.approx(float(ref), rel=1e-12)


def test_sp_is_diswot_relation_term(scorer: Scorer) -> None:
    v = scorer.evaluate("w4", ["sp", "mr"], 0)
    assert v["sp"] == pytest.approx(v["mr"], rel=1e-12)


def test_teacher_proxies_need_a_teacher() -> None:
    sc = _scorer(teacher=False)
    with pytest.raises(DiswotError, match="needs a teacher"):
        resolve_proxies("kd", has_teacher=False)
    with pytest.raises(DiswotError, match="teacher"):
        sc.evaluate("w4", ["rkd"], 0)
    assert "kd" not in resolve_proxies("all", has_teacher=False)


def test_unknown_proxy_lists_known_names() -> None:
    with pytest.raises(DiswotError, match="known: .*synflow"):
        get_proxy("synflw")


def test_rank_average_orients_members_and_puts_failures_last() -> None:
    # params: higher is better; ms: lower is better.
    avg = rank_average({"params": [1.0, 2.0, 3.0, math.nan], "ms": [0.3, 0.2, 0.1, 0.0]})
    # params ranks (NaN last): 2, 3, 4, 1; ms ranks (oriented): 1, 2, 3, 4.
    assert avg == [1.5, 2.5, 3.5, 2.5]
    assert rank_average({"params": [5.0, 5.0, 1.0]}) == [2.5, 2.5, 1.0]
    assert ensemble_members("DisWOT+params") == ["diswot", "params"]
    assert ensemble_members("params") is None
    for bad in ("diswot+", "params+params", "diswot+nope"):
        with pytest.raises(DiswotError):
            ensemble_members(bad)


def test_proxy_names_are_in_one_registry() -> None:
    assert len(PROXIES) == len(list_proxies()) >= len(EXPECTED)
