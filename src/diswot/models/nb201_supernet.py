"""NB201 students scored without building them: one preallocated weight store for every op.

On a GPU an NB201 candidate's time goes to Python, not arithmetic: constructing its 154-424
``nn.Module`` objects and launching the kernels of its forward pass (``docs/scale.md`` has the
measurements). Every NB201 network shares one skeleton, so :class:`NB201Supernet` holds, once, the
weights of *every* op on every edge of every cell, plus the fixed stem, reduction blocks and
classifier. Scoring a candidate then means:

1. giving the slots of the ops it uses the N(0, 1) weights :func:`~diswot.models.init_weights`
   draws for a freshly built network from the seeded CPU generator, in the order it visits the
   modules, so they are the same numbers. By default they are not drawn per candidate at all but
   sliced out of the seed's *weight stream* (below): views, no random numbers, no copy;
2. running its forward pass functionally on those slots, only the candidate's ops, no
   ``nn.Module`` involved (``tests/test_supernet.py`` checks the features against built networks,
   bit for bit).

**Weight streams.** PyTorch's CPU ``normal_`` fills a float tensor of ``n >= 16`` elements, ``n`` a
multiple of 16, from the next ``n`` numbers of the generator, turned into normals 16 at a time; so
consecutive draws of such sizes are, number for number, one draw of their total size. Every slot
of the standard skeleton has such a size, and a candidate's weights are consecutive draws from one
reseeded generator, so they are consecutive windows of one long draw per seed: drawn once (about
1.5 M numbers), kept on the device, and sliced by offset for every candidate. That removes the
per-candidate draw and the host-to-device copy. PyTorch does not promise this property, so the
first stream is checked against per-slot draws, and a mismatch turns streams off (the draws then
run per candidate into a host store, copied to the device); shapes that break the rule (a stem
width not a multiple of 16) and channels-last weights (which need copies) never use them.

Only what the Gaussian init and the functional forward reproduce is covered: NB201's standard
skeleton (C=16, N=5 as the benchmark), the paper's N(0, 1) init (BatchNorm scales 1, shifts 0,
classifier bias 0) and BatchNorm in train mode.
"""

from __future__ import annotations

import contextlib
import sys
from collections import OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.errors import DiswotError
from diswot.features import Features
from diswot.models.nb201 import EDGES, cell_flags, parse_arch, skeleton

__all__ = ["NB201Supernet"]

_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
# nn.BatchNorm2d's defaults, which every BatchNorm of NB201Network uses.
_BN_MOMENTUM, _BN_EPS = 0.1, 1e-5
#: Weight streams kept (one per init seed, about 6 MB each with C=16): ``rank --seeds`` cycles
#: through its seeds per cell, so fewer than it uses would redraw one for every evaluation.
_STREAMS_KEPT = 8


