"""Activation-pattern proxies: nwot (Mellor et al., ICML 2021) and zen (Lin et al., ICCV 2021).

**nwot** ("NASWOT"): every ReLU's input is binarised per sample (``x > 0``); the ``N x N`` kernel
``K[i, j]`` counts the units on which samples ``i`` and ``j`` agree (both active or both inactive),
summed over all ReLU calls of one train-mode forward; the score is ``log |det K|`` (``-inf`` for a
singular kernel). The forward is the one of the shared input-Jacobian pass, so ``nwot`` is free when
``jacov`` or ``epe_nas`` is also asked for. ReLUs are caught
with a :class:`~torch.overrides.TorchFunctionMode`, so functional ``F.relu`` calls count as well as
``nn.ReLU`` modules (NASLib hooks ``nn.ReLU`` modules only; for the networks here both see the same
calls). GELU inputs are binarised the same way so that transformer students get a score too.

**zen**: Zen-NAS's expressivity score. The network is re-initialised with Zen-NAS's Gaussian init
(every Conv/Linear weight N(0, 1), norm layers 1/0, BN statistics reset: our ``gaussian`` scheme,
whatever ``--init`` says), fed its own Gaussian batch ``x`` and a perturbed copy ``x + 0.01 eps``
(probe-batch shape, seeded from the probe seed, never the probe images), and scored as
``log(mean_n sum |f(x) - f(x')|) + sum_BN log sqrt(mean(running_var))`` with ``f`` the feature map
entering global pooling. The second term is Zen-NAS's BN-variance rescaling: it puts back the scale
that each train-mode BN normalised away. As in the reference code it reads ``running_var`` after the
two forward passes (BN momentum and all), which is what NASLib's published Zen-scores used.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from diswot.features import FeatureExtractor
from diswot.models import init_weights
from diswot.proxies._shared import AgreementKernel, finite_or_nan, input_pass
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

__all__ = ["AgreementKernel", "nwot", "zen"]  # the kernel lives in _shared; named here too


@register_proxy("nwot")
def nwot(probe: StudentProbe) -> float:
    """NASWOT log|det K| of binary ReLU codes on the probe batch (higher is better)."""
    _, logdet = torch.linalg.slogdet(input_pass(probe).kernel)
    return float(logdet)


def _zen_features(fx: FeatureExtractor, x: Tensor) -> Tensor:
    return fx(x).feature_map.double()


@register_proxy("zen", needs_batchnorm=True)
def zen(probe: StudentProbe) -> float:
    """Zen-NAS score: log feature sensitivity to input noise plus BN-variance rescaling."""
    seed = probe.seed * 1000 + 3
    model = probe.fresh_model()
    init_weights(model, "gaussian", seed)
    model.train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = tuple(probe.inputs.shape)
    x = torch.randn(shape, generator=gen).to(probe.device)
    eps = torch.randn(shape, generator=gen).to(probe.device)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad(), probe.feature_extractor(model) as fx:
        fx(x[:2])  # locate the feature map on two samples, then forget what BN saw
        for m in bns:
            m.reset_running_stats()
        diff = (_zen_features(fx, x) - _zen_features(fx, x + 0.01 * eps)).abs()
    nas = float(diff.flatten(1).sum(1).mean())
    if not nas > 0:
        return -math.inf
    log_bn = 0.0
    for m in bns:
        if m.running_var is not None:
            log_bn += 0.5 * math.log(float(m.running_var.double().mean()))
    return finite_or_nan(math.log(nas) + log_bn) if math.isfinite(log_bn) else math.nan
