"""Vision-transformer students: AutoFormer subnets and PiT, as trained in the Auto-Prox ground truth.

Both families are built from a small architecture record (the ``arch`` dict of the shipped ground
truth) and have a canonical, shell-safe string code that round-trips with that dict:

* **AutoFormer** ``{hidden_dim, depth, mlp_ratio: [per layer], num_heads: [per layer]}`` is a plain
  ViT at 224 px with 16 px patches, a class token and learned position embeddings. Every layer keeps
  the embedding width: the heads *split* it (head width ``hidden_dim / heads``), so the head count
  changes the attention pattern but not the parameter count. As in the Auto-Prox subnets the
  classifier reads the **mean of the final patch tokens** (after the last LayerNorm), not the class
  token. Code: ``e192_r3.5-4-...-3.5_h4-3-...-4`` (``e`` embed width, ``r`` MLP ratio per layer,
  ``h`` heads per layer; the depth is the list length).
* **PiT** (pooling-based ViT) ``{base_dim, mlp_ratio, depth: [3 stages], num_heads: [3 stages]}``: a
  16 px convolutional patch embedding with stride 8 (27 x 27 tokens at 224 px), three transformer
  stages of width ``base_dim * heads[s]``, and between stages PiT's pooling layer: a depthwise 3 x 3
  stride-2 convolution on the token map (channel multiplier ``heads[s+1] / heads[s]``) and a linear
  map of the class token. The classifier reads the final **class token** after LayerNorm. Code:
  ``b32_r4_d2-6-4_h2-4-8``.

For the DisWOT relation term each model passes its final patch tokens, laid out as a spatial map
``(N, width, h, w)``, through an identity module ``token_map``: the analogue of a CNN's pre-pool
feature map (the map the classifier pools or attends over, and the layout Auto-Prox's feature
distillation reads). A 4-D map also lets the CNN-style distillation proxies (attention transfer,
inter-channel correlation) see channels and positions the way they do for the teacher. The classifier
input (patch-token mean or class token) passes through ``final_token``; the classifier is ``head``.

Attention is written with explicit matmuls rather than ``F.scaled_dot_product_attention``: torch's
FLOP counter has no formula for the CPU fused-attention kernel, so with SDPA the attention
multiply-adds would silently drop out of profiles on real CPU tensors.

Validation here is *structural* (types, lengths, divisibility); which values a search space allows
is the space's business (:mod:`diswot.spaces.vit`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diswot.errors import DiswotError
from diswot.models._registry import register_model

__all__ = [
    "AutoFormer",
    "AutoFormerArch",
    "PiT",
    "PiTArch",
    "ResizeInput",
    "parse_vit_arch",
    "vit_macs",
    "vit_params",
]

#: LayerNorm epsilon of the Auto-Prox transformer configs.
LN_EPS = 1e-6
PATCH = 16
PIT_STRIDE = 8

# -- architecture records ------------------------------------------------------------------------

AUTOFORMER_KEYS = ("depth", "hidden_dim", "mlp_ratio", "num_heads")
PIT_KEYS = ("base_dim", "depth", "mlp_ratio", "num_heads")

_AF_CODE = re.compile(r"^e(\d+)_r([0-9.]+(?:-[0-9.]+)*)_h(\d+(?:-\d+)*)$")
_PIT_CODE = re.compile(r"^b(\d+)_r(\d+)_d(\d+(?:-\d+)*)_h(\d+(?:-\d+)*)$")
AF_CODE_FORM = "e<dim>_r<ratio>-<ratio>-..._h<heads>-<heads>-... (e.g. e192_r4-3.5-4_h3-4-3)"
PIT_CODE_FORM = "b<base>_r<ratio>_d<d1>-<d2>-<d3>_h<h1>-<h2>-<h3> (e.g. b32_r4_d2-6-4_h2-4-8)"


def _fmt(x: float) -> str:
    """Shortest text of a ratio that reads back exactly (4.0 -> '4', 3.5 -> '3.5')."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(float(x))


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or int(v) < 1:
        raise DiswotError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def _ratio(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise DiswotError(f"{what} must be a positive number, got {v!r}")
    return float(v)


def _int_list(v: Any, what: str) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not v:
        raise DiswotError(f"{what} must be a non-empty list of integers, got {v!r}")
    return tuple(_int(x, f"{what}[{i}]") for i, x in enumerate(v))


def _check_keys(d: Mapping[str, Any], keys: tuple[str, ...], family: str) -> None:
    if not isinstance(d, Mapping):
        raise DiswotError(f"a {family} arch must be a dict with keys {', '.join(keys)}")
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise DiswotError(
            f"unknown {family} arch key(s) {', '.join(map(str, unknown))}; accepted: {', '.join(keys)}"
        )
    missing = [k for k in keys if k not in d]
    if missing:
        raise DiswotError(
            f"{family} arch lacks {', '.join(missing)}; give all of {', '.join(keys)}"
        )


@dataclass(frozen=True)
class AutoFormerArch:
    """One AutoFormer subnet: embedding width, and MLP ratio and head count of every layer."""

    hidden_dim: int
    mlp_ratio: tuple[float, ...]
    num_heads: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.mlp_ratio) != len(self.num_heads):
            raise DiswotError(
                f"AutoFormer arch has {len(self.mlp_ratio)} MLP ratios but {len(self.num_heads)} "
                "head counts; give one of each per layer"
            )
        for i, h in enumerate(self.num_heads):
            if self.hidden_dim % h:
                raise DiswotError(
                    f"AutoFormer layer {i}: {h} heads do not divide hidden_dim {self.hidden_dim}; "
                    "use a head count that divides it"
                )
        for i, r in enumerate(self.mlp_ratio):
            if self.hidden_dim * r != int(self.hidden_dim * r):
                raise DiswotError(
                    f"AutoFormer layer {i}: hidden_dim {self.hidden_dim} x mlp_ratio {r} is not an "
                    "integer width; use a ratio giving whole channels"
                )

    @property
    def depth(self) -> int:
        return len(self.num_heads)

    @property
    def mlp_dims(self) -> tuple[int, ...]:
        return tuple(int(self.hidden_dim * r) for r in self.mlp_ratio)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AutoFormerArch:
        """From the ground truth's record; ``depth`` must equal both list lengths."""
        _check_keys(d, AUTOFORMER_KEYS, "AutoFormer")
        depth = _int(d["depth"], "AutoFormer depth")
        ratios = d["mlp_ratio"]
        if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
            raise DiswotError(f"AutoFormer mlp_ratio must be a list of numbers, got {ratios!r}")
        ratio_t = tuple(_ratio(r, f"AutoFormer mlp_ratio[{i}]") for i, r in enumerate(ratios))
        heads = _int_list(d["num_heads"], "AutoFormer num_heads")
        if not len(ratio_t) == len(heads) == depth:
            raise DiswotError(
                f"AutoFormer depth {depth} needs {depth} mlp_ratio and num_heads entries, got "
                f"{len(ratio_t)} and {len(heads)}"
            )
        return cls(_int(d["hidden_dim"], "AutoFormer hidden_dim"), ratio_t, heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "hidden_dim": self.hidden_dim,
            "mlp_ratio": list(self.mlp_ratio),
            "num_heads": list(self.num_heads),
        }

    @property
    def code(self) -> str:
        """Canonical string, e.g. ``e192_r4-3.5-4_h3-4-3``."""
        ratios = "-".join(_fmt(r) for r in self.mlp_ratio)
        return f"e{self.hidden_dim}_r{ratios}_h{'-'.join(map(str, self.num_heads))}"

    @classmethod
    def from_code(cls, code: str) -> AutoFormerArch:
        m = _AF_CODE.match(code.strip())
        if not m:
            raise DiswotError(f"bad AutoFormer code {code!r}; expected {AF_CODE_FORM}")
        try:
            ratios = tuple(float(r) for r in m.group(2).split("-"))
        except ValueError:
            raise DiswotError(f"bad AutoFormer code {code!r}; expected {AF_CODE_FORM}") from None
        heads = tuple(int(h) for h in m.group(3).split("-"))
        if len(ratios) != len(heads):
            raise DiswotError(
                f"AutoFormer code {code!r} has {len(ratios)} ratios but {len(heads)} head counts; "
                "give one of each per layer"
            )
        return cls.from_dict(
            {
                "hidden_dim": int(m.group(1)),
                "depth": len(heads),
                "mlp_ratio": ratios,
                "num_heads": heads,
            }
        )


