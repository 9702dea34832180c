"""NB201 candidates run G at a time: one forward pass whose channels hold every candidate.

On a GPU an NB201 candidate's forward pass is launch-bound (``docs/scale.md``): its kernels are tiny
and Python issues them one by one. :class:`GroupedNB201` runs G candidates as *one* network whose
activations are ``(N, G*C, H, W)``, candidate ``g`` owning channels ``g*C .. g*C+C-1``, so a launch
does the work of up to G candidates:

* convolutions are grouped convolutions (one group per candidate taking part), so no candidate
  sees another's channels;
* BatchNorm in train mode over the folded channels is per-candidate BatchNorm, its statistics being
  per channel; ReLU and pooling are per channel already;
* the classifier is one batched product of the pooled ``(N, G, C)`` with the stacked ``(G, K, C)``
  weights.

Inside a cell the candidates differ, so each edge runs each of its ops only on the candidates that
chose it: their channel groups are index-selected, the op runs on them (one grouped convolution
for all of them) and the result is index-added into the destination node. A batch therefore
costs about the sum of its candidates' FLOPs, not five ops per edge. Work whose result is exactly
zero or unread is skipped per candidate:

* an edge into a *dead* node, one whose value cannot reach the cell output (node 2 when edge
  ``3<-2`` is ``none``; node 1 when its outgoing edges are ``none`` or lead to a dead node): the
  built network multiplies that value by 0 on every path to the output;
* an edge out of a node that is exactly zero (every edge into it ``none``, or out of zero nodes):
  ReLU, pooling, convolution and train-mode BatchNorm (mean 0, variance 0, shift 0) all map zeros
  to zeros.

Both are exact for finite activations (a NaN or inf would survive the built network's ``x * 0``
but not a skipped edge; N(0, 1) or default-init weights on BatchNorm'd activations give none).
A skipped edge's weights take no part in the graph: ask ``torch.autograd.grad`` with
``allow_unused=True`` and read ``None`` as the zero gradient the built network gives them.

Values equal the one-candidate paths (:class:`~diswot.models.nb201_supernet.NB201Supernet`, a built
:class:`~diswot.models.nb201.NB201Network`) to float rounding, not bit for bit: a grouped or wider
convolution and the batched classifier may pick other kernels that sum in another order.

Only what those paths assume is covered: BatchNorm in train mode with scale 1 and shift 0
(:func:`module_weights` checks it), convolutions without bias, float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.errors import DiswotError
from diswot.features import Features
from diswot.models.nb201 import (
    EDGES,
    NB201Cell,
    NB201Network,
    ResNetReduction,
    cell_flags,
    parse_arch,
    skeleton,
)
from diswot.models.nb201_supernet import _BN_EPS, _BN_MOMENTUM, _KERNELS, NB201Supernet

__all__ = ["GroupedNB201", "gaussian_weights", "module_weights"]

#: The ops that compute something, in the order an edge runs them (disjoint candidates, so any).
_WORKING_OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Channel-index tensors kept on the device, by (candidates, width); cleared when it grows past this.
_INDEX_CACHE = 4096


class _Step(NamedTuple):
    """Op ``op`` on edge ``k`` (``src`` -> ``dst``), for the candidates ``members`` that run it."""

    k: int
    src: int
    dst: int
    op: str
    members: tuple[int, ...]


class _NodeSum:
    """A node's value, summed edge by edge in edge order (the built cell's order).

    The first whole-group contribution is taken as is, as the built cell does; a tensor this sum
    owns (made here, read by no backward) is added to in place, anything else out of place, so
    in-place updates never touch a tensor autograd saved.
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.owned = False

    def add(self, y: Tensor, index: Tensor | None, channels: int) -> None:
        """Add ``y``, the channels ``index`` of the node (all of them for ``None``)."""
        if index is None:  # every candidate of the group
            if self.total is None:
                self.total = y
            elif self.owned:
                self.total.add_(y)
            else:
                self.total = self.total + y
                self.owned = True
            return
        if self.total is None:
            n, _, h, w = y.shape
            self.total = y.new_zeros(n, channels, h, w)
            self.owned = True
        if not self.owned:
            self.total = self.total.index_add(1, index, y)
            self.owned = True
        else:
            self.total.index_add_(1, index, y)


