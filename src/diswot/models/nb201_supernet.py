"""NB201 students scored without building them: one preallocated weight store for every op.

On a GPU an NB201 candidate's time goes to Python, not arithmetic: constructing its 154-424
``nn.Module`` objects (19 of 30 ms per candidate on an H200) and launching the kernels of its
forward pass. Every NB201 network shares one skeleton, so :class:`NB201Supernet` holds, once, the
weights of *every* op on every edge of every cell, plus the fixed stem, reduction blocks and
classifier. Scoring a candidate then means:

1. giving the slots of the ops it uses the N(0, 1) weights :func:`~diswot.models.init_weights`
   draws for a freshly built network from the seeded CPU generator, in the order it visits the
   modules, so they are the same numbers. By default they are not drawn per candidate at all but
   sliced out of the seed's *weight stream* (below): views, no random numbers, no copy;
2. running its forward pass functionally on those slots, only the candidate's ops, no
   ``nn.Module`` involved (5.1 ms per candidate on an H100, 6.6 on an H200, against 16.7-24.0 with
   built networks: ``benchmarks/engine.py``, ``docs/scale.md``).

Opt-in on CUDA (``cuda_graphs=True``), the forward of step 2 is a **masked supernet** instead:
every op of every edge is computed and the candidate's op is selected per edge with
``torch.where`` on a device-resident 0/1 mask. That pass has the same kernels for every candidate,
so it is captured once per probe batch as a CUDA graph and replayed. ``torch.where`` copies the
selected op's output exactly, and unused ops never enter a sum, so the features equal the
candidate network's bit for bit (``tests/test_supernet.py`` checks both forwards against built
networks). It is not the default because running every op took 8.4 ms per candidate on both cards.

**Weight streams.** PyTorch's CPU ``normal_`` fills a float tensor of ``n >= 16`` elements, ``n`` a
multiple of 16, from the next ``n`` numbers of the generator, turned into normals 16 at a time; so
consecutive draws of such sizes are, number for number, one draw of their total size. Every slot
of the standard skeleton has such a size, and a candidate's weights are consecutive draws from one
reseeded generator, so they are consecutive windows of one long draw per seed: drawn once (about
1.5 M numbers), kept on the device, and sliced by offset for every candidate. That removes the
per-candidate draw (2.6 of 9.6 ms per candidate in a profiled 1,000-candidate search on an H200,
``benchmarks/results/run3-h200-search-profile.txt``) and the host-to-device copy. PyTorch does not
promise this property, so the first stream is checked against per-slot draws, and a mismatch turns
streams off (the draws then run per candidate as before); shapes that break the rule (a stem width
not a multiple of 16) never use them.

Only what the Gaussian init and the functional forward reproduce is covered: NB201's standard
skeleton (C=16, N=5 as the benchmark), the paper's N(0, 1) init (BatchNorm scales 1, shifts 0,
classifier bias 0) and BatchNorm in train mode.
"""

from __future__ import annotations

import contextlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.errors import DiswotError
from diswot.features import Features
from diswot.models.nb201 import EDGES, OPS, parse_arch

__all__ = ["NB201Supernet"]

#: An edge's output: (cell index, edge, its input, the cell's ReLU cache by source node, source).
_Edge = Callable[[int, int, Tensor, dict[int, Tensor], int], Tensor]

_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
# nn.BatchNorm2d's defaults, which every BatchNorm of NB201Network uses.
_BN_MOMENTUM, _BN_EPS = 0.1, 1e-5
#: Weight streams kept (one per init seed, about 6 MB each with C=16): ``rank --seeds`` cycles
#: through its seeds per cell, so fewer than it uses would redraw one for every evaluation.
_STREAMS_KEPT = 8


@dataclass
class _HostBuffer:
    """One host store of every weight slot, and the op mask, with the event of its last copy."""

    flat: Tensor
    slots: dict[tuple, Tensor]
    mask: Tensor
    copied: torch.cuda.Event | None


@dataclass
class _Captured:
    """One CUDA graph of the masked forward for one probe batch (kept alive with its input)."""

    graph: torch.cuda.CUDAGraph
    inputs: Tensor
    outputs: Features
    checks_left: int = 2


