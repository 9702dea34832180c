"""Tests for diswot.models: model zoo, NB201 encodings, exact cost, init schemes."""

from __future__ import annotations

import csv
import json
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE_DATA
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diswot.errors import DiswotError
from diswot.models import MODELS, create_model, init_weights, register_model
from diswot.models.cifar_resnet import CifarResNet
from diswot.models.cost import ModelCost, profile, profile_arch
from diswot.models.nb201 import (
    OPS,
    NB201Network,
    all_archs,
    arch_to_naslib,
    format_arch,
    naslib_to_arch,
    parse_arch,
)

# One intra-op thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

ZC_JSON = REFERENCE_DATA / "naslib-zc-nb201" / "zc_nasbench201_725archs.json"
NATS_CSV = REFERENCE_DATA / "nb201-test-acc" / "nats_bench.csv"
needs_zc = pytest.mark.reference_data(ZC_JSON)
needs_nats = pytest.mark.reference_data(NATS_CSV)

ALL_CONV3 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
README_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@lru_cache(maxsize=1)
def _zc() -> dict:
    return json.loads(ZC_JSON.read_text())


@lru_cache(maxsize=1)
def _nats_rows() -> list[dict[str, str]]:
    with NATS_CSV.open() as f:
        return list(csv.DictReader(f))


