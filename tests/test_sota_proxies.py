"""The published zero-cost scores (AZ-NAS, VKDNW, MeCo, SWAP, ZiCo): each term on tiny inputs against
values computed by hand, the per-sample Fisher Jacobian against ``torch.func``'s ``vmap(jacrev)``,
the population aggregates, the block rules of every space, determinism under a seed, and finite
values on every space's small student."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from diswot.proxies import get_proxy
from diswot.proxies._paper import block_features, feature_blocks, kaiming_fan_in_, paper_model
from diswot.proxies.aggregate import PAPER_AGGREGATES, log_rank_sum, paper_aggregate
from diswot.proxies.aznas import pair_trainability, spectral_entropy
from diswot.proxies.meco import min_correlation_eigenvalue
from diswot.proxies.swap import ActivationPatterns
from diswot.proxies.vkdnw import _logit_jacobian, decile_entropy, smoothed_cov_factor
from diswot.proxies.zico import zico_from_gradients
from diswot.scoring import Scorer
from diswot.spaces import get_space, list_spaces

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

TERMS = (
    "az_expressivity",
    "az_progressivity",
    "az_trainability",
    "vkdnw",
    "trainable_layers",
    "vkdnw_single",
    "vkdnw_jacov",
    "meco",
    "swap",
    "swap_reg",
    "zico",
)
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x + 1e-8) for x in p)


# ------------------------------------------------------------------------------------ AZ-NAS


def test_expressivity_is_the_entropy_of_a_known_covariance_spectrum() -> None:
    # Orthogonal centred columns: the channel covariance is diag(a^2, b^2) exactly.
    a, b = 1.0, 2.0
    rows = torch.tensor([[a, b], [-a, b], [a, -b], [-a, -b]])
    expected = _entropy([a * a / (a * a + b * b), b * b / (a * a + b * b)])
    assert spectral_entropy(rows) == pytest.approx(expected, abs=1e-12)
    # The same rows as a (1, 2, 2, 2) feature map: channels on axis 1, positions as rows.
    fmap = rows.T.reshape(1, 2, 2, 2)
    assert spectral_entropy(fmap) == pytest.approx(expected, abs=1e-12)
    # Tokens (N, T, D): D channels over N*T rows.
    assert spectral_entropy(rows.reshape(2, 2, 2)) == pytest.approx(expected, abs=1e-12)
    # Equal variances: the maximum, ln C.
    assert spectral_entropy(torch.tensor([[1.0, 1], [-1, 1], [1, -1], [-1, -1]])) == pytest.approx(
        math.log(2), abs=1e-7
    )
    assert math.isnan(spectral_entropy(torch.ones(4, 3)))  # no variance: undefined


def test_trainability_of_known_block_jacobians() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    # One channel: g^T g / positions = 1 exactly, so M is the scale itself.
    s = 3.0
    assert pair_trainability(x, x * s, gen) == pytest.approx(-s - 1 / (s + 1e-6) + 2)
    # Sum-pooling 2x2 at stride 2: g_in unshuffled is 4 copies of g, so M = [1, 1, 1, 1]^T, s = 2.
    pooled = F.avg_pool2d(x, 2) * 4
    assert pair_trainability(x, pooled, gen) == pytest.approx(-2 - 1 / (2 + 1e-6) + 2)
    # A block passing its input through unchanged scores -inf, as in the release.
    assert pair_trainability(x, x + 0.0, gen) == -math.inf
    # Positions that cannot be aligned (5 tokens -> 3 tokens) are not measured.
    t = torch.randn(2, 5, 4, requires_grad=True)
    assert pair_trainability(t, t[:, :3] * 2, gen) is None


class Chain(nn.Module):
    """A stem and three blocks with a known feature chain (``feature_blocks`` names them)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1 = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.b2 = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1))
        self.b3 = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8, 10)

    def feature_blocks(self) -> list[nn.Module]:
        return [self.b1, self.b2, self.b3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b3(self.b2(self.b1(self.stem(x)))).mean((2, 3)))


def test_az_terms_combine_the_block_features_as_the_paper_says() -> None:
    scorer = Scorer(None, num_classes=10, batch_size=8)
    probe = scorer.probe(Chain(), 0)
    model = paper_model(probe, "kaiming")
    model.train()
    feats = block_features(model, probe.inputs)
    assert [tuple(f.shape) for f in feats] == [
        (8, 4, 32, 32),
        (8, 4, 32, 32),
        (8, 8, 16, 16),
        (8, 8, 16, 16),
    ]
    ent = [spectral_entropy(f) for f in feats]
    assert get_proxy("az_expressivity").fn(probe) == pytest.approx(sum(ent))
    assert get_proxy("az_progressivity").fn(probe) == pytest.approx(min(np.diff(ent)))
    t = get_proxy("az_trainability").fn(probe)
    assert -10 < t <= 0  # -s - 1/s + 2 <= 0, with equality at s = 1


# -------------------------------------------------------------------------------------- VKDNW


