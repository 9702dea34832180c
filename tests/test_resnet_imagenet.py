"""ImageNet ResNet teachers (torchvision layout, sizes) and the ``resnet-imagenet`` search space."""

from __future__ import annotations

import math
import random

import pytest
import torch

from diswot.errors import DiswotError
from diswot.models import create_model
from diswot.models.cost import profile
from diswot.models.imagenet_resnet import RESNET_LAYOUTS, ZenResNet, parse_arch
from diswot.scoring import Scorer
from diswot.spaces import DatasetSpec, get_space
from diswot.spaces.resnet_imagenet import MAX_LAYERS, count_layers

# -- teachers ---------------------------------------------------------------------------------------

# Published torchvision figures: parameters exactly; conv+linear multiply-accumulates at 224x224.
SIZES = {
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet34": (21_797_672, 3_663_761_408),
    "resnet50": (25_557_032, 4_089_184_256),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_resnet_params_and_macs(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    cost = profile(model, (1, 3, 224, 224), convention="macs")
    assert (cost.params, cost.flops) == SIZES[name]
    # Rounded the way papers print them: 1.81 / 3.66 / 4.09 GMACs.
    assert (
        round(cost.flops / 1e9, 2) == {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09}[name]
    )


def _torchvision_state_shapes(name: str, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``resnet{18,34,50}().state_dict()``, written from its layout.

    Deliberately independent of :mod:`diswot.models.imagenet_resnet`: torchvision's ``_make_layer``
    gives block ``b`` of layer ``l`` a ``downsample`` (1x1 conv + BN) only when it is the first
    block and the stride or the width changes; bottlenecks expand by 4.
    """
    out: dict[str, tuple[int, ...]] = {}

    def conv(key: str, c_out: int, c_in: int, k: int) -> None:
        out[f"{key}.weight"] = (c_out, c_in, k, k)

    def bn(key: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{key}.{p}"] = (c,)
        out[f"{key}.num_batches_tracked"] = ()

    bottleneck = name == "resnet50"
    blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}[name]
    expansion = 4 if bottleneck else 1
    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(n):
            stride = 2 if layer > 1 and b == 0 else 1
            p = f"layer{layer}.{b}"
            if bottleneck:
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    out["fc.weight"] = (num_classes, 512 * expansion)
    out["fc.bias"] = (num_classes,)
    return out


@pytest.mark.parametrize(
    ("name", "n_keys", "n_params"),
    [("resnet18", 122, 62), ("resnet34", 218, 110), ("resnet50", 320, 161)],
)
def test_state_dict_is_torchvision_compatible(name: str, n_keys: int, n_params: int) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _torchvision_state_shapes(name)
    assert ours == expected
    assert len(ours) == n_keys and len(list(model.parameters())) == n_params
    # Spot checks of names users grep for in checkpoints.
    assert ours["layer2.0.downsample.0.weight"] == (
        (128, 64, 1, 1) if name != "resnet50" else (512, 256, 1, 1)
    )
    assert ("layer1.0.downsample.0.weight" in ours) == (name == "resnet50")
    assert ours["fc.weight"] == (1000, 2048 if name == "resnet50" else 512)


def test_torchvision_like_checkpoint_loads_strictly() -> None:
    """A state dict with torchvision's keys and shapes loads strictly and lands in the right tensors."""
    gen = torch.Generator().manual_seed(0)
    sd = {
        k: torch.randn(s, generator=gen) if s else torch.tensor(7)
        for k, s in _torchvision_state_shapes("resnet18", 10).items()
    }
    model = create_model("resnet18", num_classes=10)
    model.load_state_dict(sd, strict=True)
    assert torch.equal(
        model.layer3[0].downsample[1].running_var, sd["layer3.0.downsample.1.running_var"]
    )
    assert torch.equal(model.fc.weight, sd["fc.weight"])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64, generator=gen)).shape == (2, 10)


def test_factory_defaults_and_bad_kwargs() -> None:
    from diswot.models import MODELS

    with torch.device("meta"):
        assert MODELS.get("resnet34")().fc.out_features == 1000
    with pytest.raises(DiswotError, match="takes only num_classes"):
        create_model("resnet18", num_classes=10, widths=(1, 2))


# -- the search space -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def space():
    return get_space("resnet-imagenet")


def test_space_metadata(space) -> None:
    assert space.default_teacher == "resnet34"
    assert space.targets == ()
    assert space.dataset(None) == DatasetSpec(num_classes=1000, image_size=224)
    assert space.enumerate() is None and space.size() is None
    with pytest.raises(DiswotError, match="no target"):
        space.dataset("cifar100")
    # Teachers (outside the space's layer bound) still build, so a Scorer can use space.build.
    with torch.device("meta"):
        assert space.build("resnet34", 1000).num_layers == 32
    with pytest.raises(DiswotError, match="at most 18"):
        space.validate(RESNET_LAYOUTS["resnet34"])


def test_encoding_round_trips_on_samples(space) -> None:
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(50)]
    assert len(set(samples)) > 25  # the sampler explores, not just returns ResNet-18
    for arch in samples:
        assert space.validate(arch) == arch
        stem, stages = parse_arch(arch)
        assert len(stages) == 4  # seeded from ResNet-18, stage count kept
        assert count_layers(stages) <= MAX_LAYERS
        with torch.device("meta"):
            assert space.build(arch, 1000).arch == arch
    # Sampling depends only on the rng.
    rng2 = random.Random(0)
    assert [space.sample(rng2) for _ in range(50)] == samples


