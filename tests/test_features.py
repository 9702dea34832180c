"""Hook-based feature access on models the package does not know."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor
from diswot.models import create_model, init_weights
from diswot.models.imagenet_resnet import ZenResNet
from diswot.models.nb201 import NB201Network
from diswot.spaces import get_space


class OddNet(nn.Module):
    """A user model with unusual names, an auxiliary Linear and a functional pooling."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.aux = nn.Linear(12, 12)  # runs before the head; must not be taken as classifier
        self.squash = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        p = self.squash(f).flatten(1)
        return self.head(p + 0.0 * self.aux(p))


class NoPoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).mean(dim=(2, 3)))


def test_autodetect_on_unknown_model() -> None:
    model = OddNet()
    x = torch.randn(4, 3, 8, 8)
    with FeatureExtractor(model) as fx:
        f = fx(x)
        assert fx.classifier_name == "head"
        assert fx.feature_name == "squash"
    assert f.logits.shape == (4, 7)
    assert f.feature_map.shape == (4, 12, 8, 8)
    assert torch.allclose(f.pooled, f.feature_map.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(f.logits, model.head(f.pooled), atol=1e-6)
    # hooks removed on exit: a plain forward leaves nothing behind
    assert not model.head._forward_pre_hooks


def test_fallback_to_last_4d_output_and_explicit_names() -> None:
    model = NoPoolNet()
    x = torch.randn(3, 3, 6, 6)
    f = FeatureExtractor(model)(x)
    assert f.feature_map.shape == (3, 8, 6, 6)
    fx = FeatureExtractor(model, classifier="out", feature="conv")
    assert fx(x).feature_map.shape == (3, 8, 6, 6)


def test_clear_errors() -> None:
    with pytest.raises(DiswotError, match="not found"):
        FeatureExtractor(OddNet(), classifier="nope")
    with pytest.raises(DiswotError, match="not nn.Linear"):
        FeatureExtractor(OddNet(), classifier="body")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(DiswotError, match="must return logits"):
        FeatureExtractor(net)(torch.randn(2, 3, 5, 5))
    net2 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net2.eval()
    with pytest.raises(DiswotError, match="no nn.Linear classifier"):
        FeatureExtractor(net2)(torch.randn(2, 3, 5, 5))


# -- which pool is "the" pool: only one that collapses the spatial extent ---------------------------


class StemMaxPoolMeanNet(nn.Module):
    """The audit's model: conv -> stem MaxPool2d -> conv -> x.mean((2, 3)) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.mp = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.mp(self.conv1(x))).mean((2, 3)))


class StridedAvgThenGapNet(nn.Module):
    """An intermediate stride-2 AvgPool2d and a final AdaptiveAvgPool2d(1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.AvgPool2d(2, stride=2)
        self.conv2 = nn.Conv2d(8, 24, 3, padding=1)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv2(self.down(self.conv1(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


class GlobalMaxNet(nn.Module):
    """Stem max-pool, then a final AdaptiveMaxPool2d(1) as the global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.gmp = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gmp(self.body(self.stem(x))).flatten(1))


class FunctionalPoolNet(nn.Module):
    """Stem max-pool, a stride-2 AvgPool2d between stages, functional global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.stage1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.down = nn.AvgPool2d(2, stride=2)
        self.stage2 = nn.Sequential(nn.Conv2d(16, 20, 3, padding=1), nn.BatchNorm2d(20))
        self.linear = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1))


class FixedAvgGlobalNet(nn.Module):
    """A non-adaptive AvgPool2d whose output is 1 x 1 is the global pool; the stem pool is not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.mp = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 10, 3, padding=1)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv2(self.mp(self.conv1(x)))).flatten(1))


class PoolThenMeanNet(nn.Module):
    """A non-global pool is the last 4-D producer before functional pooling: its output is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).mean((2, 3)))


def _extract(model: nn.Module, x: torch.Tensor) -> tuple[FeatureExtractor, object, object]:
    with torch.no_grad(), FeatureExtractor(model) as fx:
        first = fx(x)  # detection pass
        second = fx(x)  # hook pass
    return fx, first, second


def test_stem_maxpool_with_functional_mean_takes_the_last_map() -> None:
    model = StemMaxPoolMeanNet()
    x = torch.randn(2, 3, 64, 64)
    fx, f, g = _extract(model, x)
    assert fx.classifier_name == "fc"
    assert fx.feature_name == "conv2"  # not the stem pool "mp"
    for feats in (f, g):
        assert feats.feature_map.shape == (2, 32, 16, 16)
        assert torch.allclose(feats.pooled, feats.feature_map.mean((2, 3)), atol=1e-6)
    assert torch.equal(f.feature_map, g.feature_map)


def test_intermediate_strided_avgpool_is_skipped_for_the_final_gap() -> None:
    model = StridedAvgThenGapNet()
    x = torch.randn(2, 3, 16, 16)
    fx, f, g = _extract(model, x)
    assert fx.feature_name == "gap"
    for feats in (f, g):
        assert feats.feature_map.shape == (2, 24, 8, 8)
        assert torch.allclose(feats.pooled, feats.feature_map.mean((2, 3)), atol=1e-6)


def test_final_adaptive_max_pool_is_the_global_pool() -> None:
    model = GlobalMaxNet()
    x = torch.randn(2, 3, 32, 32)
    fx, f, g = _extract(model, x)
    assert fx.classifier_name == "head"
    assert fx.feature_name == "gmp"  # not the stem's MaxPool2d "stem.1"
    for feats in (f, g):
        assert feats.feature_map.shape == (2, 12, 16, 16)
        assert torch.equal(feats.pooled, feats.feature_map.amax((2, 3)))


def test_functional_pooling_with_stem_maxpool_and_strided_avgpool() -> None:
    model = FunctionalPoolNet().eval()
    x = torch.randn(2, 3, 64, 64)
    fx, f, g = _extract(model, x)
    assert fx.classifier_name == "linear"
    assert fx.feature_name == "stage2.1"  # last 4-D leaf output; neither "stem.3" nor "down"
    for feats in (f, g):
        assert feats.feature_map.shape == (2, 20, 8, 8)
        assert torch.allclose(feats.pooled, F.relu(feats.feature_map).mean((2, 3)), atol=1e-6)


def test_fixed_size_pool_with_1x1_output_is_global() -> None:
    fx, f, _ = _extract(FixedAvgGlobalNet(), torch.randn(2, 3, 16, 16))
    assert fx.feature_name == "pool"
    assert f.feature_map.shape == (2, 10, 8, 8)
    assert torch.allclose(f.pooled, f.feature_map.mean((2, 3)), atol=1e-6)


def test_non_global_pool_output_feeds_functional_pooling() -> None:
    fx, f, _ = _extract(PoolThenMeanNet(), torch.randn(2, 3, 8, 8))
    assert fx.feature_name == "pool"
    assert f.feature_map.shape == (2, 6, 4, 4)  # the pool's output, what x.mean reads
    assert torch.allclose(f.pooled, f.feature_map.mean((2, 3)), atol=1e-6)


# -- the shipped families: detected names recorded before the global-pool rule, unchanged -----------

_NB201 = "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|"
_SHIPPED = {
    # name: (factory, image size, extractor kwargs, (classifier, feature, from output), map shape)
    "cifar_resnet8": (
        lambda: create_model("resnet8", 10),
        32,
        {},
        ("fc", "avgpool", False),
        (64, 8, 8),
    ),
    "nb201": (
        lambda: NB201Network(_NB201, 10, C=4, N=1),
        16,
        {},
        ("classifier", "global_pooling", False),
        (16, 4, 4),
    ),
    "imagenet_resnet18": (
        lambda: create_model("resnet18", 10),
        64,
        {},
        ("fc", "avgpool", False),
        (512, 2, 2),
    ),
    "zen_resnet_stem_maxpool": (
        lambda: ZenResNet.from_arch("stem3x8mp|B3x8x1s1|K3x16m8x1s2", 10),
        32,
        {},
        ("fc", "avgpool", False),
        (16, 4, 4),
    ),
    "autoformer": (
        lambda: create_model("autoformer_ti", 10, arch="e64_r2-2_h2-2", image_size=32),
        32,
        {},
        ("head", "token_map", True),
        (64, 2, 2),
    ),
    "pit": (
        lambda: create_model("pit_ti", 10, arch="b16_r2_d1-1-1_h1-2-4", image_size=48),
        48,
        {},
        ("head", "token_map", True),
        (64, 2, 2),
    ),
    "pit_space_hooks": (
        lambda: create_model("pit_ti", 10, arch="b16_r2_d1-1-1_h1-2-4", image_size=48),
        48,
        dict(zip(("classifier", "feature"), get_space("pit").feature_hooks)),
        ("head", "token_map", True),
        (64, 2, 2),
    ),
}


@pytest.mark.parametrize("family", sorted(_SHIPPED))
def test_shipped_families_keep_their_detected_features(family: str) -> None:
    factory, size, kwargs, names, shape = _SHIPPED[family]
    model = init_weights(factory(), "gaussian", 0)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FeatureExtractor(model, **kwargs) as fx:
        f = fx(x)
        g = fx(x)
    assert (fx.classifier_name, fx.feature_name, fx._feature_from_output) == names
    assert f.feature_map.shape == (2, *shape)
    assert torch.equal(f.feature_map, g.feature_map) and torch.equal(f.pooled, g.pooled)