@dataclass(frozen=True)
class PiTArch:
    """One PiT: base (per-head) width, one MLP ratio, and depth and heads of every stage."""

    base_dim: int
    mlp_ratio: int
    depth: tuple[int, ...]
    num_heads: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.depth) != len(self.num_heads):
            raise DiswotError(
                f"PiT arch has {len(self.depth)} stage depths but {len(self.num_heads)} head "
                "counts; give one of each per stage"
            )
        for s in range(len(self.num_heads) - 1):
            a, b = self.num_heads[s], self.num_heads[s + 1]
            if b % a:
                raise DiswotError(
                    f"PiT heads {a} -> {b} between stages {s} and {s + 1}: the depthwise pooling "
                    "conv needs each stage's heads to be a multiple of the previous stage's"
                )

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.base_dim * h for h in self.num_heads)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PiTArch:
        _check_keys(d, PIT_KEYS, "PiT")
        return cls(
            _int(d["base_dim"], "PiT base_dim"),
            _int(d["mlp_ratio"], "PiT mlp_ratio"),
            _int_list(d["depth"], "PiT depth"),
            _int_list(d["num_heads"], "PiT num_heads"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_dim": self.base_dim,
            "depth": list(self.depth),
            "mlp_ratio": self.mlp_ratio,
            "num_heads": list(self.num_heads),
        }

    @property
    def code(self) -> str:
        """Canonical string, e.g. ``b32_r4_d2-6-4_h2-4-8``."""
        d = "-".join(map(str, self.depth))
        h = "-".join(map(str, self.num_heads))
        return f"b{self.base_dim}_r{self.mlp_ratio}_d{d}_h{h}"

    @classmethod
    def from_code(cls, code: str) -> PiTArch:
        m = _PIT_CODE.match(code.strip())
        if not m:
            raise DiswotError(f"bad PiT code {code!r}; expected {PIT_CODE_FORM}")
        return cls.from_dict(
            {
                "base_dim": int(m.group(1)),
                "mlp_ratio": int(m.group(2)),
                "depth": [int(x) for x in m.group(3).split("-")],
                "num_heads": [int(x) for x in m.group(4).split("-")],
            }
        )


def parse_vit_arch(
    arch: str | Mapping[str, Any] | AutoFormerArch | PiTArch,
) -> AutoFormerArch | PiTArch:
    """Any accepted form (record dict, its JSON text, or a code) to an arch record.

    The family is told by the keys (``hidden_dim`` -> AutoFormer, ``base_dim`` -> PiT) or the code's
    first letter (``e`` / ``b``).
    """
    if isinstance(arch, (AutoFormerArch, PiTArch)):
        return arch
    if isinstance(arch, str):
        text = arch.strip()
        if text.startswith("{"):
            try:
                arch = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DiswotError(
                    f"arch JSON does not parse ({exc.msg}); give a dict or a code"
                ) from None
        elif text.startswith("e"):
            return AutoFormerArch.from_code(text)
        elif text.startswith("b"):
            return PiTArch.from_code(text)
        else:
            raise DiswotError(
                f"unknown ViT arch {arch!r}; give an AutoFormer code {AF_CODE_FORM}, a PiT code "
                f"{PIT_CODE_FORM}, or the arch dict"
            )
    if isinstance(arch, Mapping):
        if "hidden_dim" in arch:
            return AutoFormerArch.from_dict(arch)
        if "base_dim" in arch:
            return PiTArch.from_dict(arch)
        raise DiswotError(
            f"cannot tell the ViT family of keys {sorted(map(str, arch))}; an AutoFormer dict has "
            f"{', '.join(AUTOFORMER_KEYS)}, a PiT dict {', '.join(PIT_KEYS)}"
        )
    raise DiswotError(f"a ViT arch is a dict or a code string, got {type(arch).__name__}")


# -- layers -------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention; the heads split ``dim`` (head width ``dim // heads``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)).mul_(self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer layer: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _vit_init(module: nn.Module) -> None:
    # The usual ViT training init, N(0, 0.02^2) for linear layers. ViT code writes it as
    # trunc_normal_(std=0.02), whose default cut is at +-2 (100 sigma): the same distribution, drawn
    # 2-3x slower. Scoring re-initialises with diswot.models.init_weights anyway.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_image(x: Tensor, size: int, name: str) -> None:
    if x.dim() != 4 or x.shape[-1] != size or x.shape[-2] != size:
        raise DiswotError(
            f"{name} was built for {size} px images but got input of shape {tuple(x.shape)}; "
            f"on the command line pass --image-size {size}; in Python resize the batch to "
            f"{size} px or build it with image_size={x.shape[-1]}"
        )


class AutoFormer(nn.Module):
    """AutoFormer subnet (see the module docstring); ``image_size`` must be a multiple of 16."""

    def __init__(
        self,
        arch: str | Mapping[str, Any] | AutoFormerArch,
        num_classes: int = 100,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        a = parse_vit_arch(arch)
        if not isinstance(a, AutoFormerArch):
            raise DiswotError(f"AutoFormer needs an AutoFormer arch, got PiT {a.code}")
        if image_size < PATCH or image_size % PATCH:
            raise DiswotError(
                f"AutoFormer image_size must be a multiple of {PATCH}, got {image_size}"
            )
        self.arch = a
        self.image_size = image_size
        d = a.hidden_dim
        num_patches = (image_size // PATCH) ** 2
        self.patch_embed = nn.Conv2d(3, d, kernel_size=PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, d))
        self.blocks = nn.ModuleList(Block(d, h, m) for h, m in zip(a.num_heads, a.mlp_dims))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.token_map = nn.Identity()
        self.final_token = nn.Identity()
        self.head = nn.Linear(d, num_classes)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(_vit_init)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, self.image_size, "AutoFormer")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        tokens = self.norm(x)[:, 1:]
        n, t, c = tokens.shape
        side = self.image_size // PATCH
        self.token_map(tokens.transpose(1, 2).reshape(n, c, side, side))
        return self.head(self.final_token(tokens.mean(dim=1)))


class PiTPool(nn.Module):
    """PiT's pooling between stages: depthwise stride-2 conv on the map, linear on the class token."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=2, padding=1, groups=dim_in)
        self.fc = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(x), self.fc(cls)


class PiTStage(nn.Module):
    """Transformer layers over ``[class token, flattened map]``; returns the map and the token."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, dim * mlp_ratio) for _ in range(depth))

    def forward(self, x: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        t = torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1)
        for blk in self.blocks:
            t = blk(t)
        k = cls.shape[1]
        return t[:, k:].transpose(1, 2).reshape(n, c, h, w), t[:, :k]


class PiT(nn.Module):
    """PiT (see the module docstring); 16 px patches with stride 8, so ``image_size >= 16``."""

    def __init__(
        self,
        arch: str | Mapping[str, Any] | PiTArch,
        num_classes: int = 100,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        a = parse_vit_arch(arch)
        if not isinstance(a, PiTArch):
            raise DiswotError(f"PiT needs a PiT arch, got AutoFormer {a.code}")
        if image_size < PATCH:
            raise DiswotError(f"PiT image_size must be at least {PATCH}, got {image_size}")
        self.arch = a
        self.image_size = image_size
        w = a.widths
        side = (image_size - PATCH) // PIT_STRIDE + 1
        self.patch_embed = nn.Conv2d(3, w[0], kernel_size=PATCH, stride=PIT_STRIDE)
        self.pos_embed = nn.Parameter(torch.zeros(1, w[0], side, side))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w[0]))
        self.stages = nn.ModuleList(
            PiTStage(w[s], a.depth[s], a.num_heads[s], a.mlp_ratio) for s in range(len(w))
        )
        self.pools = nn.ModuleList(PiTPool(w[s], w[s + 1]) for s in range(len(w) - 1))
        self.norm = nn.LayerNorm(w[-1], eps=LN_EPS)
        self.token_map = nn.Identity()
        self.final_token = nn.Identity()
        self.head = nn.Linear(w[-1], num_classes)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(_vit_init)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, self.image_size, "PiT")
        x = self.patch_embed(x) + self.pos_embed
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for s, stage in enumerate(self.stages):
            x, cls = stage(x, cls)
            if s < len(self.pools):
                x, cls = self.pools[s](x, cls)
        self.token_map(x)
        return self.head(self.final_token(self.norm(cls)[:, 0]))