class NB201Supernet:
    """Every NB201 candidate of one class count, scored functionally from one weight store.

    Args:
        num_classes: classifier outputs (10, 100 or 120 for the benchmark's datasets).
        C: stem width (16 in NB201); stages have ``C``, ``2C``, ``4C`` channels.
        N: cells per stage (5 in NB201).
        device: where weights and forward live.
        channels_last: hold conv weights in the channels-last format (as the Scorer holds built
            networks on the CPU), so the convolutions see the layouts a built network has.
        cuda_graphs: capture the masked forward (every op, the candidate's picked by a mask) as a
            CUDA graph. Off by default: on an H200 the plain selected-op forward was faster
            (5.4 against 8.4 ms per candidate, ``benchmarks/engine.py``), since the graph must
            run all five ops of every edge.
        overlap: let :meth:`prefetch` draw the next candidate's weights on a background thread
            while the device scores the current one (``None``: on CUDA where weight streams are
            off). With overlap on, weights are drawn per candidate, not streamed.
        streams: slice weights out of one draw per seed instead of drawing them per candidate
            (module docstring). ``None``: wherever the shapes allow it and neither CUDA graphs
            (which need fixed weight addresses) nor channels-last (which needs copies) is on.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        C: int = 16,
        N: int = 5,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        cuda_graphs: bool = False,
        overlap: bool | None = None,
        streams: bool | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise DiswotError("CUDA graphs need a CUDA device; pass cuda_graphs=False")

        # The skeleton, in NB201Network's module order: ("cell", index, width) or
        # ("reduction", index, width_in, width_out).
        self._plan: list[tuple] = []
        shapes: dict[tuple, tuple[int, ...]] = {("stem",): (C, 3, 3, 3)}
        c_prev, index = C, 0
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                self._plan.append(("reduction", index, c_prev, c))
                shapes[("a", index)] = (c, c_prev, 3, 3)
                shapes[("b", index)] = (c, c, 3, 3)
                shapes[("down", index)] = (c, c_prev, 1, 1)
                index += 1
            for _ in range(N):
                self._plan.append(("cell", index, c))
                for k in range(len(EDGES)):
                    for op, kernel in _KERNELS.items():
                        shapes[(index, k, op)] = (c, c, kernel, kernel)
                index += 1
            c_prev = c
        shapes[("classifier",)] = (num_classes, c_prev)
        self._final_width = c_prev

        # Host stores: every slot a contiguous view of one flat buffer, so the draws go straight
        # into place and a CUDA device store is refreshed by one copy. Pinned for async copies.
        # Two of them, so the next candidate's weights can be drawn (prefetch) while the current
        # ones are still being copied or read.
        self._total = sum(_numel(s) for s in shapes.values())
        self._shapes = shapes
        self._buffers = [self._host_buffer(), self._host_buffer()]
        self._current = 0

        # Device store. On a CPU without channels-last it *is* the current host store.
        self._shared_store = self.device.type == "cpu" and not channels_last
        self._weights: dict[tuple, Tensor] = self._buffers[0].slots
        if not self._shared_store:
            self._dev_flat = torch.zeros(self._total, dtype=torch.float32, device=self.device)
            self._weights = self._views(self._dev_flat, shapes)
            if channels_last:
                # Channels-last tensors of their own: a flat copy would scramble their layout,
                # so these slots are copied one by one (CPU path; CUDA is contiguous).
                for key, shape in shapes.items():
                    if len(shape) == 4:
                        self._weights[key] = torch.zeros(shape, device=self.device).contiguous(
                            memory_format=torch.channels_last
                        )

        # BatchNorm constants per width (scale 1, shift 0) and running statistics, which train-mode
        # BatchNorm updates but never reads; the classifier's bias is 0 as after init_weights.
        widths = {C, 2 * C, 4 * C}
        dev = self.device
        self._bn = {
            c: (
                torch.ones(c, device=dev),
                torch.zeros(c, device=dev),
                torch.zeros(c, device=dev),
                torch.ones(c, device=dev),
            )
            for c in widths
        }
        self._bias = torch.zeros(num_classes, device=dev)

        # Op selection of the masked forward: row k is the one-hot op of edge k (OPS order).
        self._mask = torch.zeros(len(EDGES), len(OPS), dtype=torch.bool, device=dev)
        self._select = [[self._mask[k, j] for j in range(len(OPS))] for k in range(len(EDGES))]
        self._graphs: dict[tuple, _Captured] = {}
        self._gen = torch.Generator(device="cpu")

        # Weight streams: possible when every slot's size keeps the draws aligned (module
        # docstring); the longest candidate draws every edge's 3x3 convolution.
        aligned = all(_numel(s) % 16 == 0 for s in shapes.values())
        if streams and not aligned:
            raise DiswotError(
                "weight streams need every weight's size to be a multiple of 16 "
                "(a stem width C that is one); pass streams=False"
            )
        if streams and (cuda_graphs or channels_last):
            raise DiswotError(
                "weight streams cannot feed CUDA graphs or channels-last weights; "
                "pass streams=False"
            )
        #: Whether weights are sliced out of a per-seed stream (see the module docstring).
        self.streams = (
            aligned and not cuda_graphs and not channels_last if streams is None else streams
        )
        self._longest = self._draw_order(("nor_conv_3x3",) * len(EDGES))
        self._stream_len = sum(_numel(shapes[key]) for key in self._longest)
        self._streams: OrderedDict[int, Tensor] = OrderedDict()
        self._stream_checked = False
        #: Every slot's tensor when nothing is streamed: what the masked forward reads for the
        #: slots a streamed candidate does not use.
        self._idle = self._weights

        #: Draw the next candidate's weights on a background thread (``prefetch``); ``None``: on
        #: CUDA without weight streams, where the host is otherwise idle while the device scores.
        self._auto_overlap = overlap is None
        self.overlap = (
            self.device.type == "cuda" and not self.streams if overlap is None else overlap
        )
        self._pool: ThreadPoolExecutor | None = None
        self._bg_gen = torch.Generator(device="cpu")  # the thread's own: generators are not shared
        self._pending: tuple[str, int, int, Future] | None = None
        self.arch: str | None = None
        self.ops: tuple[str, ...] = ()

    def _host_buffer(self) -> _HostBuffer:
        pin = self.device.type == "cuda"
        # Zeros, so the slots no candidate has drawn yet hold finite numbers too.
        flat = torch.zeros(self._total, dtype=torch.float32, pin_memory=pin)
        mask = torch.zeros(len(EDGES), len(OPS), dtype=torch.bool, pin_memory=pin)
        event = torch.cuda.Event() if pin else None
        return _HostBuffer(flat, self._views(flat, self._shapes), mask, event)

    def _views(self, flat: Tensor, keys: Iterable[tuple]) -> dict[tuple, Tensor]:
        """Consecutive windows of ``flat`` shaped as the slots ``keys``, in that order."""
        views, offset = {}, 0
        for key in keys:
            shape = self._shapes[key]
            n = _numel(shape)
            views[key] = flat[offset : offset + n].view(shape)
            offset += n
        return views

    # -- weights ---------------------------------------------------------------------------------
    def _draw_order(self, ops: tuple[str, ...]) -> list[tuple]:
        """Slots of the weights ``init_weights`` draws for a network of ``ops``, in its order."""
        order: list[tuple] = [("stem",)]
        for item in self._plan:
            if item[0] == "reduction":
                order += [("a", item[1]), ("b", item[1]), ("down", item[1])]
            else:
                order += [(item[1], k, op) for k, op in enumerate(ops) if op in _KERNELS]
        order.append(("classifier",))
        return order

    def _draw(
        self, buf: _HostBuffer, ops: tuple[str, ...], seed: int, gen: torch.Generator
    ) -> list[tuple]:
        """Draw a candidate's weights and op mask into ``buf``; the slots drawn, in order."""
        if buf.copied is not None:
            buf.copied.synchronize()  # its last copy to the device has left it
        order = self._draw_order(ops)
        gen.manual_seed(seed)
        for key in order:
            buf.slots[key].normal_(generator=gen)
        _write_mask(buf.mask, ops)
        return order

    def _stream(self, seed: int) -> Tensor | None:
        """``seed``'s weight stream on the device (drawn on first use); ``None`` if streams turned
        out not to hold on this PyTorch, which then also turns them off."""
        stream = self._streams.get(seed)
        if stream is not None:
            self._streams.move_to_end(seed)
            return stream
        self._gen.manual_seed(seed)
        host = torch.empty(self._stream_len).normal_(generator=self._gen)
        if not self._stream_checked:
            self._stream_checked = True
            if not self._stream_holds(host, seed):
                print(
                    "diswot: note: NB201 supernet weight streams off: this PyTorch's draws do not "
                    "split into windows of one draw (weights are drawn per candidate instead)",
                    file=sys.stderr,
                )
                self.streams = False
                if self._auto_overlap:  # then the draws are per candidate: overlap them
                    self.overlap = self.device.type == "cuda"
                return None
        stream = host.to(self.device) if self.device.type != "cpu" else host
        self._streams[seed] = stream
        if len(self._streams) > _STREAMS_KEPT:
            self._streams.popitem(last=False)
        return stream

    def _stream_holds(self, stream: Tensor, seed: int) -> bool:
        """Whether the per-slot draws of the longest candidate are ``stream``, number for number."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        drawn = [torch.empty(self._shapes[key]).normal_(generator=gen) for key in self._longest]
        return torch.equal(torch.cat([t.flatten() for t in drawn]), stream)

    def prefetch(self, arch: str, seed: int) -> None:
        """Start drawing ``arch``'s weights under ``seed`` into the spare host store, on a
        background thread, so that a following ``load(arch, seed)`` only swaps stores.

        A hint only: a ``load`` of anything else draws as usual. The thread has its own generator,
        seeded the same way, so the weights are the same numbers. No-op unless :attr:`overlap`.
        """
        if not self.overlap:
            return
        if self._pending is not None:
            if self._pending[:2] == (arch, seed):
                return
            self._pending[3].result()  # at most one draw in flight: the spare store is one
            self._pending = None
        ops = parse_arch(arch)
        spare = 1 - self._current
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="diswot-supernet-draws")
        job = self._pool.submit(self._draw, self._buffers[spare], ops, seed, self._bg_gen)
        self._pending = (arch, seed, spare, job)

    def load(self, arch: str, seed: int) -> None:
        """Make ``arch`` under init seed ``seed`` the current candidate.

        The weights are the N(0, 1) draws :func:`~diswot.models.init_weights` makes for a freshly
        built ``NB201Network(arch)`` under ``seed``: same generator, same order, same shapes.
        """
        ops = parse_arch(arch)
        if self.streams and not self.overlap and not self.cuda_graphs:
            stream = self._stream(seed)
            if stream is not None:
                # The candidate's slots from the stream; the rest (read only by the masked
                # forward) from the idle store.
                self._weights = {**self._idle, **self._views(stream, self._draw_order(ops))}
                self.ops = ops
                self.arch = arch
                return
        pending, self._pending = self._pending, None
        # A pending draw is finished (and its errors raised) before its store is used.
        order = pending[3].result() if pending is not None else None
        if pending is not None and pending[:2] == (arch, seed):
            self._current = pending[2]
        else:
            order = self._draw(self._buffers[self._current], ops, seed, self._gen)
        buf = self._buffers[self._current]
        with self._on_device():  # copies and event on this device's stream (cuda:1 too)
            self._weights = self._idle
            if self._shared_store:
                self._weights = buf.slots
            elif self.channels_last:
                for key in order:  # type: ignore[union-attr]  # drawn just above or prefetched
                    self._weights[key].copy_(buf.slots[key], non_blocking=True)
            else:
                self._dev_flat.copy_(buf.flat, non_blocking=True)
            if self.cuda_graphs:
                self._mask.copy_(buf.mask, non_blocking=True)
            if buf.copied is not None:
                buf.copied.record()
        self.ops = ops
        self.arch = arch

    # -- forward ---------------------------------------------------------------------------------
    def features(self, x: Tensor, dtype: torch.dtype | None = None) -> Features:
        """Logits, pre-pool feature map and pooled features of the loaded candidate on ``x``.

        ``dtype`` runs the pass under autocast (bf16), as the Scorer does for built students.
        On CUDA with graphs the returned tensors are copies, so a later replay cannot change them.
        """
        if self.arch is None:
            raise DiswotError("load(arch, seed) a candidate before asking for its features")
        if not self.cuda_graphs:
            return self._eager(x, dtype)
        with self._on_device():
            return self._replayed(x, dtype)

    def _on_device(self) -> contextlib.AbstractContextManager:
        """Make this supernet's GPU the current one (streams, events and graphs use it)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.cuda.device(self.device)

    def _replayed(self, x: Tensor, dtype: torch.dtype | None) -> Features:
        key = (x.data_ptr(), tuple(x.shape), x.dtype, dtype)
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._graphs[key] = self._capture(x, dtype)
            except RuntimeError as e:  # a PyTorch/driver without capture support for some op
                return self._stop_graphs(
                    f"capturing it failed ({str(e).splitlines()[0]})", x, dtype
                )
        captured.graph.replay()
        out = Features(*(t.clone() for t in captured.outputs))
        if captured.checks_left:
            # The first replays of each graph are checked against the plain pass, bit for bit: a
            # graph that replays wrongly is dropped, never trusted.
            captured.checks_left -= 1
            ref = self._eager(x, dtype)
            if not all(_same(a, b) for a, b in zip(out, ref)):
                return self._stop_graphs("a replay differed from the plain forward", x, dtype)
        return out

    def _eager(self, x: Tensor, dtype: torch.dtype | None) -> Features:
        with _autocast(x.device, dtype):
            return self._forward(x, self._select_op)

    def _stop_graphs(self, why: str, x: Tensor, dtype: torch.dtype | None) -> Features:
        """Score without graphs from now on (the plain pass: the same numbers, more launches)."""
        print(f"diswot: note: CUDA graph of the NB201 supernet off: {why}", file=sys.stderr)
        self.cuda_graphs = False
        self._graphs.clear()
        return self._eager(x, dtype)

    def _capture(self, x: Tensor, dtype: torch.dtype | None) -> _Captured:
        # Warm up on a side stream (cuDNN picks and loads its kernels), then capture. The autocast
        # cache must be off inside a graph: cached casts would be stale on replay.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), _autocast(x.device, dtype):
            self._forward(x, self._masked_op)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), _autocast(x.device, dtype):
            outputs = self._forward(x, self._masked_op)
        return _Captured(graph, x, outputs)

    def masked_features(self, x: Tensor, dtype: torch.dtype | None = None) -> Features:
        """The masked supernet pass without a graph (what a graph replays); for tests and timing."""
        self._mask.copy_(_write_mask(torch.empty(self._mask.shape, dtype=torch.bool), self.ops))
        with _autocast(x.device, dtype):
            return self._forward(x, self._masked_op)

    def _conv_bn(self, x: Tensor, key: tuple, stride: int = 1) -> Tensor:
        w = self._weights[key]
        y = F.conv2d(x, w, None, stride, w.shape[-1] // 2)
        weight, bias, mean, var = self._bn[w.shape[0]]
        return _batch_norm(y, weight, bias, mean, var)

    def _select_op(
        self, index: int, k: int, x: Tensor, relu: dict[int, Tensor], src: int
    ) -> Tensor:
        """Edge ``k``'s output, running only the candidate's op (host-side choice)."""
        op = self.ops[k]
        if op == "none":
            return x.mul(0.0)
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return F.avg_pool2d(x, 3, 1, 1, False, False)
        if src not in relu:
            relu[src] = torch.relu(x)
        return self._conv_bn(relu[src], (index, k, op))

    def _masked_op(
        self, index: int, k: int, x: Tensor, relu: dict[int, Tensor], src: int
    ) -> Tensor:
        """Edge ``k``'s output, running every op and selecting on the device mask."""
        if src not in relu:
            relu[src] = torch.relu(x)
        sel = self._select[k]
        out = x.mul(0.0)
        out = torch.where(sel[1], x, out)
        out = torch.where(sel[2], self._conv_bn(relu[src], (index, k, "nor_conv_1x1")), out)
        out = torch.where(sel[3], self._conv_bn(relu[src], (index, k, "nor_conv_3x3")), out)
        return torch.where(sel[4], F.avg_pool2d(x, 3, 1, 1, False, False), out)

    def _forward(self, x: Tensor, edge: _Edge) -> Features:
        """NB201Network.forward, functionally, with the same ops in the same order; ``edge`` is
        :meth:`_select_op` or :meth:`_masked_op`."""
        x = self._conv_bn(x, ("stem",))
        for item in self._plan:
            if item[0] == "reduction":
                index = item[1]
                branch = self._conv_bn(torch.relu(x), ("a", index), stride=2)
                branch = self._conv_bn(torch.relu(branch), ("b", index))
                short = F.conv2d(
                    F.avg_pool2d(x, 2, 2, 0, False, True), self._weights[("down", index)]
                )
                x = short + branch
                continue
            index = item[1]
            nodes = [x]
            relu: dict[int, Tensor] = {}
            for node in (1, 2, 3):
                total = None
                for k, (dst, src) in enumerate(EDGES):
                    if dst == node:
                        y = edge(index, k, nodes[src], relu, src)
                        total = y if total is None else total + y
                nodes.append(total)
            x = nodes[3]
        weight, bias, mean, var = self._bn[self._final_width]
        feature_map = torch.relu(_batch_norm(x, weight, bias, mean, var))
        pooled = F.adaptive_avg_pool2d(feature_map, 1).flatten(1)
        logits = F.linear(pooled, self._weights[("classifier",)], self._bias)
        return Features(logits, feature_map, pooled)


def _batch_norm(x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``F.batch_norm`` in train mode without its Python-side checks (the kernel it calls, with its
    arguments): the forward is launch-bound on a GPU, and the Scorer already refuses batches of
    fewer than 2, the case the checks are for."""
    return torch.batch_norm(
        x, weight, bias, mean, var, True, _BN_MOMENTUM, _BN_EPS, torch.backends.cudnn.enabled
    )


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal values, NaN matching NaN (a cell whose activations overflow scores NaN either way)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _write_mask(mask: Tensor, ops: tuple[str, ...]) -> Tensor:
    """Row ``k`` of ``mask`` becomes the one-hot of edge ``k``'s op (``OPS`` order)."""
    mask.zero_()
    for k, op in enumerate(ops):
        mask[k, OPS.index(op)] = True
    return mask


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)
