"""``GroupedNB201``: G NB201 candidates in one pass must give each candidate what it gives alone.

Against the one-candidate paths (the supernet and a built network) to float tolerance, not bit for
bit: a grouped convolution over several candidates, or the batched classifier, may use kernels that
sum in another order than the one-candidate convolution, so rtol 1e-4 / atol 1e-5 (a few float32
roundings through 15 layers of BatchNorm'd activations) is what "equal" means here.

Most cases use a smaller skeleton (C=8, N=2, 16x16 inputs, batch 8) to keep the file fast; one
runs the standard C=16, N=5 skeleton with the supernet's weight streams.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.models import init_weights
from diswot.models.nb201 import OPS, NB201Network, format_arch
from diswot.models.nb201_grouped import GroupedNB201, gaussian_weights, module_weights
from diswot.models.nb201_supernet import NB201Supernet

pytestmark = pytest.mark.usefixtures("one_thread")

C, N, CLASSES = 8, 2, 10
TOL = {"rtol": 1e-4, "atol": 1e-5}

# Edge order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
EDGE_CASES = {
    "all none": ["none"] * 6,
    "all skip": ["skip_connect"] * 6,
    "only pools": ["avg_pool_3x3"] * 6,
    "pools and none": ["avg_pool_3x3", "none", "avg_pool_3x3", "none", "none", "avg_pool_3x3"],
    # Node 2 dead (3<-2 none) though convs feed it.
    "dead node 2": ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "skip_connect",
                    "none"],
    # Node 1 dead: it feeds only node 2 (3<-1 none), which is dead.
    "dead node 1": ["nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "nor_conv_1x1", "none",
                    "none"],
    # Node 1 exactly zero (1<-0 none): the convs out of it compute nothing.
    "zero node 1": ["none", "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3",
                    "avg_pool_3x3"],
    "every op": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                 "nor_conv_3x3"],
    "all 3x3": ["nor_conv_3x3"] * 6,
}  # fmt: skip


def _cells() -> list[str]:
    rng = random.Random(7)
    sample = [format_arch([rng.choice(OPS) for _ in range(6)]) for _ in range(6)]
    return [format_arch(ops) for ops in EDGE_CASES.values()] + sample


def _input(batch: int = 8, size: int = 16, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_features(got, want, what: str) -> None:
    for name, a, b in zip(("logits", "feature_map", "pooled"), got, want):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=name: f"{what} {n}: {m}")


@pytest.mark.parametrize("G", [1, 2, 5])
def test_each_candidate_equals_the_supernet_and_a_built_network(G: int) -> None:
    sn = NB201Supernet(CLASSES, C=C, N=N)
    grouped = GroupedNB201(CLASSES, C=C, N=N)
    x = _input()
    cells = _cells()
    seeds = [100 + i for i in range(len(cells))]
    for start in range(0, len(cells), G):
        archs, group_seeds = cells[start : start + G], seeds[start : start + G]
        weights = [gaussian_weights(sn, a, s) for a, s in zip(archs, group_seeds)]
        with torch.no_grad():
            got = grouped.features(archs, weights, x)
        assert len(got) == len(archs)
        for arch, seed, feats in zip(archs, group_seeds, got):
            sn.load(arch, seed)
            net = init_weights(NB201Network(arch, CLASSES, C=C, N=N), "gaussian", seed).train()
            with torch.no_grad():
                _assert_features(feats, sn.features(x), f"supernet {arch}")
                _assert_features(feats, FeatureExtractor(net)(x), f"built {arch}")


def test_standard_skeleton_with_weight_streams() -> None:
    sn = NB201Supernet(100)
    assert sn.streams
    archs = [format_arch(EDGE_CASES["every op"]), format_arch(EDGE_CASES["dead node 1"])]
    x = _input(batch=4)
    weights = [gaussian_weights(sn, a, 5) for a in archs]
    with torch.no_grad():
        got = GroupedNB201(100).features(archs, weights, x)
        for arch, feats in zip(archs, got):
            sn.load(arch, 5)
            _assert_features(feats, sn.features(x), arch)


def test_a_candidate_does_not_depend_on_its_position_or_group_mates() -> None:
    sn = NB201Supernet(CLASSES, C=C, N=N)
    grouped = GroupedNB201(CLASSES, C=C, N=N)
    x = _input()
    cells = _cells()
    target = format_arch(EDGE_CASES["every op"])
    groups = [[target], [target, cells[0], cells[-1]], [cells[3], cells[-2], target]]
    results = []
    for group in groups:
        weights = [gaussian_weights(sn, a, 11 + i) for i, a in enumerate(group)]
        weights[group.index(target)] = gaussian_weights(sn, target, 42)
        with torch.no_grad():
            results.append(grouped.features(group, weights, x)[group.index(target)])
    for other in results[1:]:
        _assert_features(other, results[0], "grouped vs alone")


def test_gradients_reach_each_candidates_own_weights() -> None:
    # PyTorch-default init (ZiCo's): nonzero classifier biases, different seeds per candidate.
    archs = [format_arch(EDGE_CASES[k]) for k in ("every op", "dead node 1", "zero node 1")]
    archs.append(_cells()[-1])
    nets = [
        init_weights(NB201Network(a, CLASSES, C=C, N=N), "default", 20 + i).train()
        for i, a in enumerate(archs)
    ]
    x, y = _input(), torch.arange(8) % CLASSES
    slots = [module_weights(net) for net in nets]
    params = [[*w.values(), b] for w, b in slots]
    feats = GroupedNB201(CLASSES, C=C, N=N).features(
        archs, [w for w, _ in slots], x, biases=[b for _, b in slots]
    )
    loss = sum(F.cross_entropy(f.logits, y) for f in feats)
    flat = [p for group in params for p in group]
    grads = torch.autograd.grad(loss, flat, allow_unused=True)  # skipped edges: None, i.e. 0
    by_slot: list[dict] = []  # each candidate's grouped gradients by slot
    offset = 0
    for net, (w, _), group, feat in zip(nets, slots, params, feats):
        logits = net(x)
        torch.testing.assert_close(feat.logits, logits, **TOL)
        alone = torch.autograd.grad(F.cross_entropy(logits, y), group, allow_unused=True)
        mine = grads[offset : offset + len(group)]
        by_slot.append(dict(zip([*w, "bias"], mine)))
        for p, g, want in zip(group, mine, alone):
            torch.testing.assert_close(torch.zeros_like(p) if g is None else g, want, **TOL)
        offset += len(group)
    # The skipped work: edges into dead node 1 and out of zero node 1 (in the second cell, slot
    # index 1) take no part; the live 3<-0 convolution does.
    dead, zero = by_slot[1], by_slot[2]
    assert dead[(1, 0, "nor_conv_3x3")] is None and dead[(1, 2, "nor_conv_3x3")] is None
    assert dead[(1, 3, "nor_conv_1x1")] is not None
    assert zero[(1, 2, "nor_conv_3x3")] is None and zero[(1, 4, "nor_conv_3x3")] is None


def test_module_weights_are_the_modules_parameters() -> None:
    arch = format_arch(EDGE_CASES["every op"])
    net = NB201Network(arch, CLASSES, C=C, N=N)
    slots, bias = module_weights(net)
    convs = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(slots) == len(convs)
    assert {id(t) for t in slots.values()} == {id(t) for t in convs}
    assert bias is net.classifier.bias
    sn = NB201Supernet(CLASSES, C=C, N=N)
    assert set(slots) == set(gaussian_weights(sn, arch, 0))  # the supernet's slot keys


def test_bad_inputs_are_refused() -> None:
    arch = format_arch(EDGE_CASES["every op"])
    net = NB201Network(arch, CLASSES, C=C, N=N)
    with torch.no_grad():
        net.cells[0].edges[2][2].weight.fill_(2.0)
    with pytest.raises(DiswotError, match="BatchNorm scale 1"):
        module_weights(net)
    grouped = GroupedNB201(CLASSES, C=C, N=N)
    weights = gaussian_weights(NB201Supernet(CLASSES, C=C, N=N), arch, 0)
    with pytest.raises(DiswotError, match="one weight dict"):
        grouped.features([arch, arch], [weights], _input())
    with pytest.raises(DiswotError, match="lack slot"):
        grouped.features([format_arch(["nor_conv_1x1"] * 6)], [weights], _input())
    with pytest.raises(DiswotError, match="C=16"):
        GroupedNB201(CLASSES).features([arch], [weights], _input())


@pytest.mark.parametrize("streams", [True, False])
def test_supernet_weights_leave_the_loaded_candidate_alone(streams: bool) -> None:
    sn = NB201Supernet(CLASSES, streams=streams)
    arch, other = format_arch(EDGE_CASES["every op"]), format_arch(EDGE_CASES["all 3x3"])
    sn.load(arch, 1)
    x = _input(batch=2, size=8)
    with torch.no_grad():
        before = sn.features(x)
        mine = sn.weights(other, 2)
        for a, b in zip(sn.features(x), before):
            assert torch.equal(a, b)
        sn.load(other, 2)
        assert all(torch.equal(mine[key], sn._weights[key]) for key in mine)
    assert set(mine) == set(sn._draw_order(sn.ops))
