"""Architectures as Optuna parameters: the genes NSGA-II crosses over and mutates.

Optuna's :class:`~optuna.samplers.NSGAIISampler` recombines *parameters*: each individual is a set
of named values, each drawn from a fixed distribution. A space's architecture strings are mapped
onto such genes, one of these ways, in this order:

1. the space's own ``genes()`` / ``from_genes(values)`` / ``to_genes(arch)`` methods, if it has
   them: ``genes()`` returns ``{name: choices}`` (choices are ``str``, ``int``, ``float`` or
   ``bool``), a user's space opts in with these three methods;
2. an encoding built in here for the shipped spaces: S1 (a depth per stage), NB201 (an op per
   edge), PiT (width, MLP ratio, a depth per stage, the head triple) and AutoFormer (width, depth,
   and a ratio and a head count for each of the deepest net's layers, those past the depth unused);
3. any other space that lists its architectures (``enumerate()``): one integer gene, the index in
   that list. NSGA-II then recombines whole architectures only (a child is one parent or the
   other, or a fresh draw), which still gives a correct front, just a slower search;
4. otherwise the space is refused with a one-line reason (``resnet-imagenet``: its widths and
   depths are open-ended, so no fixed parameter set describes it).

Genes that decode to the same architecture (AutoFormer's unused layers) are the same candidate:
the search's ledger looks a repeat up instead of scoring it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diswot.errors import DiswotError
from diswot.spaces import SearchSpace

Choice = str | int | float | bool


@dataclass(frozen=True)
class Genome:
    """How one space's architectures map to named Optuna parameters, and back.

    ``genes`` holds, for each parameter, its choices (a categorical gene) or ``None`` for the one
    integer gene of an index encoding (``0 .. size - 1``, :attr:`size`).
    """

    kind: str  # one line for messages and docs: what the genes are
    genes: tuple[tuple[str, tuple[Choice, ...] | None], ...]
    decode: Callable[[Mapping[str, Any]], str]
    encode: Callable[[str], dict[str, Any]]
    size: int = 0

    def distributions(self) -> dict[str, Any]:
        """The Optuna distributions ``study.ask`` draws the genes from."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        return {
            name: IntDistribution(0, self.size - 1)
            if choices is None
            else CategoricalDistribution(choices)
            for name, choices in self.genes
        }


def _categorical(
    kind: str,
    genes: Mapping[str, Sequence[Choice]],
    decode: Callable[[Mapping[str, Any]], str],
    encode: Callable[[str], dict[str, Any]],
) -> Genome:
    return Genome(kind, tuple((n, tuple(c)) for n, c in genes.items()), decode, encode)


def _s1() -> Genome:
    from diswot.spaces.s1 import DEPTHS

    names = ("stage1", "stage2", "stage3")
    return _categorical(
        "S1: blocks per stage (3 genes of 1, 3, 5, 7)",
        {n: DEPTHS for n in names},
        lambda p: "".join(str(p[n]) for n in names),
        lambda a: {n: int(c) for n, c in zip(names, a)},
    )


def _nb201() -> Genome:
    from diswot.models.nb201 import EDGES, OPS, format_arch, parse_arch

    names = tuple(f"edge_{dst}_{src}" for dst, src in EDGES)
    return _categorical(
        "NB201: the op of each of the 6 edges (5 ops)",
        {n: OPS for n in names},
        lambda p: format_arch([p[n] for n in names]),
        lambda a: dict(zip(names, parse_arch(a))),
    )


def _pit(space: SearchSpace) -> Genome:
    from diswot.models.vit import PiTArch
    from diswot.spaces.vit import PIT_BASE, PIT_DEPTHS, PIT_HEAD_TRIPLES, PIT_RATIOS

    depth = tuple(f"depth{s + 1}" for s in range(len(PIT_DEPTHS)))
    triples = {"-".join(map(str, t)): t for t in PIT_HEAD_TRIPLES}  # a whole triple is one gene:
    # heads must divide from stage to stage, and only whole triples keep the pooling valid.

    def encode(arch: str) -> dict[str, Any]:
        a = space.check(arch)  # type: ignore[attr-defined]
        return {
            "base_dim": a.base_dim,
            "mlp_ratio": a.mlp_ratio,
            **dict(zip(depth, a.depth)),
            "heads": "-".join(map(str, a.num_heads)),
        }

    return _categorical(
        "PiT: base width, MLP ratio, a depth per stage, the head triple",
        {
            "base_dim": PIT_BASE,
            "mlp_ratio": PIT_RATIOS,
            **dict(zip(depth, PIT_DEPTHS)),
            "heads": tuple(triples),
        },  # fmt: skip
        lambda p: (
            PiTArch(
                p["base_dim"], p["mlp_ratio"], tuple(p[n] for n in depth), triples[p["heads"]]
            ).code
        ),
        encode,
    )