def _resnet_params(depths: tuple[int, int, int], num_classes: int) -> int:
    """Independent closed form for a 16/32/64 CIFAR ResNet with conv+BN shortcuts."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    c_in = 16
    for depth, w in zip(depths, (16, 32, 64)):
        for _ in range(depth):
            total += 9 * c_in * w + 9 * w * w + 4 * w
            if c_in != w:
                total += c_in * w + 2 * w
            c_in = w
    return total + 64 * num_classes + num_classes


def _resnet_macs(depths: tuple[int, int, int], num_classes: int, hw: int = 32) -> int:
    total = 3 * 16 * 9 * hw * hw
    c_in, size = 16, hw
    for stage, (depth, w) in enumerate(zip(depths, (16, 32, 64))):
        for b in range(depth):
            if stage > 0 and b == 0:
                size //= 2
            total += (9 * c_in * w + 9 * w * w) * size * size
            if c_in != w:
                total += c_in * w * size * size
            c_in = w
    return total + 64 * num_classes


# ------------------------------------------------------------------------------------------
# CIFAR ResNets


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 56, 110])
def test_resnet_sizes(depth: int) -> None:
    n = (depth - 2) // 6
    model = create_model(f"resnet{depth}", num_classes=100)
    assert isinstance(model, CifarResNet) and model.depths == (n, n, n)
    cost = profile(model, convention="macs")
    assert cost.params == _resnet_params((n, n, n), 100)
    assert cost.flops == _resnet_macs((n, n, n), 100)


def test_resnet20_reference_numbers() -> None:
    cost = profile(create_model("ResNet20", 100), convention="macs")
    assert cost == ModelCost(params=278_324, flops=40_818_944)
    assert round(cost.flops_m, 2) == 40.82
    names = dict(create_model("resnet20").named_modules())
    for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer3.2.bn2", "avgpool", "fc"):
        assert name in names
    assert isinstance(names["avgpool"], nn.AdaptiveAvgPool2d)
    assert all(m.bias is None for m in names.values() if isinstance(m, nn.Conv2d))


def test_s1_codes_and_depth_triples() -> None:
    m = create_model("713", num_classes=100)
    assert isinstance(m, CifarResNet) and m.depths == (7, 1, 3)
    assert [len(getattr(m, f"layer{i}")) for i in (1, 2, 3)] == [7, 1, 3]
    assert count(m) == _resnet_params((7, 1, 3), 100)
    assert count(create_model("333")) == count(create_model("resnet20"))
    assert count(create_model("resnet_7-1-3")) == count(m)
    big = create_model("resnet_12-1-10", num_classes=10)
    assert big.depths == (12, 1, 10) and count(big) == _resnet_params((12, 1, 10), 10)
    wide = create_model("111", num_classes=10, widths=(8, 16, 32))
    assert wide.fc.in_features == 32


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------
# NB201 encodings


def test_parse_format_and_edge_order() -> None:
    ops = parse_arch(README_ARCH)
    assert ops == (
        "nor_conv_3x3",  # 1<-0
        "nor_conv_3x3",  # 2<-0
        "avg_pool_3x3",  # 2<-1
        "skip_connect",  # 3<-0
        "nor_conv_3x3",  # 3<-1
        "skip_connect",  # 3<-2
    )
    assert format_arch(ops) == README_ARCH
    # NASLib order: 1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2; ids skip 0 none 1 conv3 2 conv1 3 pool 4.
    assert arch_to_naslib(README_ARCH) == (2, 2, 0, 4, 2, 0)
    assert naslib_to_arch("(2, 2, 0, 4, 2, 0)") == README_ARCH
    assert naslib_to_arch((2, 2, 0, 4, 2, 0)) == README_ARCH


def test_all_archs() -> None:
    archs = all_archs()
    assert len(archs) == 15_625 == len(set(archs))
    assert archs[0] == format_arch(("none",) * 6) and archs == all_archs()


@needs_nats
def test_converters_round_trip_on_nats_bench_strings() -> None:
    strings = [r["ArchitectureString"] for r in _nats_rows()]
    assert sorted(strings) == sorted(all_archs())
    for s in strings:
        assert format_arch(parse_arch(s)) == s
        assert naslib_to_arch(arch_to_naslib(s)) == s
        assert naslib_to_arch(str(arch_to_naslib(s))) == s


@needs_zc
@needs_nats
def test_naslib_edge_order_agrees_with_accuracies() -> None:
    """Params/FLOPs cannot tell edges 2<-1 and 3<-0 apart; accuracies can.

    NASLib's CIFAR-100 validation accuracy and NB201's test accuracy (disjoint halves of the same
    test set) of the same cell agree closely; swapping the two edges destroys that agreement.
    """
    acc = {r["ArchitectureString"]: float(r["CIFAR100TestAccuracy200Epochs"]) for r in _nats_rows()}

    def mean_gap(swap: bool) -> float:
        gaps = []
        for key, rec in _zc()["cifar100"].items():
            t = [int(v) for v in key.strip("()").split(",")]
            if swap:
                t[2], t[3] = t[3], t[2]
            gaps.append(abs(acc[naslib_to_arch(tuple(t))] - rec["val_accuracy"]))
        return sum(gaps) / len(gaps)

    assert mean_gap(False) < 0.5 < 3.0 < mean_gap(True)


# ------------------------------------------------------------------------------------------
# NB201 network


@pytest.mark.parametrize("op", OPS)
def test_each_op_alone(op: str) -> None:
    """Cell with ``op`` on edge 3<-0 and ``none`` elsewhere computes exactly ``op(x)``."""
    arch = format_arch(("none", "none", "none", op, "none", "none"))
    net = NB201Network(arch, num_classes=10).eval()
    cell = net.cells[0]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = cell(x)
        if op == "none":
            expected = torch.zeros_like(x)
        elif op == "skip_connect":
            expected = x
        elif op == "avg_pool_3x3":
            expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        else:
            expected = cell.edges[3](x)
            k = 1 if op == "nor_conv_1x1" else 3
            assert cell.edges[3][1].kernel_size == (k, k) and cell.edges[3][1].bias is None
    torch.testing.assert_close(y, expected)
    per_cell = {"nor_conv_1x1": 16 * 16 + 32, "nor_conv_3x3": 9 * 16 * 16 + 32}.get(op, 0)
    assert count(cell) == per_cell
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_all_conv3x3_reference_numbers() -> None:
    net = create_model(ALL_CONV3, num_classes=10)
    cost = profile(net)
    assert cost == ModelCost(params=1_531_546, flops=222_860_992)
    assert round(cost.params_m, 4) == 1.5315 and round(cost.flops_m, 2) == 222.86
    # NB201's own get_model_infos counts conv/linear only: 220.12 M.
    assert profile(net, convention="macs").flops == 220_119_680
    names = dict(net.named_modules())
    assert {"stem", "cells", "lastact", "global_pooling", "classifier"} <= set(names)
    assert isinstance(names["global_pooling"], nn.AdaptiveAvgPool2d)


def test_disconnected_cell_builds_and_outputs_zeros() -> None:
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"
    net = create_model(arch, num_classes=10).eval()
    with torch.no_grad():
        assert torch.count_nonzero(net.cells[0](torch.randn(1, 16, 8, 8))) == 0
        a, b = net(torch.randn(1, 3, 32, 32)), net(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(a, b)  # the input cannot reach the logits
    assert count(net.cells[0]) == 2 * (9 * 16 * 16 + 32) + 16 * 16 + 32  # dead ops still exist


@pytest.mark.parametrize(
    ("name", "num_classes", "hw"),
    [("resnet20", 100, 32), ("713", 10, 32), ("resnet_1-3-5", 120, 16), (README_ARCH, 120, 16)],
)
def test_forward_shapes(name: str, num_classes: int, hw: int) -> None:
    model = create_model(name, num_classes=num_classes)
    assert model(torch.randn(2, 3, hw, hw)).shape == (2, num_classes)


# ------------------------------------------------------------------------------------------
# Cost: NASLib agreement


def _check_naslib(dataset: str, num_classes: int, hw: int, stride: int) -> int:
    checked = 0
    for key, rec in list(_zc()[dataset].items())[::stride]:
        cost = profile_arch(naslib_to_arch(key), num_classes, (1, 3, hw, hw))
        # NASLib prints millions with 6 decimals, i.e. exact integers.
        assert f"{cost.params / 1e6:.6f}" == f"{rec['params']['score']:.6f}", key
        assert f"{cost.flops / 1e6:.6f}" == f"{rec['flops']['score']:.6f}", key
        checked += 1
    return checked


@needs_zc
def test_naslib_params_flops_all_cifar10_cells() -> None:
    assert _check_naslib("cifar10", 10, 32, stride=1) == 725


@needs_zc
@pytest.mark.parametrize(
    ("dataset", "num_classes", "hw"), [("cifar100", 100, 32), ("ImageNet16-120", 120, 16)]
)
def test_naslib_params_flops_other_datasets(dataset: str, num_classes: int, hw: int) -> None:
    assert _check_naslib(dataset, num_classes, hw, stride=12) >= 60


def test_counter_matches_flop_counter_mode() -> None:
    """Our lean counter must agree with torch's FlopCounterMode (conv, linear, matmul, attention)."""

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(12, 12)
            self.mha = nn.MultiheadAttention(12, 3, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.proj(x)
            return self.mha(h, h, h)[0] @ h.transpose(1, 2)

    for model, size in [
        (create_model("resnet8", 10), (2, 3, 32, 32)),
        (create_model(README_ARCH, 10), (1, 3, 16, 16)),
        (Attn(), (2, 5, 12)),
    ]:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with FlopCounterMode(display=False) as ref, torch.no_grad():
                model(torch.zeros(size))
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
        assert ref.get_total_flops() > 0
        assert profile(model, size, convention="macs").flops * 2 == ref.get_total_flops()


def test_profile_leaves_model_untouched() -> None:
    model = create_model("311", num_classes=10)
    model.train()
    model.layer2.eval()  # mixed flags must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (4, 3, 32, 32))
    assert model.training and not model.layer2.training and not model.layer2[0].bn1.training
    assert model.layer1[0].bn1.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_profile_batch_and_cache() -> None:
    one = profile_arch("resnet8", 10, (1, 3, 32, 32))
    four = profile(create_model("resnet8", 10), (4, 3, 32, 32))
    assert four.flops == 4 * one.flops and four.params == one.params
    hits = profile_arch.cache_info().hits
    assert profile_arch("resnet8", 10, [1, 3, 32, 32]) is one
    assert profile_arch.cache_info().hits == hits + 1


# ------------------------------------------------------------------------------------------
# Init


def test_gaussian_init() -> None:
    a = init_weights(create_model("resnet14", 10), "gaussian", seed=3)
    b = init_weights(create_model("resnet14", 10), "gaussian", seed=3)
    c = init_weights(create_model("resnet14", 10), "gaussian", seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    w = torch.cat([m.weight.flatten() for m in a.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 0.01 and abs(w.std().item() - 1) < 0.01
    assert torch.all(a.fc.bias == 0)
    bn = a.layer2[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def _gaussian_reference(model: nn.Module, seed: int) -> nn.Module:
    """The gaussian init written plainly, one layer at a time (what the batched one must equal)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
    return model


@pytest.mark.parametrize(
    "arch",
    [
        "resnet20",
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    ],
)
def test_gaussian_init_equals_the_layer_by_layer_definition(arch: str) -> None:
    a = create_model(arch, 10)
    with torch.no_grad():  # dirty every parameter and buffer first, so nothing passes by luck
        for t in (*a.parameters(), *a.buffers()):
            t.fill_(7)
    init_weights(a, "gaussian", seed=5)
    b = _gaussian_reference(create_model(arch, 10), 5)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_default_init_is_seeded_pytorch_init() -> None:
    a = init_weights(create_model("resnet8", 10), "default", seed=7)
    b = init_weights(create_model("resnet8", 10), "default", seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    # Still PyTorch's kaiming-uniform init, not N(0, 1).
    assert a.conv1.weight.abs().max() < 1.0
    m = create_model("resnet8", 10)
    before = m.conv1.weight.clone()
    init_weights(m, "default", seed=None)
    assert torch.equal(before, m.conv1.weight)


# ------------------------------------------------------------------------------------------
# Registry and errors


def test_register_model_is_one_decorator() -> None:
    @register_model("tiny_test_net")
    def tiny(num_classes: int = 100, **kw) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))

    try:
        assert "tiny_test_net" in MODELS and "resnet20" in MODELS.names("resnet*")
        assert create_model("TINY_TEST_NET", num_classes=7)(torch.zeros(1, 3, 4, 4)).shape == (1, 7)
    finally:
        MODELS._items.pop("tiny_test_net")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|",
        "|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
        "|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
        "nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
    ],
)
def test_parse_arch_rejects_malformed(bad: str) -> None:
    with pytest.raises(DiswotError) as err:
        parse_arch(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: create_model("resnet21"), "accepted"),
        (lambda: create_model("7133"), "accepted"),
        (lambda: create_model("703"), "accepted"),
        (lambda: create_model("resnet_0-1-1"), ">= 1"),
        (lambda: create_model("resnet20", num_classes=1), "--num-classes"),
        (lambda: create_model(README_ARCH, num_classes=0), "--num-classes"),
        (lambda: NB201Network(README_ARCH, num_classes=1), "--num-classes"),
        (lambda: CifarResNet((3, 3), num_classes=10), "3 stage depths"),
        (lambda: naslib_to_arch("(0, 1, 2)"), "6 op indices"),
        (lambda: naslib_to_arch((0, 1, 2, 3, 4, 5)), "6 op indices"),
        (lambda: naslib_to_arch("0, 1, 2, 3, 4, 1"), "NASLib tuple"),
        (lambda: format_arch(("none",) * 5), "6 ops"),
        (lambda: init_weights(nn.Linear(2, 2), "xavier", 0), "init scheme"),
        (lambda: profile(nn.Linear(2, 2), (1, 2), convention="gflops"), "convention"),
        (lambda: profile(nn.Linear(2, 2), (0, 2)), "input_size"),
    ],
)
def test_user_errors_are_one_line(call, needle: str) -> None:
    with pytest.raises(DiswotError) as err:
        call()
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


@pytest.mark.parametrize("convention", ["macs", "nb201"])
def test_hook_counter_equals_dispatch_counter(
    convention: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diswot's own networks are counted from leaf-module hooks (no dispatch mode, so no
    ``torch._dynamo`` import); the totals must be the dispatch counter's."""
    from diswot.models import cost

    cells = [README_ARCH, "|none~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|none~2|"]
    models = [create_model(a, 10) for a in cells]
    models += [create_model("resnet8", 100), create_model("713", 100)]
    x = torch.zeros(2, 3, 32, 32)
    by_hooks = []
    for model in models:
        assert cost._macs_in_leaves(model)
        with torch.no_grad():
            by_hooks.append(cost._count(model, x, convention))
    monkeypatch.setattr(cost, "_macs_in_leaves", lambda model: False)  # the dispatch counter
    with torch.no_grad():
        assert by_hooks == [cost._count(model, x, convention) for model in models]


def test_hook_counter_refuses_unknown_forwards() -> None:
    from diswot.models.cost import _macs_in_leaves

    class Scaled(nn.Linear):  # overrides forward: its MACs are not the Linear formula's
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) @ torch.ones(self.out_features, self.out_features)

    class Subnet(CifarResNet):  # inherits the flag's class, but not the flag
        pass

    assert not _macs_in_leaves(nn.Sequential(nn.Linear(4, 4), Scaled(4, 4)))
    assert not _macs_in_leaves(Subnet((1, 1, 1), num_classes=10))
    assert _macs_in_leaves(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    size = (2, 4)
    model = nn.Sequential(nn.Linear(4, 4), Scaled(4, 4))
    with FlopCounterMode(display=False) as ref, torch.no_grad():
        model(torch.zeros(size))
    assert profile(model, size, convention="macs").flops * 2 == ref.get_total_flops()
