"""The DisWOT similarity metrics, computed exactly.

Two quantities compare a randomly initialised teacher and student on one labelled probe batch:

**Semantic similarity** ``M_s`` (ICKD on classifier gradients). ``g`` is the gradient of the
cross-entropy with respect to the final linear layer's weight, a ``K x C`` matrix. For every class ``k``
the paper forms the ``C x C`` matrix ``g_k g_k^T``, L2-normalises its rows and takes
``M_s = sum_k ||A_s,k - A_t,k||_F^2 / (C K)``. Row ``i`` of the normalised matrix is
``sign(g_k[i]) * g_k / ||g_k||``, so the Frobenius distance collapses to

    ||A_s,k - A_t,k||^2 / C = mean_i [sign(s_i)^2 + sign(t_i)^2 - 2 sign(s_i) sign(t_i) cos_k]

which with no exact zeros is ``2 - 2 m_k cos_k``. We evaluate this closed form in float64: it costs
``O(KC)`` instead of ``O(KC^2)``, and it does not suffer the failure of the matrix form, whose
``F.normalize`` (eps 1e-12) silently zeroes class rows of magnitude ~1e-7 in float32 (common under the
paper's N(0,1) init, where the softmax is nearly one-hot).

The channel form needs equal widths. When widths differ we use a **width-independent** form: the
``K x K`` class-relation matrix ``R = g g^T`` with L2-normalised rows, compared as
``||R_s - R_t||^2 / K^2`` (bounded by ``4 / K``). :func:`semantic_similarity` picks the form
automatically and reports which.

**Relation similarity** ``M_r`` (similarity-preserving KD): pre-pool features flattened per sample,
``G = F F^T`` (``N x N``) with L2-normalised rows, ``M_r = ||G_t - G_s||^2 / N^2`` (bounded by ``4/N``).
It works across any widths and resolutions.

The classifier gradient has the closed form ``(softmax(z) - onehot(y))^T h / N`` with ``h`` the classifier
input, so scoring never needs a backward pass through the network (:func:`classifier_gradient`).

Half of each comparison is the teacher's, the same for every candidate: :class:`Reference` holds
those terms once per teacher and seed, and the scores computed with it are the same numbers
(the same operations on the same inputs, only not repeated).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.losses import gram_distance, unit_gram
from diswot.losses import unit_rows as _unit_rows

SemanticMode = Literal["auto", "channel", "class"]


def classifier_gradient(logits: Tensor, pooled: Tensor, labels: Tensor) -> Tensor:
    """Gradient of mean cross-entropy w.r.t. the final ``nn.Linear`` weight, in closed form.

    ``dL/dW = (softmax(z) - onehot(y))^T h / N``, a ``K x C`` float64 tensor. Computed in float64 so
    tiny class rows survive. Nothing is accumulated anywhere: it is a pure function of the forward pass.
    """
    z = logits.detach().double()
    h = pooled.detach().double().flatten(1)
    p = torch.softmax(z, dim=1)
    p[torch.arange(z.shape[0], device=z.device), labels] -= 1.0
    return p.t().mm(h) / z.shape[0]


class Reference:
    """The teacher's side of :func:`diswot_score` for one teacher pass, each term computed on
    first use and kept: scoring many students against one teacher then does only their half.

    Args:
        grad: the teacher's classifier gradient (``K x C``).
        feature_map: its pre-pool features (``N x ...``); only ``M_r`` needs them.
    """

    def __init__(self, grad: Tensor, feature_map: Tensor | None = None) -> None:
        self.grad = grad.double()
        self.feature_map = feature_map

    @cached_property
    def sign(self) -> Tensor:
        return torch.sign(self.grad)

    @cached_property
    def sign_square(self) -> Tensor:
        return self.sign.square()

    @cached_property
    def unit_grad(self) -> Tensor:
        return _unit_rows(self.grad)

    @cached_property
    def class_relation(self) -> Tensor:
        """Row-normalised ``g g^T`` (the width-independent ``M_s``)."""
        return _unit_gram(self.grad)

    @cached_property
    def sample_relation(self) -> Tensor:
        """Row-normalised ``F F^T`` (``M_r``)."""
        if self.feature_map is None:
            raise ValueError("this Reference was made without the teacher's feature map")
        return _unit_gram(self.feature_map)


def _as_reference(g_t: Tensor | Reference) -> Reference:
    """``g_t`` as a :class:`Reference` (a bare teacher gradient gets a throwaway one)."""
    return g_t if isinstance(g_t, Reference) else Reference(g_t)


def semantic_channel(g_t: Tensor | Reference, g_s: Tensor) -> Tensor:
    """Exact channel-form ``M_s`` for equal widths (see the module docstring)."""
    ref = _as_reference(g_t)
    if ref.grad.shape != g_s.shape:
        raise ValueError(
            f"channel form needs equal shapes, got {tuple(ref.grad.shape)} and {tuple(g_s.shape)}"
        )
    g_s = g_s.double()
    st, ss = ref.sign, torch.sign(g_s)
    cos = (ref.unit_grad * _unit_rows(g_s)).sum(dim=1)  # (K,)
    per_class = (ref.sign_square + ss.square()).mean(dim=1) - 2.0 * (st * ss).mean(dim=1) * cos
    return per_class.mean()


def semantic_channel_reference(g_t: Tensor, g_s: Tensor) -> Tensor:
    """The paper's matrix definition, in float64; ``O(K C^2)`` memory, kept for tests and audits."""
    g_t, g_s = g_t.double(), g_s.double()
    k, c = g_t.shape
    a_t = F.normalize(g_t.unsqueeze(2) * g_t.unsqueeze(1), dim=2, eps=0.0).nan_to_num(0.0)
    a_s = F.normalize(g_s.unsqueeze(2) * g_s.unsqueeze(1), dim=2, eps=0.0).nan_to_num(0.0)
    return (a_s - a_t).square().sum() / (c * k)