def test_smoothed_covariance_factor_is_a_cholesky_factor() -> None:
    logits = torch.randn(5, 7, dtype=torch.float64)
    lower = smoothed_cov_factor(logits)
    p = torch.softmax(logits, 1) * 0.95 + 0.05 / 7
    cov = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    assert torch.allclose(lower @ lower.transpose(1, 2), cov, atol=1e-12)
    assert torch.equal(lower, torch.tril(lower))


def test_decile_entropy_of_known_spectra() -> None:
    # Deciles of 1..10 under linear interpolation: 1 + 9 q = 1.9, 2.8, ..., 9.1.
    q = [1 + 9 * k / 10 for k in range(1, 10)]
    t = [v / sum(q) for v in q]
    expected = -sum(v * math.log(v + 1e-10) for v in t)
    assert decile_entropy(torch.arange(1.0, 11.0)) == pytest.approx(expected, abs=1e-9)
    assert decile_entropy(torch.full((20,), 3.0)) == pytest.approx(math.log(9), abs=1e-8)
    assert decile_entropy(torch.zeros(20)) == 0.0


class TinyFisherNet(nn.Module):
    """Conv, BatchNorm, LayerNorm, Linear and a parameter the network itself registers."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x + self.token)))
        return self.fc(self.ln(h.mean((2, 3))))


def test_fisher_jacobian_matches_vmap_jacrev() -> None:
    torch.manual_seed(0)
    model = TinyFisherNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine terms
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(6, 3, 5, 5)
    names = [n for n, _ in model.named_parameters()]
    got = _logit_jacobian(model, x, names)

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}

    def logits(scalars: dict, sample: torch.Tensor) -> torch.Tensor:
        swapped = dict(params)
        for n, s in scalars.items():
            flat = params[n].reshape(-1)
            swapped[n] = torch.cat([s.reshape(1), flat[1:]]).reshape(params[n].shape)
        return functional_call(model, (swapped, buffers), (sample.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(logits), in_dims=(None, 0))({n: params[n].reshape(-1)[0] for n in names}, x)
    want = torch.stack([jac[n] for n in names], dim=-1).double()
    assert got.shape == (6, 5, len(names))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_vkdnw_single_orders_by_layers_then_entropy() -> None:
    scorer = Scorer(None, num_classes=10, batch_size=8)
    small, big = (scorer.probe(a, 0) for a in ("111", "333"))
    layers = [get_proxy("trainable_layers").fn(p) for p in (small, big)]
    assert layers == [
        float(sum(1 for _ in scorer.build(a, 0).parameters())) for a in ("111", "333")
    ]
    single = [get_proxy("vkdnw_single").fn(p) for p in (small, big)]
    h = [get_proxy("vkdnw").fn(p) for p in (small, big)]
    for s, n, e in zip(single, layers, h):
        assert 0 <= e <= math.log(9) and s == pytest.approx(n + e / (1 + math.log(9)))
    assert single[1] > single[0]  # more layers rank higher whatever the entropies


# --------------------------------------------------------------------------------------- MeCo


def test_meco_min_eigenvalue_of_a_known_correlation() -> None:
    # Rows with correlation 0.8: eigenvalues 1 +- 0.8.
    rows = torch.tensor([[1.0, 2, 3, 4], [1.0, 3, 2, 4]])
    assert min_correlation_eigenvalue(rows) == pytest.approx(0.2, abs=1e-12)
    # A constant row has undefined correlations, set to 0: eigenvalues {0, 1}.
    assert min_correlation_eigenvalue(torch.tensor([[1.0, 2, 3], [5.0, 5, 5]])) == pytest.approx(
        0.0
    )


class FixedMap(nn.Module):
    """Outputs the same (1, 2, 2, 2) map whatever its input: channels are the rows above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            torch.tensor([[1.0, 2, 3, 4], [1.0, 3, 2, 4]])
            .reshape(1, 2, 2, 2)
            .expand(len(x), -1, -1, -1)
        )


def test_meco_sums_over_module_outputs() -> None:
    probe = Scorer(None, num_classes=10, batch_size=4).probe(
        nn.Sequential(FixedMap(), nn.Identity()), 0
    )
    # Three module outputs (the Sequential, FixedMap, Identity), each with minimum eigenvalue 0.2.
    assert get_proxy("meco").fn(probe) == pytest.approx(0.6, abs=1e-12)


# --------------------------------------------------------------------------------------- SWAP


def test_swap_counts_distinct_sample_wise_patterns() -> None:
    # Units over 4 samples: u0 = u1 = (on, off, on, off), u2 never on, u3 = (on, on, on, on).
    pre = torch.tensor([[1.0, 2, -1, 3], [-1, -2, -1, 1], [2, 1, -3, 2], [-2, -1, -1, 4]])
    mode = ActivationPatterns(4)
    with mode:
        F.relu(pre.reshape(4, 1, 1, 4))
        nn.ReLU()(pre.reshape(4, 1, 4))  # the same units again (a module call): no new pattern
        F.relu(pre)  # 2-D (a classifier head's input): not counted
    assert mode.count() == 3


