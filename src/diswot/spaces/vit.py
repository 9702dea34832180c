"""ViT student spaces ``autoformer`` and ``pit`` with the Auto-Prox distillation ground truth.

The ground truth (Auto-Prox, AAAI 2024; shipped as ``diswot/_data/vit_kd_gt.json.gz``) trains ViT
students at 224 px on CIFAR-100, Flowers-102 and Chaoyang, each without (``*_base``) and with
(``*_kd``) feature distillation from a CIFAR ResNet-56 teacher that sees the same images at 32 px.

* ``autoformer`` - AutoFormer-Ti subnets: embedding width {192, 216, 240}, depth {12, 13, 14}, and per
  layer an MLP ratio {3.5, 4} and a head count {3, 4}. 200 students: part 1 (100) has every target,
  part 2 (100 others) only the ``*_kd`` ones, so ``ground_truth("c100_base")`` has 100 entries.
* ``pit`` - PiT subnets: base width {16, 24, 32, 40}, one MLP ratio {2, 4, 6, 8}, stage depths
  {1,2,3} x {4,6,8} x {2,4,6}, stage heads from {2, 4, 8}, non-decreasing (PiT's depthwise pooling
  maps ``base * h_s`` to ``base * h_{s+1}`` channels in groups of ``base * h_s``, so each stage's
  heads must be a multiple of the previous stage's). 4,320 architectures, 100 with ground truth.

Architectures are the canonical codes of :mod:`diswot.models.vit` (``e192_r4-3.5-..._h3-4-...``,
``b32_r4_d2-6-4_h2-4-8``); :meth:`validate` also accepts the record dict or its JSON text.

Scoring: the student sees the 224 px probe batch and the teacher the same batch resized to
:attr:`teacher_image_size` (32 px), as in training. The relation term uses the student's final
**patch tokens** as a ``(N, width, h, w)`` map (``token_map``: every patch token of the last block,
the map the classifier pools or attends over, the analogue of the teacher's pre-pool map; the class
token is left out); the classifier is ``head``. The
widths differ from the teacher's 64, so DisWOT uses its width-independent class-relation semantic form.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from diswot.errors import DiswotError
from diswot.models.cost import ModelCost
from diswot.models.vit import (
    AutoFormer,
    AutoFormerArch,
    PiT,
    PiTArch,
    parse_vit_arch,
    vit_macs,
    vit_params,
)
from diswot.spaces.base import DatasetSpec, SearchSpace
from diswot.spaces.registry import register_space

__all__ = [
    "AF_DEPTHS",
    "AF_HEADS",
    "AF_HIDDEN",
    "AF_RATIOS",
    "AutoFormerSpace",
    "PIT_BASE",
    "PIT_DEPTHS",
    "PIT_HEADS",
    "PIT_RATIOS",
    "PiTSpace",
    "TARGETS",
    "build_vit_ground_truth",
]

AF_HIDDEN: tuple[int, ...] = (192, 216, 240)
AF_DEPTHS: tuple[int, ...] = (12, 13, 14)
AF_RATIOS: tuple[float, ...] = (3.5, 4.0)
AF_HEADS: tuple[int, ...] = (3, 4)

PIT_BASE: tuple[int, ...] = (16, 24, 32, 40)
PIT_RATIOS: tuple[int, ...] = (2, 4, 6, 8)
PIT_DEPTHS: tuple[tuple[int, ...], ...] = ((1, 2, 3), (4, 6, 8), (2, 4, 6))
PIT_HEADS: tuple[int, ...] = (2, 4, 8)
#: Head triples PiT's pooling can connect (each a multiple of the previous), in a fixed order.
PIT_HEAD_TRIPLES: tuple[tuple[int, ...], ...] = tuple(
    t for t in itertools.product(PIT_HEADS, repeat=3) if all(b % a == 0 for a, b in zip(t, t[1:]))
)

TARGETS: tuple[str, ...] = (
    "c100_kd",
    "c100_base",
    "flowers_kd",
    "flowers_base",
    "chaoyang_kd",
    "chaoyang_base",
)
_CLASSES = {"c100": 100, "flowers": 102, "chaoyang": 4}
IMAGE_SIZE = 224
TEACHER_IMAGE_SIZE = 32

# -- ground truth -------------------------------------------------------------------------------

_GT_FILE = "vit_kd_gt.json.gz"
#: Row layout of the shipped file; ``part`` is the source file (1: gt_autoformer / gt_pit, 2:
#: gt_autoformer_2) and ``imagenet_super`` the AutoFormer supernet's inherited ImageNet top-1.
_COLUMNS = ("arch", "part", *TARGETS, "imagenet_super")
_SOURCE_KEYS = {
    "c100_kd": "c100_kd_acc",
    "c100_base": "c100_base_acc",
    "flowers_kd": "flower_kd_acc",
    "flowers_base": "flower_base_acc",
    "chaoyang_kd": "chaoyang_kd_acc",
    "chaoyang_base": "chaoyang_base_acc",
    "imagenet_super": "imagenet_super_acc",
}
_SOURCE_FILES = {"autoformer": ("gt_autoformer", "gt_autoformer_2"), "pit": ("gt_pit",)}


def build_vit_ground_truth(src: str | Path, dst: str | Path) -> Path:
    """Write the shipped table from Auto-Prox's ``vit_kd_gt.json`` (byte-identical on rebuild).

    Each record becomes one row ``[code, part, c100_kd, ..., chaoyang_base, imagenet_super]`` with
    the architecture as its canonical code and accuracies as their exact float repr (``null`` where
    the source has none), in source order; a record whose arch does not parse or falls outside the
    space stops the build.
    """
    raw = json.loads(Path(src).read_text())
    out: dict[str, Any] = {
        "source": "lliai/Auto-Prox-AAAI24 gt_results/ @69ccf82 (Apache-2.0)",
        "columns": list(_COLUMNS),
    }
    for space, files in _SOURCE_FILES.items():
        rows = []
        for part, name in enumerate(files, start=1):
            for rec in raw[name]:
                code = _SPACE_CLASSES[space].check(rec["arch"]).code
                rows.append([code, part, *(rec.get(_SOURCE_KEYS[c]) for c in _COLUMNS[2:])])
        out[space] = rows
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, separators=(",", ":"))
    dst.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    return dst


@cache
def _table(space: str) -> tuple[tuple[str, int, dict[str, float]], ...]:
    blob = resources.files("diswot").joinpath("_data", _GT_FILE).read_bytes()
    data = json.loads(gzip.decompress(blob))
    cols = data["columns"]
    return tuple(
        (row[0], row[1], {c: v for c, v in zip(cols[2:], row[2:]) if v is not None})
        for row in data[space]
    )


# -- spaces -------------------------------------------------------------------------------------


class _VitSpace(SearchSpace):
    """What both ViT spaces share: targets, datasets, ground truth, hooks, exact closed-form cost."""

    default_teacher = "resnet56"
    targets = TARGETS
    default_target = "c100_kd"
    #: classifier = ``head``; relation feature = the final patch tokens (see the module docstring).
    feature_hooks = ("head", "token_map")
    #: The teacher's resolution: the ground truth's ResNet-56 saw the images at 32 px.
    teacher_image_size = TEACHER_IMAGE_SIZE
    #: DisWOT's semantic form. Always the width-independent class form: "auto" would pick the
    #: channel form for the students whose final width happens to equal the teacher's 64 (PiT
    #: b16/h4, b32/h2) and that form lives on another scale (~2 against ~0.02), ranking them apart.
    semantic = "class"
    #: No BatchNorm anywhere (LayerNorm only): proxies built on BN statistics (zen) do not apply.
    has_batchnorm = False
    family = ""

    def dataset(self, target: str | None = None) -> DatasetSpec:
        t = self._check_target(self.default_target if target is None else target)
        return DatasetSpec(num_classes=_CLASSES[t.split("_")[0]], image_size=IMAGE_SIZE)

    @classmethod
    def check(cls, arch: Any) -> AutoFormerArch | PiTArch:
        """Parse ``arch`` (code, dict or JSON text) and check every choice is in the space."""
        raise NotImplementedError

    def validate(self, arch: str | Mapping[str, Any]) -> str:
        return self.check(arch).code

    def compute_cost(self, arch: str, num_classes: int, image_size: int) -> ModelCost:
        # Exact closed form (linear/conv multiply-adds plus the two attention matmuls per layer);
        # the tests check it against diswot.models.cost.profile.
        a = self.check(arch)
        return ModelCost(
            vit_params(a, num_classes, image_size), vit_macs(a, num_classes, image_size)
        )

    def cost_convention(self, num_classes: int, image_size: int) -> str:
        return (
            "multiply-adds of conv/linear layers and attention matmuls for one "
            f"3x{image_size}x{image_size} image, {num_classes}-class classifier"
        )

    def _rows(self) -> tuple[tuple[str, int, dict[str, float]], ...]:
        return _table(self.family)

    def parts(self) -> tuple[int, ...]:
        """Source files of the ground truth (1 and 2 for AutoFormer, 1 for PiT)."""
        return tuple(sorted({p for _, p, _ in self._rows()}))

    def ground_truth(self, target: str, part: int | None = None) -> dict[str, float]:
        """Arch -> top-1 (%) of ``target``; only the archs that have it. ``part`` picks one file."""
        t = self._check_target(target)
        if part is not None and part not in self.parts():
            raise DiswotError(
                f"space '{self.name}' has no ground-truth part {part!r}; accepted: "
                f"{', '.join(map(str, self.parts()))}"
            )
        out = {a: v[t] for a, p, v in self._rows() if t in v and part in (None, p)}
        if not out:
            have = [x for x in self.targets if any(x in v for _, p, v in self._rows() if p == part)]
            raise DiswotError(
                f"part {part} of space '{self.name}' has no '{t}' accuracies; accepted: "
                f"{', '.join(have)}"
            )
        return out

    def supernet_accuracy(self) -> dict[str, float]:
        """AutoFormer only: ImageNet top-1 inherited from the supernet (empty for PiT)."""
        return {a: v["imagenet_super"] for a, _, v in self._rows() if "imagenet_super" in v}

    def rank_archs(self, sample: int | None = None, seed: int = 0) -> list[str]:
        """The archs with ground truth, in file order, or a seeded sample of ``sample`` of them."""
        return self._seeded_sample([a for a, _, _ in self._rows()], sample, seed)


def _choice_error(family: str, what: str, value: Any, accepted: tuple[Any, ...]) -> DiswotError:
    return DiswotError(
        f"{family} {what} {value!r} is outside the space; accepted: {', '.join(map(str, accepted))}"
    )


@register_space("autoformer")
class AutoFormerSpace(_VitSpace):
    """AutoFormer-Ti subnets (about 1.06e9 architectures; 200 with distillation ground truth)."""

    family = "autoformer"

    @classmethod
    def check(cls, arch: Any) -> AutoFormerArch:
        a = parse_vit_arch(arch)
        if not isinstance(a, AutoFormerArch):
            raise DiswotError(
                f"{a.code!r} is a PiT arch; the autoformer space takes codes like "
                "e192_r4-3.5-..._h3-4-... or dicts with hidden_dim, depth, mlp_ratio, num_heads"
            )
        if a.hidden_dim not in AF_HIDDEN:
            raise _choice_error("AutoFormer", "hidden_dim", a.hidden_dim, AF_HIDDEN)
        if a.depth not in AF_DEPTHS:
            raise _choice_error("AutoFormer", "depth", a.depth, AF_DEPTHS)
        for i, (r, h) in enumerate(zip(a.mlp_ratio, a.num_heads)):
            if r not in AF_RATIOS:
                raise _choice_error("AutoFormer", f"mlp_ratio[{i}]", r, AF_RATIOS)
            if h not in AF_HEADS:
                raise _choice_error("AutoFormer", f"num_heads[{i}]", h, AF_HEADS)
        return a

    def sample(self, rng: random.Random) -> str:
        depth = rng.choice(AF_DEPTHS)
        return AutoFormerArch(
            rng.choice(AF_HIDDEN),
            tuple(rng.choice(AF_RATIOS) for _ in range(depth)),
            tuple(rng.choice(AF_HEADS) for _ in range(depth)),
        ).code

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one gene chosen uniformly: the width, the depth, or one layer's ratio or heads.

        A deeper net appends freshly drawn layers; a shallower one drops the last layers.
        """
        a = self.check(arch)
        genes = ["hidden", "depth"] + [("r", i) for i in range(a.depth)]
        genes += [("h", i) for i in range(a.depth)]
        gene = rng.choice(genes)
        ratios, heads = list(a.mlp_ratio), list(a.num_heads)
        hidden = a.hidden_dim
        if gene == "hidden":
            hidden = rng.choice([d for d in AF_HIDDEN if d != hidden])
        elif gene == "depth":
            depth = rng.choice([d for d in AF_DEPTHS if d != a.depth])
            while len(ratios) < depth:
                ratios.append(rng.choice(AF_RATIOS))
                heads.append(rng.choice(AF_HEADS))
            ratios, heads = ratios[:depth], heads[:depth]
        elif gene[0] == "r":
            ratios[gene[1]] = rng.choice([r for r in AF_RATIOS if r != ratios[gene[1]]])
        else:
            heads[gene[1]] = rng.choice([h for h in AF_HEADS if h != heads[gene[1]]])
        return AutoFormerArch(hidden, tuple(ratios), tuple(heads)).code

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        """Width and depth each from either parent; layer ``i`` from either parent that has it."""
        pa, pb = self.check(a), self.check(b)
        hidden = rng.choice((pa.hidden_dim, pb.hidden_dim))
        depth = rng.choice((pa.depth, pb.depth))
        ratios, heads = [], []
        for i in range(depth):
            src = [p for p in (pa, pb) if i < p.depth]
            p = rng.choice(src)
            ratios.append(p.mlp_ratio[i])
            heads.append(p.num_heads[i])
        return AutoFormerArch(hidden, tuple(ratios), tuple(heads)).code

    def size(self) -> int:
        per_layer = len(AF_RATIOS) * len(AF_HEADS)
        return len(AF_HIDDEN) * sum(per_layer**d for d in AF_DEPTHS)

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return AutoFormer(self.check(arch), num_classes, IMAGE_SIZE)