class GroupedNB201:
    """G NB201 candidates (any cells, weights of their own) scored in one forward pass.

    Holds no weights: every call brings each candidate's (:func:`gaussian_weights`,
    :func:`module_weights`), so one instance serves every batch of candidates.

    Args:
        num_classes: classifier outputs.
        C: stem width (16 in NB201); stages have ``C``, ``2C``, ``4C`` channels.
        N: cells per stage (5 in NB201).
        device: where the forward runs (inputs and weights must be there).
    """

    def __init__(
        self, num_classes: int, *, C: int = 16, N: int = 5, device: str | torch.device = "cpu"
    ) -> None:
        if C < 1 or N < 1:
            raise DiswotError(f"GroupedNB201 needs C >= 1 and N >= 1; got C={C}, N={N}")
        self.num_classes = num_classes
        self.C, self.N = C, N
        self.device = torch.device(device)
        # Indices are the supernet's slot indices.
        self._plan = skeleton(C, N)
        self._final_width = 4 * C
        self._index: dict[tuple[tuple[int, ...], int], Tensor] = {}

    # -- the group's plan --------------------------------------------------------------------
    def _steps(self, cells: Sequence[tuple[str, ...]]) -> list[_Step]:
        """Every (edge, op) some candidate runs, with those candidates, in edge order: the same
        for every cell of the network, as every cell of a candidate is the same cell."""
        flags = [cell_flags(ops) for ops in cells]
        steps = []
        for k, (dst, src) in enumerate(EDGES):
            for op in _WORKING_OPS:
                members = tuple(
                    g
                    for g, (ops, (live, zero)) in enumerate(zip(cells, flags))
                    if ops[k] == op and live[dst] and not zero[src]
                )
                if members:
                    steps.append(_Step(k, src, dst, op, members))
        return steps

    def _channels(self, members: tuple[int, ...], width: int, groups: int) -> Tensor | None:
        """Channel indices of ``members``' groups at ``width`` (``None``: the whole group)."""
        if len(members) == groups:
            return None
        key = (members, width)
        index = self._index.get(key)
        if index is None:
            if len(self._index) >= _INDEX_CACHE:
                self._index.clear()
            start = torch.tensor(members, dtype=torch.long).mul_(width)
            index = (start[:, None] + torch.arange(width)).flatten().to(self.device)
            self._index[key] = index
        return index

    # -- forward -----------------------------------------------------------------------------
    def features(
        self,
        archs: Sequence[str],
        weights: Sequence[Mapping[tuple, Tensor]],
        x: Tensor,
        biases: Sequence[Tensor] | None = None,
    ) -> list[Features]:
        """Each candidate's logits, pre-pool feature map and pooled features on ``x``.

        ``weights[g]`` maps every slot candidate ``g`` uses to its tensor, keyed as in
        :class:`~diswot.models.nb201_supernet.NB201Supernet`; ``biases[g]`` is its classifier bias
        (zeros when ``biases`` is ``None``). The returned tensors are views into the group's
        tensors (slice ``g`` of the folded channels). Autograd flows back to every candidate's own
        tensors; the caller decides ``no_grad``.
        """
        G = len(archs)
        if G == 0 or len(weights) != G or (biases is not None and len(biases) != G):
            raise DiswotError(
                f"need one weight dict (and bias, if any) per arch; got {G} archs, "
                f"{len(weights)} weight dicts, {'no' if biases is None else len(biases)} biases"
            )
        if x.dim() != 4 or x.shape[1] != 3:
            raise DiswotError(f"input must be (N, 3, H, W); got {tuple(x.shape)}")
        cells = [parse_arch(arch) for arch in archs]
        stem = weights[0].get(("stem",))
        if stem is None or stem.shape[0] != self.C:
            raise DiswotError(
                f"weights[0][('stem',)] must be ({self.C}, 3, 3, 3) for C={self.C}; "
                f"got {None if stem is None else tuple(stem.shape)}"
            )
        try:
            return self._forward(cells, weights, x, biases)
        except KeyError as err:
            raise DiswotError(
                f"a candidate's weights lack slot {err.args[0]!r}: give every slot its arch uses "
                f"for C={self.C}, N={self.N} (gaussian_weights or module_weights)"
            ) from None

    def _forward(
        self,
        cells: list[tuple[str, ...]],
        weights: Sequence[Mapping[tuple, Tensor]],
        x: Tensor,
        biases: Sequence[Tensor] | None,
    ) -> list[Features]:
        G = len(cells)

        def stacked(key: tuple, members: Sequence[int] = range(G)) -> Tensor:
            if len(members) == 1:
                return weights[members[0]][key]
            return torch.cat([weights[g][key] for g in members])

        # The stem: every candidate reads the same input, so one plain convolution with their
        # kernels stacked gives the folded channels (a grouped one over G copies, minus the copies).
        x = _batch_norm(F.conv2d(x, stacked(("stem",)), None, 1, 1))
        steps = self._steps(cells)
        # Nodes every candidate convolves: their ReLU runs once on the whole group and is shared
        # by the edges; other nodes' ReLU runs on each convolution's selected candidates only.
        whole_relu = {
            src
            for src in (0, 1, 2)
            if len({g for s in steps if s.src == src and s.op in _KERNELS for g in s.members}) == G
        }
        for item in self._plan:
            index = item[1]
            if item[0] == "reduction":
                a = F.conv2d(torch.relu(x), stacked(("a", index)), None, 2, 1, 1, G)
                b = F.conv2d(torch.relu(_batch_norm(a)), stacked(("b", index)), None, 1, 1, 1, G)
                pooled = F.avg_pool2d(x, 2, 2, 0, False, True)
                short = F.conv2d(pooled, stacked(("down", index)), None, 1, 0, 1, G)
                x = short + _batch_norm(b)
                continue
            width = item[2]
            nodes: list[Tensor | None] = [x]
            relu: dict[int, Tensor] = {}
            for node in (1, 2, 3):
                total = _NodeSum()
                for step in steps:
                    if step.dst != node:
                        continue
                    source = nodes[step.src]
                    assert source is not None  # a node nobody wrote is zero: no step reads it
                    chosen = self._channels(step.members, width, G)
                    if step.op in _KERNELS and step.src in whole_relu:
                        if step.src not in relu:
                            relu[step.src] = torch.relu(source)
                        source = relu[step.src]
                    if chosen is not None:
                        source = source.index_select(1, chosen)
                    if step.op in _KERNELS and step.src not in whole_relu:
                        source = source.relu_()  # on the selected copy, which is ours
                    if step.op == "skip_connect":
                        y = source
                    elif step.op == "avg_pool_3x3":
                        y = F.avg_pool2d(source, 3, 1, 1, False, False)
                    else:
                        w = stacked((index, step.k, step.op), step.members)
                        pad = _KERNELS[step.op] // 2
                        y = F.conv2d(source, w, None, 1, pad, 1, len(step.members))
                        y = _batch_norm(y)
                    total.add(y, chosen, G * width)
                nodes.append(total.total)
            out = nodes[3]
            x = out if out is not None else torch.zeros_like(x)
        feature_map = torch.relu(_batch_norm(x))
        n, c = x.shape[0], self._final_width
        pooled = F.adaptive_avg_pool2d(feature_map, 1).view(n, G, c)
        classifier = torch.stack([w[("classifier",)] for w in weights])
        logits = torch.einsum("ngc,gkc->ngk", pooled, classifier)
        if biases is not None:
            logits = logits + torch.stack(list(biases))
        return [
            Features(logits[:, g], feature_map[:, g * c : (g + 1) * c], pooled[:, g])
            for g in range(G)
        ]