def test_swap_on_a_hand_built_relu_net() -> None:
    # 1x1 convs with fixed weights on a one-pixel input: units are (x, -x, 2x), patterns
    # (x > 0), (x < 0), (x > 0): two distinct patterns for inputs of both signs.
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 2.0]).reshape(3, 1, 1, 1))
    x = torch.tensor([1.0, -2.0, 3.0, -0.5]).reshape(4, 1, 1, 1)
    mode = ActivationPatterns(4)
    with torch.no_grad(), mode:
        net(x)
    assert mode.count() == 2


# --------------------------------------------------------------------------------------- ZiCo


def test_zico_on_known_gradients() -> None:
    # Layer 1: weight 0 has |g| mean 2 over batches (1, 3) and std 1; weight 1 never varies (left
    # out). Layer 2: mean |g| 2 over (-1, 3), std 2: log 1 = 0. Layer 3: constant, contributes 0.
    layer1 = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    layer2 = torch.tensor([[-1.0], [3.0]])
    layer3 = torch.zeros(2, 4)
    assert zico_from_gradients([layer1, layer2, layer3]) == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------------------------- aggregates


def test_log_rank_sum_by_hand() -> None:
    got = log_rank_sum([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    want = [math.log(1 / 3) + math.log(1.0), 2 * math.log(2 / 3), math.log(1.0) + math.log(1 / 3)]
    assert got == pytest.approx(want)
    # Non-finite values rank lowest, tied; ties share the average rank.
    got = log_rank_sum([[float("nan"), 5.0, -math.inf, 5.0]])
    assert got == pytest.approx(
        [math.log(1.5 / 4), math.log(3.5 / 4), math.log(1.5 / 4), math.log(3.5 / 4)]
    )


def test_paper_aggregates_name_registered_terms() -> None:
    for terms in PAPER_AGGREGATES.values():
        for t in terms:
            assert get_proxy(t).higher_is_better, t
    cols = {t: [1.0, 2.0] for t in PAPER_AGGREGATES["az_nas"]}
    assert paper_aggregate("az_nas", cols) == pytest.approx([4 * math.log(0.5), 0.0])
    with pytest.raises(ValueError, match="vkdnw_jacov"):
        paper_aggregate("vkdnw_agg", cols)


# ------------------------------------------------------------------------- blocks and spaces


def test_feature_blocks_of_every_family() -> None:
    space = get_space("nb201")
    with torch.device("meta"):
        nb = space.build(NB201_CELL, 10)
        s1 = get_space("s1").build("315", 10)
        pit = get_space("pit").build(get_space("pit").rank_archs()[0], 10)
        af = get_space("autoformer").build(get_space("autoformer").rank_archs()[0], 10)
    assert feature_blocks(nb) == list(nb.cells) and len(nb.cells) == 17
    assert len(feature_blocks(s1)) == 3 + 1 + 5
    assert feature_blocks(pit) == [b for s in pit.stages for b in s.blocks]
    assert feature_blocks(af) == list(af.blocks)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    assert feature_blocks(seq) == [seq[0], seq[1]]


def test_kaiming_init_is_seeded_and_fan_in_scaled() -> None:
    a, b = (kaiming_fan_in_(nn.Conv2d(64, 32, 3), 5) for _ in range(2))
    assert torch.equal(a.weight, b.weight) and not a.bias.any()
    assert a.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert not torch.equal(a.weight, kaiming_fan_in_(nn.Conv2d(64, 32, 3), 6).weight)


def test_deterministic_under_a_seed_and_seed_dependent() -> None:
    scorer = Scorer.for_space(get_space("nb201"), None, num_classes=10, batch_size=16)
    first = scorer.evaluate(NB201_CELL, TERMS, 0)
    again = Scorer.for_space(get_space("nb201"), None, num_classes=10, batch_size=16).evaluate(
        NB201_CELL, TERMS, 0
    )
    assert first == again
    other = scorer.evaluate(NB201_CELL, TERMS, 1)
    assert other["az_expressivity"] != first["az_expressivity"]
    assert other["trainable_layers"] == first["trainable_layers"]


def _smallest(space_name: str) -> str:
    space = get_space(space_name)
    size = space.dataset(None).image_size
    archs = {space.sample(random.Random(i)) for i in range(20)}
    return min(sorted(archs), key=lambda a: space.cost(a, 10, size).params)


@pytest.mark.parametrize("space_name", list_spaces())
def test_finite_on_every_space_small_student(space_name: str) -> None:
    space = get_space(space_name)
    size = space.dataset(None).image_size
    scorer = Scorer.for_space(space, None, num_classes=10, batch_size=4, image_size=size)
    values = scorer.evaluate(_smallest(space_name), TERMS, 0)
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    assert not bad, f"{space_name}: {bad}"
