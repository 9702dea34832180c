"""Hook-based feature access on models the package does not know."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diswot.errors import DiswotError
from diswot.features import FeatureExtractor


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