def test_non_canonical_spellings(space) -> None:
    assert space.validate(" stem32 | b5x48x1s1|k3x64M16X2S2 ") == "stem3x32|B5x48x1s1|K3x64m16x2s2"
    assert space.validate(RESNET_LAYOUTS["resnet18"]) == RESNET_LAYOUTS["resnet18"]


@pytest.mark.parametrize(
    ("arch", "match"),
    [
        ("stem7x64mp|B3x64x10s1", "at most 18"),  # 20 layers
        ("stem7x64mp|K3x64m16x7s1", "at most 18"),  # 21 layers
        ("stem7x64mp|B4x64x2s1", "3, 5"),
        ("stem9x64|B3x64x2s1", "one of 3, 5, 7"),
        ("stem7x60|B3x64x2s1", "multiple of 8"),
        ("stem7x64|B3x4096x2s1", "multiple of 8"),
        ("stem7x64|K3x64m12x2s1", "multiple of 8"),
        ("stem7x64|B3x64x2s3", "stride must be 1 or 2"),
        ("stem7x64|B3x64x0s1", ">= 1"),
        ("stem7x64", "at least one stage"),
        ("B3x64x2s1|B3x64x2s1", "bad stem"),
        ("stem7x64|C3x64x2s1", "bad stage"),
        ("", "non-empty"),
    ],
)
def test_validate_rejects_with_one_line_fix(space, arch: str, match: str) -> None:
    with pytest.raises(DiswotError, match=match) as info:
        space.validate(arch)
    assert "\n" not in str(info.value)


def test_layer_bound_is_inclusive(space) -> None:
    assert space.validate("stem7x64mp|B3x64x9s1") == "stem7x64mp|B3x64x9s1"  # 18 layers
    assert space.validate("stem7x64mp|K3x64m16x6s1") == "stem7x64mp|K3x64m16x6s1"  # 18 layers
    assert count_layers(parse_arch(RESNET_LAYOUTS["resnet18"])[1]) == 16


def _check_in_space(arch: str) -> None:
    stem, stages = parse_arch(arch)
    assert count_layers(stages) <= MAX_LAYERS
    widths = [stem.width] + [s.width for s in stages] + [s.mid for s in stages if s.mid]
    assert all(w % 8 == 0 and 8 <= w <= 2048 for w in widths), arch