@register_space("pit")
class PiTSpace(_VitSpace):
    """PiT subnets (4,320 architectures; 100 with distillation ground truth)."""

    family = "pit"

    @classmethod
    def check(cls, arch: Any) -> PiTArch:
        a = parse_vit_arch(arch)
        if not isinstance(a, PiTArch):
            raise DiswotError(
                f"{a.code!r} is an AutoFormer arch; the pit space takes codes like "
                "b32_r4_d2-6-4_h2-4-8 or dicts with base_dim, mlp_ratio, depth, num_heads"
            )
        if a.base_dim not in PIT_BASE:
            raise _choice_error("PiT", "base_dim", a.base_dim, PIT_BASE)
        if a.mlp_ratio not in PIT_RATIOS:
            raise _choice_error("PiT", "mlp_ratio", a.mlp_ratio, PIT_RATIOS)
        if len(a.depth) != len(PIT_DEPTHS):
            raise DiswotError(f"PiT needs {len(PIT_DEPTHS)} stages, got depth {list(a.depth)}")
        for s, (d, h) in enumerate(zip(a.depth, a.num_heads)):
            if d not in PIT_DEPTHS[s]:
                raise _choice_error("PiT", f"depth[{s}]", d, PIT_DEPTHS[s])
            if h not in PIT_HEADS:
                raise _choice_error("PiT", f"num_heads[{s}]", h, PIT_HEADS)
        return a

    def sample(self, rng: random.Random) -> str:
        return PiTArch(
            rng.choice(PIT_BASE),
            rng.choice(PIT_RATIOS),
            tuple(rng.choice(c) for c in PIT_DEPTHS),
            rng.choice(PIT_HEAD_TRIPLES),
        ).code

    def _neighbours(self, a: PiTArch) -> list[PiTArch]:
        """Every arch of the space differing from ``a`` in exactly one gene."""
        out = [PiTArch(b, a.mlp_ratio, a.depth, a.num_heads) for b in PIT_BASE if b != a.base_dim]
        out += [
            PiTArch(a.base_dim, r, a.depth, a.num_heads) for r in PIT_RATIOS if r != a.mlp_ratio
        ]
        for s, choices in enumerate(PIT_DEPTHS):
            for d in choices:
                if d != a.depth[s]:
                    depth = a.depth[:s] + (d,) + a.depth[s + 1 :]
                    out.append(PiTArch(a.base_dim, a.mlp_ratio, depth, a.num_heads))
        for s in range(len(a.num_heads)):
            for h in PIT_HEADS:
                heads = a.num_heads[:s] + (h,) + a.num_heads[s + 1 :]
                if h != a.num_heads[s] and heads in PIT_HEAD_TRIPLES:
                    out.append(PiTArch(a.base_dim, a.mlp_ratio, a.depth, heads))
        return out

    def mutate(self, arch: str, rng: random.Random) -> str:
        """A uniformly drawn single-gene neighbour (heads changes keep the pooling valid)."""
        return rng.choice(self._neighbours(self.check(arch))).code

    def crossover(self, a: str, b: str, rng: random.Random) -> str | None:
        """Base width, MLP ratio, each stage depth and the head triple each from either parent.

        The head triple is inherited whole, so the child always has a valid pooling chain.
        """
        pa, pb = self.check(a), self.check(b)
        return PiTArch(
            rng.choice((pa.base_dim, pb.base_dim)),
            rng.choice((pa.mlp_ratio, pb.mlp_ratio)),
            tuple(rng.choice(pair) for pair in zip(pa.depth, pb.depth)),
            rng.choice((pa.num_heads, pb.num_heads)),
        ).code

    def enumerate(self) -> list[str]:
        return [
            PiTArch(b, r, d, h).code
            for b in PIT_BASE
            for r in PIT_RATIOS
            for d in itertools.product(*PIT_DEPTHS)
            for h in PIT_HEAD_TRIPLES
        ]

    def size(self) -> int:
        n_depth = 1
        for c in PIT_DEPTHS:
            n_depth *= len(c)
        return len(PIT_BASE) * len(PIT_RATIOS) * n_depth * len(PIT_HEAD_TRIPLES)

    def build(self, arch: str, num_classes: int) -> nn.Module:
        return PiT(self.check(arch), num_classes, IMAGE_SIZE)


_SPACE_CLASSES: dict[str, type[_VitSpace]] = {"autoformer": AutoFormerSpace, "pit": PiTSpace}