def _batch_norm(x: Tensor) -> Tensor:
    """Train-mode BatchNorm with scale 1 and shift 0 and no running statistics (train mode never
    reads them): per folded channel, so per candidate."""
    return torch.batch_norm(
        x, None, None, None, None, True, _BN_MOMENTUM, _BN_EPS, torch.backends.cudnn.enabled
    )


# -- weight providers ------------------------------------------------------------------------
def gaussian_weights(supernet: NB201Supernet, arch: str, seed: int) -> dict[tuple, Tensor]:
    """The N(0, 1) weights ``supernet.load(arch, seed)`` scores ``arch`` with (those
    ``init_weights(..., "gaussian", seed)`` gives a built network), by slot."""
    return supernet.weights(arch, seed)


def module_weights(model: NB201Network) -> tuple[dict[tuple, Tensor], Tensor]:
    """A built network's slots and classifier bias: its own parameters, so gradients of a
    grouped pass reach the module (PyTorch-default-init proxies such as ZiCo).

    Its BatchNorm layers must have scale 1 and shift 0 (what both inits give): the grouped pass
    has no BatchNorm parameters, so other values would silently score another network.
    """
    slots: dict[tuple, Tensor] = {("stem",): model.stem[0].weight}
    norms = [model.stem[1], model.lastact[0]]
    for index, cell in enumerate(model.cells):
        if isinstance(cell, ResNetReduction):
            slots[("a", index)] = cell.conv_a[1].weight
            slots[("b", index)] = cell.conv_b[1].weight
            slots[("down", index)] = cell.downsample[1].weight
            norms += [cell.conv_a[2], cell.conv_b[2]]
        elif isinstance(cell, NB201Cell):
            for k, (op, module) in enumerate(zip(cell.ops, cell.edges)):
                if op in _KERNELS:
                    slots[(index, k, op)] = module[1].weight
                    norms.append(module[2])
    slots[("classifier",)] = model.classifier.weight
    with torch.no_grad():  # one check (one device sync) for every BatchNorm
        off = torch.cat([torch.cat([m.weight - 1, m.bias]) for m in norms]).abs().max()
    if off.item() != 0:
        raise DiswotError(
            "module_weights needs BatchNorm scale 1 and shift 0 (as after init_weights); "
            f"this network's differ by up to {off.item():.3g}"
        )
    return slots, model.classifier.bias