def test_mutate_is_valid_different_and_deterministic(space) -> None:
    rng = random.Random(1)
    arch = RESNET_LAYOUTS["resnet18"]
    walk = []
    seen_layers = set()
    for _ in range(400):
        child = space.mutate(arch, rng)
        assert child != arch
        assert space.validate(child) == child
        _check_in_space(child)
        seen_layers.add(count_layers(parse_arch(child)[1]))
        walk.append(child)
        arch = child
    assert MAX_LAYERS in seen_layers  # the walk reaches the bound without crossing it
    assert any("|K" in a for a in walk)  # block-type swaps happen
    rng2 = random.Random(1)
    arch = RESNET_LAYOUTS["resnet18"]
    again = []
    for _ in range(400):
        arch = space.mutate(arch, rng2)
        again.append(arch)
    assert again == walk


def test_mutate_at_the_layer_bound_stays_valid(space) -> None:
    rng = random.Random(3)
    full = "stem3x8|K3x8m8x6s1"  # 18 layers, minimal widths: many edits are rejected
    for _ in range(100):
        child = space.mutate(full, rng)
        assert child != full
        _check_in_space(child)


def test_width_mutation_uses_the_factor_set(space) -> None:
    rng = random.Random(5)
    base = RESNET_LAYOUTS["resnet18"]
    allowed = {int(512 * f / 8 + 0.5) * 8 for f in (0.4, 0.5, 0.6, 0.8, 1.2, 1.5, 2.0, 2.5)}
    widths = set()
    for _ in range(300):
        st = parse_arch(space.mutate(base, rng))[1][3]
        if st.block == "basic" and st.kernel == 3 and st.depth == 2:
            widths.add(st.width)
    assert widths - {512} <= allowed and len(widths - {512}) >= 5


def test_crossover(space) -> None:
    rng = random.Random(2)
    a = "stem7x64mp|B3x64x2s1|B3x128x2s2|B3x256x2s2|B3x512x2s2"
    b = "stem3x32|K5x96m24x1s1|B7x160x3s2|B3x320x1s2|K3x640m160x2s2"
    tokens_a, tokens_b = a.split("|"), b.split("|")
    children = {space.crossover(a, b, rng) for _ in range(30)}
    assert None not in children and len(children) > 5
    for child in children:
        assert space.validate(child) == child and child not in (a, b)
        assert all(t in (x, y) for t, x, y in zip(child.split("|"), tokens_a, tokens_b))
    assert space.crossover(a, "stem7x64mp|B3x64x2s1", rng) is None  # stage counts differ
    assert space.crossover(a, a, rng) is None


def test_cost_matches_profile_and_is_cached(space) -> None:
    r18 = RESNET_LAYOUTS["resnet18"]
    cost = space.cost(r18, 1000, 224)
    assert (cost.params, cost.flops) == SIZES["resnet18"]
    assert space.cost(r18, 1000, 224) is cost
    # The Scorer's (1, 3, H, H) input size is accepted too.
    assert space.cost(r18, 1000, (1, 3, 224, 224)) == cost
    with pytest.raises(DiswotError, match="square"):
        space.cost(r18, 1000, (1, 3, 224, 112))


def test_scorer_runs_on_a_sampled_student(space) -> None:
    # Small probe (64 px, batch 4) to stay fast on CPU; the protocol is the same at 224 px.
    rng = random.Random(0)
    arch = next(
        a for a in (space.sample(rng) for _ in range(20)) if parse_arch(a)[1][-1].width != 512
    )
    scorer = Scorer(
        "resnet18",
        num_classes=1000,
        image_size=64,
        batch_size=4,
        builder=space.build,
        coster=space.cost,
    )
    result = scorer.score(arch, proxies=("diswot",))
    assert math.isfinite(result.values["diswot"]) and result.values["diswot"] < 0
    # Student and teacher pooled widths differ, so the width-independent class form was used.
    assert result.info["semantic_form"] == "class"
    cost = space.cost(arch, 1000, 64)
    assert (result.params, result.flops) == (cost.params, cost.flops)


def test_zen_resnet_forward_shapes() -> None:
    model = ZenResNet.from_arch("stem3x16|B5x16x1s1|K7x32m8x1s2", num_classes=10)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.num_layers == 5
    assert isinstance(model.maxpool, torch.nn.Identity)
