"""NAS-Bench-201 cells: arch strings, NASLib tuple converters and the standard topology network.

A NAS-Bench-201 (NB201) cell is a 4-node DAG whose 6 edges each carry one of five ops. Two encodings
of the same cell circulate and they order the edges differently, which is an easy source of silent
bugs when joining tables, so both are handled here in one place:

* the NB201 arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` lists, node by node, the edges
  ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`` (this module's canonical "edge order");
* NASLib's tuple ``(t0, ..., t5)`` lists edges ``1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2`` with op
  indices 0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3.

:class:`NB201Network` rebuilds the benchmark's network (the ``TinyNetwork``/``InferCell`` of the
NB201 code base) module for module, so parameter counts and FLOPs agree exactly with the numbers
published with the benchmark and with NASLib's precomputed ``params``/``flops`` scores.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from diswot.errors import DiswotError

__all__ = [
    "EDGES",
    "NASLIB_OPS",
    "OPS",
    "NB201Cell",
    "NB201Network",
    "ResNetReduction",
    "all_archs",
    "arch_to_naslib",
    "format_arch",
    "is_arch_string",
    "naslib_to_arch",
    "parse_arch",
]

#: The five candidate operations, in NAS-Bench-201's own order.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: NASLib's op index -> op name (its tuples use a different numbering from :data:`OPS`).
NASLIB_OPS: tuple[str, ...] = (
    "skip_connect",
    "none",
    "nor_conv_3x3",
    "nor_conv_1x1",
    "avg_pool_3x3",
)

#: ``(to_node, from_node)`` of each edge in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

# Position in our edge order of each NASLib tuple slot (NASLib: 1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2).
_NASLIB_TO_EDGE: tuple[int, ...] = (0, 1, 3, 2, 4, 5)

_ARCH_HINT = "expected an NB201 arch string like '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~2|'"
_TOKEN = re.compile(r"^([a-z_0-9]+)~(\d+)$")


def is_arch_string(s: object) -> bool:
    """Cheap test used by ``create_model`` to route a name to the NB201 builder."""
    return isinstance(s, str) and s.strip().startswith("|")


def parse_arch(s: str) -> tuple[str, ...]:
    """Return the 6 ops of an NB201 arch string in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

    The string is validated strictly (three nodes, node ``i`` listing inputs ``0..i-1`` in order,
    known op names) because a mis-parsed cell would silently become a different network.
    """
    if not isinstance(s, str):
        raise DiswotError(f"NB201 arch must be a string, got {type(s).__name__}; {_ARCH_HINT}")
    text = s.strip()
    nodes = text.split("+")
    if len(nodes) != 3:
        raise DiswotError(f"NB201 arch {text!r} has {len(nodes)} node groups, not 3; {_ARCH_HINT}")
    ops: list[str] = []
    for node, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise DiswotError(
                f"NB201 arch {text!r}: node {node} is not wrapped in '|'; {_ARCH_HINT}"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise DiswotError(
                f"NB201 arch {text!r}: node {node} has {len(tokens)} inputs, needs {node}; "
                f"{_ARCH_HINT}"
            )
        for src, token in enumerate(tokens):
            m = _TOKEN.match(token)
            if m is None or int(m.group(2)) != src:
                raise DiswotError(
                    f"NB201 arch {text!r}: bad edge {token!r} into node {node} "
                    f"(want 'op~{src}'); {_ARCH_HINT}"
                )
            if m.group(1) not in OPS:
                raise DiswotError(
                    f"NB201 arch {text!r}: unknown op {m.group(1)!r}; known: {', '.join(OPS)}"
                )
            ops.append(m.group(1))
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """Inverse of :func:`parse_arch`: 6 ops in edge order -> canonical NB201 arch string."""
    ops = tuple(ops)
    if len(ops) != 6 or any(op not in OPS for op in ops):
        raise DiswotError(f"need 6 ops from {', '.join(OPS)}; got {ops!r}")
    nodes = [
        "|" + "|".join(f"{ops[k]}~{src}" for k, (dst, src) in enumerate(EDGES) if dst == node) + "|"
        for node in (1, 2, 3)
    ]
    return "+".join(nodes)


def arch_to_naslib(arch_str: str) -> tuple[int, ...]:
    """NB201 arch string -> NASLib tuple (edges 1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2)."""
    ops = parse_arch(arch_str)
    return tuple(NASLIB_OPS.index(ops[e]) for e in _NASLIB_TO_EDGE)


def naslib_to_arch(t: tuple[int, ...] | Sequence[int] | str) -> str:
    """NASLib tuple (or its string form ``"(0, 2, 3, 2, 3, 1)"``, as used for JSON keys) -> arch."""
    if isinstance(t, str):
        body = t.strip()
        if not (body.startswith("(") and body.endswith(")")):
            raise DiswotError(f"NASLib tuple string must look like '(0, 2, 3, 2, 3, 1)'; got {t!r}")
        try:
            vals = tuple(int(v) for v in body[1:-1].split(","))
        except ValueError:
            raise DiswotError(
                f"NASLib tuple string must hold 6 integers like '(0, 2, 3, 2, 3, 1)'; got {t!r}"
            ) from None
    else:
        vals = tuple(t)
    if len(vals) != 6 or any(not isinstance(v, int) or not 0 <= v <= 4 for v in vals):
        raise DiswotError(f"NASLib tuple needs 6 op indices in 0..4; got {t!r}")
    ops = [""] * 6
    for slot, edge in enumerate(_NASLIB_TO_EDGE):
        ops[edge] = NASLIB_OPS[vals[slot]]
    return format_arch(ops)


def all_archs() -> list[str]:
    """All 15,625 cells, in lexicographic order of (edge order, :data:`OPS` order).

    This is *not* the benchmark's own index order (which needs the benchmark file); it is a fixed
    order that depends only on this code, so enumerations and seeded samples are reproducible.
    """
    return [format_arch(ops) for ops in itertools.product(OPS, repeat=6)]


def skeleton(C: int, N: int) -> list[tuple]:
    """An NB201 network's blocks in :class:`NB201Network`'s module order: ``("cell", index,
    width)`` or ``("reduction", index, width_in, width_out)``, ``index`` counting both; three
    stages of ``N`` cells at widths ``C``, ``2C``, ``4C`` with a reduction between stages. The
    functional forwards (the supernet, the grouped pass) walk it."""
    plan: list[tuple] = []
    c_prev, index = C, 0
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            plan.append(("reduction", index, c_prev, c))
            index += 1
        for _ in range(N):
            plan.append(("cell", index, c))
            index += 1
        c_prev = c
    return plan


def cell_flags(ops: Sequence[str]) -> tuple[list[bool], list[bool]]:
    """Per node of a cell of ``ops``: whether its value reaches the cell's output (live; a dead
    node need not be computed), and whether it is exactly zero (every edge into it none or from a
    zero node). Skipping that work gives the built cell's values for finite activations: the
    built cell adds ``x * 0`` for a none edge, which only a NaN or infinity would make differ."""
    live = [True, False, ops[5] != "none", True]
    live[1] = ops[4] != "none" or (ops[2] != "none" and live[2])
    zero = [False, False, False, False]
    for node in (1, 2, 3):
        zero[node] = all(
            ops[k] == "none" or zero[src] for k, (dst, src) in enumerate(EDGES) if dst == node
        )
    return live, zero


# ---------------------------------------------------------------------------------------------
# Network


class ReLUConvBN(nn.Sequential):
    """NB201's ``nor_conv``: ReLU -> Conv (no bias, as BN follows) -> affine BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: a zero tensor of the input's shape (keeps the edge visible to hooks)."""

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _make_op(name: str, channels: int) -> nn.Module:
    # Inside a cell every edge maps C -> C at stride 1, so no op needs a preprocessing conv.
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise DiswotError(f"unknown NB201 op {name!r}; known: {', '.join(OPS)}")


class NB201Cell(nn.Module):
    """One NB201 cell: node ``j`` is the sum of the ops on its incoming edges; output is node 3.

    Every edge's op is built and run, as in the benchmark's ``InferCell``, even when a node is not
    connected to the output: that is what the benchmark's parameter and FLOP counts include. A cell
    whose output node only receives ``none`` edges returns zeros.
    """

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(self, arch: str, channels: int) -> None:
        super().__init__()
        self.arch = format_arch(parse_arch(arch))
        self.ops = parse_arch(self.arch)
        self.channels = channels
        self.edges = nn.ModuleList(_make_op(op, channels) for op in self.ops)
        # Ops swapped out by retarget(), kept for reuse: a plain dict, so outside the module tree
        # (not in state_dict, parameters() or modules(), not moved by .to()).
        self._spare_ops: dict[tuple[int, str], nn.Module] = {}

    def retarget(self, arch: str, device: torch.device | None = None) -> None:
        """Become a cell of ``arch`` in place, reusing op modules (their weights are *not* redrawn).

        The module tree afterwards is the one a fresh ``NB201Cell(arch, channels)`` has, so
        :func:`~diswot.models.init_weights` visits the same modules in the same order and draws
        the same weights. Ops come from this cell's spares when it had them before, so after a
        few candidates nothing is constructed at all. An op that is constructed goes to ``device``.
        """
        ops = parse_arch(arch)
        for k, (old, new) in enumerate(zip(self.ops, ops)):
            if old != new:
                self._spare_ops[(k, old)] = self.edges[k]
                op = self._spare_ops.pop((k, new), None)
                if op is None:
                    op = _make_op(new, self.channels)
                    if device is not None:
                        op = op.to(device)
                self.edges[k] = op
        self.arch = format_arch(ops)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            total = None
            for k, (dst, src) in enumerate(EDGES):
                if dst == node:
                    y = self.edges[k](nodes[src])
                    total = y if total is None else total + y
            nodes.append(total)
        return nodes[3]


class ResNetReduction(nn.Module):
    """NB201's reduction block: a stride-2 residual block whose shortcut is avg-pool + 1x1 conv."""

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro skeleton around one cell type.

    stem (3x3 conv to ``C`` + BN) -> ``N`` cells -> reduction to ``2C`` -> ``N`` cells -> reduction
    to ``4C`` -> ``N`` cells -> ``lastact`` (BN + ReLU) -> ``global_pooling`` -> ``classifier``.
    Module names follow the benchmark's code so hooks and state dicts line up with other tools.
    """

    macs_in_submodules: ClassVar[bool] = True  # FLOPs counted by hooks: see models.cost

    def __init__(self, arch: str, num_classes: int = 10, C: int = 16, N: int = 5) -> None:
        super().__init__()
        if C < 1 or N < 1:
            raise DiswotError(f"NB201Network needs C >= 1 and N >= 1; got C={C}, N={N}")
        if num_classes < 2:
            raise DiswotError(f"--num-classes must be >= 2; got {num_classes}")
        self.arch = format_arch(parse_arch(arch))
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells: list[nn.Module] = []
        c_prev = C
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                cells.append(ResNetReduction(c_prev, c))
            cells.extend(NB201Cell(self.arch, c) for _ in range(N))
            c_prev = c
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def retarget(self, arch: str) -> NB201Network:
        """Turn this network into ``arch``'s in place (call ``init_weights`` after, as after a
        build): the skeleton is shared by every NB201 cell, so only the cells' edge ops change.
        Construction (154-424 ``nn.Module`` constructors, by cell) is what bounds scoring throughput on a GPU."""
        arch = format_arch(parse_arch(arch))
        device = self.classifier.weight.device  # new ops join the network where it is
        for cell in self.cells:
            if isinstance(cell, NB201Cell):
                cell.retarget(arch, device)
        self.arch = arch
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.lastact(x)
        x = self.global_pooling(x).flatten(1)
        return self.classifier(x)
