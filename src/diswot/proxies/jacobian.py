"""Input-Jacobian proxies: jacov (Mellor et al., 2020 v1) and epe_nas (Lopes et al., 2021).

Both read the shared batch Jacobian ``J[n] = d sum(logits[n]) / d x[n]``
(:func:`~diswot.proxies._shared.input_jacobian`): a network whose per-sample Jacobians are less
correlated separates inputs better at initialisation.

* ``jacov``: ``-sum_i [log(v_i + k) + 1 / (v_i + k)]`` over the eigenvalues ``v`` of the
  ``N x N`` correlation matrix of the Jacobians, ``k = 1e-5``. Its maximum is ``-N`` (identity
  correlation), which is how one can tell from NASLib's scores that they used a batch of 32.
* ``epe_nas``: the same correlations computed within each class; per class ``s_c = sum log(|corr| +
  k)`` (divided by the class's sample count when there are more than 100 classes), and the score is
  ``sum_{c, c'} |s_c - s_c'| / (number of classes seen)``. A class with one sample in the batch has a
  1x1 correlation of 1; as in NASLib it then contributes ``log(1 + k)`` for up to 100 classes and is
  skipped above that. With the default batch of 64 and 100 classes every class has at most one
  sample and the score is constant: use a batch of several samples per class (``--batch-size``) to
  make epe_nas informative there.

A network whose output does not depend on its input (an NB201 cell with no path from input to
output) has an all-zero Jacobian; its correlations are undefined and both proxies give NaN (NASLib
stores a ``-1e8`` sentinel instead; both rank such networks last).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diswot.proxies._shared import finite_or_nan, input_jacobian
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

_K = 1e-5


def _corrcoef(rows: np.ndarray) -> np.ndarray | None:
    """Row correlation matrix, or ``None`` when a row is constant (correlation undefined)."""
    with np.errstate(all="ignore"):
        c = np.corrcoef(rows)
    return c if np.isfinite(c).all() else None


@register_proxy("jacov", needs_grad=True)
def jacov(probe: StudentProbe) -> float:
    """Jacobian covariance score of the batch's input gradients (higher is better)."""
    jac = input_jacobian(probe).cpu().numpy()
    corr = _corrcoef(jac)
    if corr is None:
        return math.nan
    v = np.linalg.eigvalsh(corr)
    with np.errstate(all="ignore"):
        return finite_or_nan(-np.sum(np.log(v + _K) + 1.0 / (v + _K)))


@register_proxy("epe_nas", needs_labels=True, needs_grad=True)
def epe_nas(probe: StudentProbe) -> float:
    """EPE-NAS: spread of per-class Jacobian-correlation scores (higher is better)."""
    jac = input_jacobian(probe).cpu().numpy()
    labels = probe.labels.detach().cpu().numpy()
    many = probe.num_classes > 100
    per_class: list[float] = []
    for c in np.unique(labels):
        rows = jac[labels == c]
        if len(rows) == 1:
            if many:
                continue
            per_class.append(math.log(1.0 + _K))
            continue
        corr = _corrcoef(rows)
        if corr is None:
            return math.nan
        s = float(np.sum(np.log(np.abs(corr) + _K)))
        per_class.append(s / len(corr) if many else s)
    if not per_class:
        return math.nan
    s = np.asarray(per_class)
    return finite_or_nan(np.abs(s[:, None] - s[None, :]).sum() / len(s))