class NB201Supernet:
    """Every NB201 candidate of one class count, scored functionally from one weight store.

    Args:
        num_classes: classifier outputs (10, 100 or 120 for the benchmark's datasets).
        C: stem width (16 in NB201); stages have ``C``, ``2C``, ``4C`` channels.
        N: cells per stage (5 in NB201).
        device: where weights and forward live.
        channels_last: hold conv weights in the channels-last format (as the Scorer holds built
            networks on the CPU), so the convolutions see the layouts a built network has.
        streams: slice weights out of one draw per seed instead of drawing them per candidate
            (module docstring). ``None``: wherever the shapes allow it and channels-last is off.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        C: int = 16,
        N: int = 5,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        streams: bool | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.channels_last = channels_last

        self._plan = skeleton(C, N)
        shapes: dict[tuple, tuple[int, ...]] = {("stem",): (C, 3, 3, 3)}
        for item in self._plan:
            if item[0] == "reduction":
                _, index, c_in, c = item
                shapes[("a", index)] = (c, c_in, 3, 3)
                shapes[("b", index)] = (c, c, 3, 3)
                shapes[("down", index)] = (c, c_in, 1, 1)
            else:
                _, index, c = item
                for k in range(len(EDGES)):
                    for op, kernel in _KERNELS.items():
                        shapes[(index, k, op)] = (c, c, kernel, kernel)
        self._final_width = 4 * C
        shapes[("classifier",)] = (num_classes, self._final_width)
        self._shapes = shapes
        self._total = sum(_numel(s) for s in shapes.values())
        #: The current candidate's weights by slot (only its own slots are read).
        self._weights: dict[tuple, Tensor] = {}
        # Where per-candidate draws go (when streams are off), made on first use (_stores).
        self._host_flat: Tensor | None = None
        self._host: dict[tuple, Tensor] | None = None
        self._device_store: dict[tuple, Tensor] | None = None
        self._device_flat: Tensor | None = None

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
        self._gen = torch.Generator(device="cpu")

        # Weight streams: possible when every slot's size keeps the draws aligned (module
        # docstring); the longest candidate draws every edge's 3x3 convolution.
        aligned = all(_numel(s) % 16 == 0 for s in shapes.values())
        if streams and not aligned:
            raise DiswotError(
                "weight streams need every weight's size to be a multiple of 16 "
                "(a stem width C that is one); pass streams=False"
            )
        if streams and channels_last:
            raise DiswotError(
                "weight streams cannot feed channels-last weights; pass streams=False"
            )
        #: Whether weights are sliced out of a per-seed stream (see the module docstring).
        self.streams = aligned and not channels_last if streams is None else streams
        self._longest = self._draw_order(("nor_conv_3x3",) * len(EDGES))
        self._stream_len = sum(_numel(shapes[key]) for key in self._longest)
        self._streams: OrderedDict[int, Tensor] = OrderedDict()
        self._stream_checked = False
        self.arch: str | None = None
        self.ops: tuple[str, ...] = ()

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

    def _drawn(self, order: list[tuple], seed: int) -> dict[tuple, Tensor]:
        """The slots ``order`` drawn under ``seed`` slot by slot, then put on the device."""
        if self._host_flat is None:
            self._host_flat, self._host, self._device_store = self._stores()
        assert self._host is not None
        self._gen.manual_seed(seed)
        for key in order:
            self._host[key].normal_(generator=self._gen)
        if self._device_store is None:  # the CPU without channels-last: the host store is it
            return self._host
        if self._device_flat is not None:
            self._device_flat.copy_(self._host_flat)  # one copy for every slot
        else:
            for key in order:
                self._device_store[key].copy_(self._host[key])
        return self._device_store

    def _stores(self) -> tuple[Tensor, dict[tuple, Tensor], dict[tuple, Tensor] | None]:
        """The host store of per-candidate draws (every slot a view of one flat buffer, so the
        draws go straight into place) and the device store they are copied to (``None`` when the
        host store serves: the CPU without channels-last)."""
        flat = torch.zeros(self._total, dtype=torch.float32)
        host = self._views(flat, self._shapes)
        if self.channels_last:
            # Channels-last tensors of their own: a flat copy would scramble their layout.
            store = {
                key: torch.zeros(shape, device=self.device).contiguous(
                    memory_format=torch.channels_last
                    if len(shape) == 4
                    else torch.contiguous_format
                )
                for key, shape in self._shapes.items()
            }
            return flat, host, store
        if self.device.type == "cpu":
            return flat, host, None
        self._device_flat = torch.zeros(self._total, device=self.device)
        return flat, host, self._views(self._device_flat, self._shapes)

    def load(self, arch: str, seed: int) -> None:
        """Make ``arch`` under init seed ``seed`` the current candidate.

        The weights are the N(0, 1) draws :func:`~diswot.models.init_weights` makes for a freshly
        built ``NB201Network(arch)`` under ``seed``: same generator, same order, same shapes.
        """
        ops = parse_arch(arch)
        order = self._draw_order(ops)
        stream = self._stream(seed) if self.streams else None
        if stream is not None:
            self._weights = self._views(stream, order)
        else:
            self._weights = self._drawn(order, seed)
        self.ops = ops
        self.arch = arch
        self._flags = cell_flags(ops)

    def weights(self, arch: str, seed: int) -> dict[tuple, Tensor]:
        """The weights ``load(arch, seed)`` gives ``arch``, by slot, without loading it.

        For running several candidates at once (``diswot.models.nb201_grouped``): each dict must
        stay valid while others are made, so stream windows are returned as views (the stream
        outlives its eviction through them) and otherwise the slots are drawn into tensors of
        their own (the per-candidate store is overwritten by every load). Same numbers either way.
        """
        order = self._draw_order(parse_arch(arch))
        stream = self._stream(seed) if self.streams else None
        if stream is not None:
            return self._views(stream, order)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {
            key: torch.empty(self._shapes[key]).normal_(generator=gen).to(self.device)
            for key in order
        }

    # -- forward ---------------------------------------------------------------------------------
    def features(self, x: Tensor, dtype: torch.dtype | None = None) -> Features:
        """Logits, pre-pool feature map and pooled features of the loaded candidate on ``x``.

        ``dtype`` runs the pass under autocast (bf16), as the Scorer does for built students.
        """
        if self.arch is None:
            raise DiswotError("load(arch, seed) a candidate before asking for its features")
        with _autocast(x.device, dtype):
            return self._forward(x)

    def _conv_bn(self, x: Tensor, key: tuple, stride: int = 1) -> Tensor:
        w = self._weights[key]
        y = F.conv2d(x, w, None, stride, w.shape[-1] // 2)
        weight, bias, mean, var = self._bn[w.shape[0]]
        return _batch_norm(y, weight, bias, mean, var)

    def _edge(self, index: int, k: int, x: Tensor, relu: dict[int, Tensor], src: int) -> Tensor:
        """Edge ``k``'s output in cell ``index`` for its input ``x`` from node ``src``, running only
        the candidate's op; ``relu`` caches the cell's ReLU of each source node."""
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

    def _forward(self, x: Tensor) -> Features:
        """NB201Network.forward, functionally, with the same ops in the same order."""
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
            nodes: list[Tensor | None] = [x]
            relu: dict[int, Tensor] = {}
            live, zero = self._flags
            for node in (1, 2, 3):
                total = None
                if live[node]:
                    for k, (dst, src) in enumerate(EDGES):
                        # An edge adds exactly zero when its op is none or its source is zero
                        # (ReLU, conv, train-mode BN of zeros and pooling all give zeros).
                        if dst == node and self.ops[k] != "none" and not zero[src]:
                            y = self._edge(index, k, nodes[src], relu, src)  # type: ignore[arg-type]
                            total = y if total is None else total + y
                    if total is None:
                        total = x.mul(0.0)  # what the built cell's none edges sum to
                nodes.append(total)
            x = nodes[3]  # type: ignore[assignment]  # always live
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


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (a no-op for ``None``), without a cast cache: every
    candidate brings other weights."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)
