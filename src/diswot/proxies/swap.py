"""SWAP (Peng, Song, Fayek, Ciesielski & Chang, "SWAP-NAS: Sample-Wise Activation Patterns for
Ultra-fast NAS", ICLR 2024; release: github.com/pym1024/SWAP).

A forward pass of :data:`SWAP_SAMPLES` samples (the first of the probe batch; the release's default
input batch) through the student under SWAP's N(0, 1) init (our ``gaussian`` scheme) in train
mode records, for every activation unit (each position of each ReLU's input, over all ReLU calls
with a feature-map input), its *sample-wise pattern*: the vector of its on/off states over the
samples. The SWAP score is the number of distinct patterns. As the release, the score is the mean
over :data:`SWAP_REPEATS` independent draws of the weights (the release: 32 draws; fewer here, see
below), each seeded from the probe's init seed.

ReLU calls are caught with a :class:`~torch.overrides.TorchFunctionMode`, so functional ``F.relu``
counts as well as ``nn.ReLU`` modules (the release hooks ``nn.ReLU`` modules whose input is 4-D; for
the networks here both see the same calls). Transformer students have GELUs instead: their inputs
(3-D tokens) are binarised the same way, so ViTs get a score too.

``swap_reg`` is the paper's size-regularised score ``swap * exp(-(params_k - mu)^2 / sigma)`` with
``params_k`` the parameter count in thousands (the release's ``count_parameters``). The paper's
NB201 values of ``mu`` and ``sigma`` were not found in the material available here, so
:data:`SWAP_MU` and :data:`SWAP_SIGMA` were chosen on the development split only (NB201 CIFAR-10,
the 500 cells of ``nb201_sample(500, 0)``: the best Spearman of a grid, 0.868 against 0.788
unregularised; ``benchmarks/sota_proxies.py --choose-swap``) and are applied unchanged to held-out
data. With them the factor runs from about 0.8 (the smallest NB201 cells) to 1 (the largest): a
mild preference for size.

:data:`SWAP_REPEATS` is 4, not the release's 32, to keep the cost at a few forward passes of 16
samples; ``benchmarks/sota_proxies.py`` stores every draw, so the spread over draws is measured.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from diswot.models import init_weights
from diswot.proxies._shared import cached, finite_or_nan
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: Samples whose patterns are compared (the release's default ``input_samples``).
SWAP_SAMPLES = 16
#: Independent weight draws averaged (the release: 32).
SWAP_REPEATS = 4
#: Size regulariser ``exp(-(params_k - mu)^2 / sigma)``, parameters in thousands (module docstring).
SWAP_MU = 1_500.0
SWAP_SIGMA = 1e7

_ACTIVATIONS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.gelu}


class ActivationPatterns(TorchFunctionMode):
    """Collects each activation unit's on/off pattern over the samples, packed into one integer."""

    def __init__(self, n: int) -> None:
        super().__init__()
        if not 1 <= n <= 62:
            raise ValueError(f"SWAP packs one bit per sample into an int64; got {n} samples")
        self.n = n
        self.weights = 2 ** torch.arange(n, dtype=torch.int64)
        self.codes: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in _ACTIVATIONS and args and isinstance(args[0], Tensor):
            x = args[0].detach()
            if x.dim() >= 3 and x.shape[0] == self.n:  # feature maps or tokens, not a head
                on = (x.reshape(self.n, -1) > 0).to(torch.int64).cpu()
                self.codes.append(self.weights @ on)
        return func(*args, **(kwargs or {}))

    def count(self) -> int:
        """Number of distinct patterns over every unit seen so far."""
        return int(torch.unique(torch.cat(self.codes)).numel()) if self.codes else 0


def swap_counts(probe: StudentProbe) -> list[int]:
    """The SWAP count of each weight draw (cached)."""

    def compute() -> list[int]:
        model = probe.fresh_model()
        model.train()
        x = probe.inputs[:SWAP_SAMPLES].detach()
        counts = []
        for r in range(SWAP_REPEATS):
            init_weights(model, "gaussian", probe.init_seed * SWAP_REPEATS + r)
            mode = ActivationPatterns(x.shape[0])
            with torch.no_grad(), mode:
                model(x)
            counts.append(mode.count())
        return counts

    return cached(probe, "swap_counts", compute)


@register_proxy("swap")
def swap(probe: StudentProbe) -> float:
    """SWAP: distinct sample-wise activation patterns (mean over weight draws)."""
    counts = swap_counts(probe)
    return finite_or_nan(sum(counts) / len(counts)) if any(counts) else math.nan


@register_proxy("swap_reg")
def swap_reg(probe: StudentProbe) -> float:
    """SWAP regularised by model size: swap * exp(-(params_k - mu)^2 / sigma)."""
    params_k = probe.cost.params / 1e3
    return finite_or_nan(swap(probe) * math.exp(-((params_k - SWAP_MU) ** 2) / SWAP_SIGMA))
