"""Inference latency of one network on one device, measured so that two numbers can be compared.

A latency is only meaningful with the conditions it was taken under, so :class:`Latency` carries
them: the batch size, the device, the CPU threads torch used, how many runs were discarded as
warm-up and how many were timed. The measurement itself follows the usual rules:

* ``eval()`` mode and ``torch.inference_mode()``: BatchNorm uses its running statistics and no
  autograd graph is built, as when the network is deployed;
* warm-up runs first, untimed: the first calls pay for memory allocation, cuDNN's algorithm choice
  and cache misses that a deployed network pays once;
* every timed run ends with a CUDA synchronisation on a GPU, because kernels are launched
  asynchronously and the host clock would otherwise time only the launches;
* the **median** of the timed runs, which one preempted run (another process, a page fault) does
  not move, where the mean would.

The network is measured with the weights it has; :func:`measure_arch` builds one for a search
candidate with fixed random weights (PyTorch's default init under a private seed), since zeroed or
uninitialised weights can hit denormal or NaN slow paths on the CPU.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

import torch
from torch import nn

from diswot.errors import DiswotError

if TYPE_CHECKING:
    from diswot.spaces import SearchSpace

#: Warm-up runs and timed runs when not given (the CLI's defaults).
DEFAULT_WARMUP = 5
DEFAULT_REPEATS = 20


@dataclass(frozen=True)
class Latency:
    """One measurement: the median and the conditions that make it comparable.

    ``times_ms`` are the timed runs in order (warm-up excluded), so the spread can be checked.
    """

    median_ms: float
    batch: int
    device: str
    threads: int
    warmup: int
    repeats: int
    times_ms: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["times_ms"] = [round(t, 4) for t in self.times_ms]
        d["median_ms"] = round(self.median_ms, 4)
        return d

    def text(self) -> str:
        """``median of 20 runs after 5 warm-up, batch 1, eval mode, on cpu (4 threads)``."""
        threads = f"{self.threads} thread" + ("s" if self.threads != 1 else "")
        where = f"{self.device} ({threads})" if self.device == "cpu" else self.device
        return (
            f"median of {self.repeats} runs after {self.warmup} warm-up, batch {self.batch}, "
            f"eval mode, fp32, on {where}"
        )


def _check(name: str, v: int, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise DiswotError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return v


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    image_size: int,
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
) -> Latency:
    """The median wall time of ``model`` on a ``batch x 3 x image_size x image_size`` input.

    The model is moved to ``device`` and put in eval mode (it is left there); the input is drawn
    from a private generator, so the caller's RNG stream is untouched.
    """
    _check("--latency-batch", batch, 1)
    _check("--latency-warmup", warmup, 0)
    _check("--latency-repeats", repeats, 1)
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=gen).to(dev)
    model = model.to(dev).eval()
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _synchronize(dev)
        for _ in range(repeats):
            t0 = perf_counter()
            model(x)
            _synchronize(dev)
            times.append((perf_counter() - t0) * 1e3)
    return Latency(
        median_ms=float(statistics.median(times)),
        batch=batch,
        device=str(dev),
        threads=torch.get_num_threads(),
        warmup=warmup,
        repeats=repeats,
        times_ms=tuple(times),
    )


def measure_arch(
    space: SearchSpace,
    arch: str,
    num_classes: int,
    image_size: int,
    **kwargs: object,
) -> Latency:
    """:func:`measure_latency` of ``space``'s network for ``arch`` (keyword arguments passed on).

    Built under a forked, fixed-seed RNG: the weights are ordinary random ones, the same on every
    call, and the global RNG stream the caller relies on is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = space.build(arch, num_classes)
    return measure_latency(model, image_size, **kwargs)  # type: ignore[arg-type]


__all__ = ["DEFAULT_REPEATS", "DEFAULT_WARMUP", "Latency", "measure_arch", "measure_latency"]