# -- closed-form costs (independent of the modules above; the tests compare the two) -----------


def _block_params(dim: int, hidden: int) -> int:
    # 2 LayerNorms (2*dim each), qkv (3 dim^2 + 3 dim), proj (dim^2 + dim), fc1, fc2.
    return 4 * dim * dim + 2 * dim * hidden + hidden + 9 * dim


def vit_params(arch: AutoFormerArch | PiTArch, num_classes: int, image_size: int = 224) -> int:
    """Parameter count in closed form, derived by hand from the layer shapes."""
    if isinstance(arch, AutoFormerArch):
        d = arch.hidden_dim
        tokens = (image_size // PATCH) ** 2 + 1
        embed = (3 * PATCH * PATCH + 1) * d + tokens * d + d
        blocks = sum(_block_params(d, m) for m in arch.mlp_dims)
        return embed + blocks + 2 * d + d * num_classes + num_classes
    w = arch.widths
    side = (image_size - PATCH) // PIT_STRIDE + 1
    embed = (3 * PATCH * PATCH + 1) * w[0] + side * side * w[0] + w[0]
    blocks = sum(arch.depth[s] * _block_params(w[s], w[s] * arch.mlp_ratio) for s in range(len(w)))
    # pooling: depthwise conv (9 weights + 1 bias per output channel) and the token's linear map
    pools = sum(10 * w[s + 1] + w[s] * w[s + 1] + w[s + 1] for s in range(len(w) - 1))
    return embed + blocks + pools + 2 * w[-1] + w[-1] * num_classes + num_classes


def _block_macs(tokens: int, dim: int, hidden: int) -> int:
    # qkv + proj + fc1 + fc2 linear layers, then q k^T and attn v (tokens^2 * dim each).
    return tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * tokens * tokens * dim


def vit_macs(arch: AutoFormerArch | PiTArch, num_classes: int, image_size: int = 224) -> int:
    """Multiply-adds of linear layers, convolutions and attention matmuls, in closed form."""
    if isinstance(arch, AutoFormerArch):
        d = arch.hidden_dim
        patches = (image_size // PATCH) ** 2
        t = patches + 1
        embed = patches * 3 * PATCH * PATCH * d
        return embed + sum(_block_macs(t, d, m) for m in arch.mlp_dims) + d * num_classes
    w = arch.widths
    side = (image_size - PATCH) // PIT_STRIDE + 1
    total = side * side * 3 * PATCH * PATCH * w[0]
    for s in range(len(w)):
        total += arch.depth[s] * _block_macs(side * side + 1, w[s], w[s] * arch.mlp_ratio)
        if s < len(w) - 1:
            side = (side - 1) // 2 + 1  # 3x3, stride 2, padding 1
            total += side * side * w[s + 1] * 9 + w[s] * w[s + 1]
    return total + w[-1] * num_classes


# -- registered defaults ------------------------------------------------------------------------

#: The DeiT-Ti-shaped member of the AutoFormer-Ti space (12 layers, width 192, ratio 4, 3 heads).
AUTOFORMER_TI = AutoFormerArch(192, (4.0,) * 12, (3,) * 12)
#: PiT-Ti (Heo et al. 2021): base width 32, depths 2-6-4, heads 2-4-8, MLP ratio 4.
PIT_TI = PiTArch(32, 4, (2, 6, 4), (2, 4, 8))


@register_model("autoformer_ti")
def autoformer_ti(
    num_classes: int = 100, arch: str | Mapping[str, Any] | None = None, image_size: int = 224
) -> AutoFormer:
    """An AutoFormer subnet (``arch`` dict or code; DeiT-Ti-shaped by default), 224 px."""
    return AutoFormer(arch if arch is not None else AUTOFORMER_TI, num_classes, image_size)


@register_model("pit_ti")
def pit_ti(
    num_classes: int = 100, arch: str | Mapping[str, Any] | None = None, image_size: int = 224
) -> PiT:
    """A PiT (``arch`` dict or code; PiT-Ti by default), 224 px."""
    return PiT(arch if arch is not None else PIT_TI, num_classes, image_size)


class ResizeInput(nn.Module):
    """Wrap a model so that it sees its input resized to ``size`` px (bilinear, antialiased).

    Lets a 32 px CIFAR teacher score against 224 px ViT students from one probe batch until the
    scorer resizes for the teacher itself; wrapping keeps every submodule (and so hook names and
    the init) of the wrapped model, under the prefix ``model.``.
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model = model
        self.size = int(size)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > self.size,
            )
        return self.model(x)