def _unit_gram(x: Tensor) -> Tensor:
    """``X X^T`` of ``x`` flattened per row, in float64, with L2-normalised rows."""
    return unit_gram(x.double())


def _gram_distance(g_t: Tensor, x_s: Tensor) -> Tensor:
    """``||G_t - norm_rows(X_s X_s^T)||^2 / n^2`` in float64, ``G_t`` already a :func:`_unit_gram`."""
    return gram_distance(_unit_gram(x_s), g_t)


def semantic_class(g_t: Tensor | Reference, g_s: Tensor) -> Tensor:
    """Width-independent ``M_s``: distance between the ``K x K`` class-relation matrices."""
    ref = _as_reference(g_t)
    if ref.grad.shape[0] != g_s.shape[0]:
        raise ValueError(f"teacher has {ref.grad.shape[0]} classes, student {g_s.shape[0]}")
    return _gram_distance(ref.class_relation, g_s)


def semantic_similarity(
    g_t: Tensor | Reference, g_s: Tensor, mode: SemanticMode = "auto"
) -> tuple[Tensor, str]:
    """``M_s`` and the form used (``"channel"`` or ``"class"``); ``auto`` picks channel when widths match."""
    ref = _as_reference(g_t)
    if mode == "auto":
        mode = "channel" if ref.grad.shape == g_s.shape else "class"
    if mode == "channel":
        return semantic_channel(ref, g_s), "channel"
    if mode == "class":
        return semantic_class(ref, g_s), "class"
    raise ValueError(f"unknown semantic mode {mode!r}; use auto, channel or class")


def relation_similarity(f_t: Tensor | Reference, f_s: Tensor) -> Tensor:
    """``M_r``: SP distance between the ``N x N`` sample-relation matrices of pre-pool features."""
    n_t = f_t.sample_relation.shape[0] if isinstance(f_t, Reference) else f_t.shape[0]
    if n_t != f_s.shape[0]:
        raise ValueError(f"batch sizes differ: {n_t} vs {f_s.shape[0]}")
    g_t = f_t.sample_relation if isinstance(f_t, Reference) else _unit_gram(f_t)
    return _gram_distance(g_t, f_s)


def diswot_score(
    g_t: Tensor | Reference,
    f_t: Tensor | None,
    g_s: Tensor,
    f_s: Tensor,
    mode: SemanticMode = "auto",
) -> dict[str, float | str]:
    """DisWOT score ``-(M_s + M_r)`` (higher is better) with both components and the semantic form.

    ``g_t`` may be the teacher's :class:`Reference` (then ``f_t`` is ignored and may be ``None``):
    the same numbers, without recomputing the teacher's terms.
    """
    ref = g_t if isinstance(g_t, Reference) else Reference(g_t, f_t)  # type: ignore[arg-type]
    ms, form = semantic_similarity(ref, g_s, mode)
    mr = relation_similarity(ref, f_s)
    # One device-to-host read for all three numbers: the only synchronisation a candidate needs.
    score, ms_v, mr_v = torch.stack([-(ms + mr), ms, mr]).tolist()
    return {"score": score, "ms": ms_v, "mr": mr_v, "semantic_form": form}