def _autoformer(space: SearchSpace) -> Genome:
    from diswot.models.vit import AutoFormerArch
    from diswot.spaces.vit import AF_DEPTHS, AF_HEADS, AF_HIDDEN, AF_RATIOS

    layers = range(1, max(AF_DEPTHS) + 1)

    def encode(arch: str) -> dict[str, Any]:
        a = space.check(arch)  # type: ignore[attr-defined]
        out: dict[str, Any] = {"hidden_dim": a.hidden_dim, "depth": a.depth}
        for i in layers:  # layers past the depth are unused: any value stands for them
            out[f"ratio{i}"] = a.mlp_ratio[i - 1] if i <= a.depth else AF_RATIOS[0]
            out[f"heads{i}"] = a.num_heads[i - 1] if i <= a.depth else AF_HEADS[0]
        return out

    def decode(p: Mapping[str, Any]) -> str:
        d = int(p["depth"])
        return AutoFormerArch(
            p["hidden_dim"],
            tuple(p[f"ratio{i}"] for i in range(1, d + 1)),
            tuple(p[f"heads{i}"] for i in range(1, d + 1)),
        ).code

    genes: dict[str, Sequence[Choice]] = {"hidden_dim": AF_HIDDEN, "depth": AF_DEPTHS}
    for i in layers:
        genes[f"ratio{i}"] = AF_RATIOS
        genes[f"heads{i}"] = AF_HEADS
    return _categorical(
        "AutoFormer: width, depth, and a ratio and head count per layer", genes, decode, encode
    )


def _own(space: SearchSpace) -> Genome:
    genes = space.genes()  # type: ignore[attr-defined]
    for name, choices in genes.items():
        if not choices or not all(
            isinstance(c, (str, int, float, bool)) and not (isinstance(c, float) and math.isnan(c))
            for c in choices
        ):
            raise DiswotError(
                f"space '{space.name}': genes()['{name}'] must list str, int, float or bool "
                f"choices; got {choices!r}"
            )
    return _categorical(
        f"{space.name}: the space's own genes ({', '.join(genes)})",
        genes,
        space.from_genes,  # type: ignore[attr-defined]
        space.to_genes,  # type: ignore[attr-defined]
    )


def _index(space: SearchSpace, archs: list[str]) -> Genome:
    where = {a: i for i, a in enumerate(archs)}
    return Genome(
        f"{space.name}: the index in the space's list of {len(archs)} architectures",
        (("index", None),),
        lambda p: archs[int(p["index"])],
        lambda a: {"index": where[a]},
        size=len(archs),
    )


def genome_for(space: SearchSpace) -> Genome:
    """The encoding NSGA-II searches ``space`` through; a one-line error where none exists."""
    from diswot.spaces.nb201 import NB201Space
    from diswot.spaces.s1 import S1Space
    from diswot.spaces.vit import AutoFormerSpace, PiTSpace

    if all(callable(getattr(space, m, None)) for m in ("genes", "from_genes", "to_genes")):
        return _own(space)
    if isinstance(space, S1Space):
        return _s1()
    if isinstance(space, NB201Space):
        return _nb201()
    if isinstance(space, PiTSpace):
        return _pit(space)
    if isinstance(space, AutoFormerSpace):
        return _autoformer(space)
    archs = space.enumerate()
    if archs is not None:
        return _index(space, archs)
    raise DiswotError(
        f"space '{space.name}' cannot be searched with --pareto: Optuna's NSGA-II needs a fixed "
        "set of parameters, and this space neither lists its architectures (enumerate) nor "
        "defines genes()/from_genes()/to_genes() (docs/search.md, 'Pareto search'); search it "
        "for the best score under --max-params/--max-flops with --algorithm evolution instead"
    )


__all__ = ["Genome", "genome_for"]
