"""Model zoo: checkpoint layout, forward equivalence with the reference code, features, MACs.

tests/data/model_reference.json.gz holds, per architecture, the state-dict keys/shapes and
parameter count of the published RepDistiller / mdistiller / torchvision checkpoints, and
logits recorded from the reference implementations with weights filled deterministically
from key names (`fill_state_dict` below). Matching logits checks strides, pooling and
activation order, which equal keys and shapes alone do not.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models import resnet152

import kdrun.models as models
from kdrun.errors import UserError
from kdrun.models.profile import count_macs, count_params, zoo_table

DATA = Path(__file__).parent / "data" / "model_reference.json.gz"

CIFAR_NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet18", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1",
    "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1",
    "ShuffleV2",
]
IMAGENET_NAMES = ["ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "MobileNetV1"]
NUM_CLASSES = {"cifar100": 100, "imagenet": 1000}


pytestmark = pytest.mark.usefixtures("one_thread")


@cache
def reference() -> dict[str, dict[str, dict[str, Any]]]:
    return json.loads(gzip.decompress(DATA.read_bytes()))


def _entries(with_logits: bool = False) -> list[tuple[str, str]]:
    ref = json.loads(gzip.decompress(DATA.read_bytes()))
    return [
        (zoo, name)
        for zoo, entries in ref.items()
        for name, entry in entries.items()
        if not with_logits or "logits" in entry
    ]


# --- deterministic weights from key names (kdrun's own version of the reference recipe) ---


def _generator(key: str) -> torch.Generator:
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)
    return torch.Generator().manual_seed(seed)


def fill_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each float tensor drawn from a generator seeded by its key: BN running stats near
    (0, 1), 1-d weights near 1 and biases near 0, other weights N(0, 1/fan_in)."""
    filled = {}
    for key, value in sd.items():
        if not value.is_floating_point():
            filled[key] = value.clone()
            continue
        g, shape, f64 = _generator(key), value.shape, torch.float64
        if key.endswith("running_var"):
            t = 0.75 + 0.5 * torch.rand(shape, generator=g, dtype=f64)
        elif key.endswith("running_mean"):
            t = 0.1 * torch.randn(shape, generator=g, dtype=f64)
        elif value.dim() == 1:
            base = 1.0 if key.endswith("weight") else 0.0
            t = base + 0.1 * torch.randn(shape, generator=g, dtype=f64)
        else:
            fan_in = value[0].numel()
            t = torch.randn(shape, generator=g, dtype=f64) / fan_in**0.5
        filled[key] = t.to(value.dtype)
    return filled


def fixed_input(n: int, size: int, seed: int = 1234) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _meta_model(zoo: str, name: str) -> nn.Module:
    with torch.device("meta"):
        return models.create(name, num_classes=NUM_CLASSES[zoo], dataset=zoo)


# --- registry ---


def test_available_lists_exactly_the_zoos() -> None:
    assert models.available("cifar100") == sorted(CIFAR_NAMES)
    assert models.available("synthetic") == sorted(CIFAR_NAMES)
    assert models.available("imagenet") == sorted(IMAGENET_NAMES)
    assert set(models.available()) == set(CIFAR_NAMES) | set(IMAGENET_NAMES)


def test_every_reference_architecture_is_registered() -> None:
    for zoo, name in _entries():
        assert name in models.available(zoo), (zoo, name)


def test_unknown_name_is_a_user_error_listing_valid_names() -> None:
    with pytest.raises(UserError) as err:
        models.create("resnet9000")
    assert "resnet9000" in str(err.value)
    for name in ("resnet8x4", "wrn_40_2", "ShuffleV2"):
        assert name in str(err.value)
    with pytest.raises(UserError, match="ResNet34"):
        models.create("resnet8", dataset="imagenet")


def test_create_picks_zoo_and_num_classes() -> None:
    small = models.create("resnet8", num_classes=10, dataset="synthetic").eval()
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    cifar18 = _meta_model("cifar100", "ResNet18")
    imagenet18 = _meta_model("imagenet", "ResNet18")
    assert cifar18.state_dict()["conv1.weight"].shape == (64, 3, 3, 3)
    assert imagenet18.state_dict()["conv1.weight"].shape == (64, 3, 7, 7)


# --- checkpoint layout and forward equivalence ---


@pytest.mark.parametrize(("zoo", "name"), _entries())
def test_state_dict_layout_matches_published_checkpoints(zoo: str, name: str) -> None:
    ref = reference()[zoo][name]
    model = _meta_model(zoo, name)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(ref["state_dict"])
    assert shapes == ref["state_dict"]
    assert count_params(model) == ref["num_params"]


def test_resnet152_matches_torchvision_layout() -> None:
    with torch.device("meta"):
        ours, theirs = _meta_model("imagenet", "ResNet152"), resnet152()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert count_params(ours) == 60_192_808


@pytest.mark.parametrize(("zoo", "name"), _entries(with_logits=True))
def test_forward_matches_reference_logits(zoo: str, name: str) -> None:
    expected = torch.tensor(reference()[zoo][name]["logits"], dtype=torch.float64)
    model = models.create(name, num_classes=NUM_CLASSES[zoo], dataset=zoo).double().eval()
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True)
    x = fixed_input(4, 32) if zoo == "cifar100" else fixed_input(2, 224)
    with torch.no_grad():
        logits = model(x.double())
    assert logits.shape == expected.shape
    rel = ((logits - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-6, f"{zoo}/{name}: relative error {rel:.2e}"


def test_fill_is_sensitive_to_the_forward_pass() -> None:
    """Guard against a vacuous equivalence test: a changed activation order must fail."""
    expected = torch.tensor(reference()["cifar100"]["resnet8"]["logits"], dtype=torch.float64)
    model = models.create("resnet8").double().eval()
    model.load_state_dict(fill_state_dict(model.state_dict()))
    with torch.no_grad():
        same = model(fixed_input(4, 32).double())
        model.relu = nn.Identity()  # drop the stem ReLU
        changed = model(fixed_input(4, 32).double())
    assert torch.allclose(same, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(changed, expected, rtol=1e-3, atol=1e-3)


# --- features ---


def _feature_input(zoo: str, name: str) -> torch.Tensor:
    if zoo == "cifar100":
        return torch.randn(2, 3, 32, 32)
    size = 224 if name == "MobileNetV1" else 64  # MobileNetV1 ends in a fixed 7x7 pool
    return torch.randn(1, 3, size, size)


FEATURE_CASES = [("cifar100", n) for n in CIFAR_NAMES] + [
    ("imagenet", n) for n in ("ResNet18", "ResNet50", "MobileNetV1")
]


@pytest.mark.parametrize(("zoo", "name"), FEATURE_CASES)
def test_forward_features(zoo: str, name: str) -> None:
    torch.manual_seed(0)
    model = models.create(name, num_classes=NUM_CLASSES[zoo], dataset=zoo)
    x = _feature_input(zoo, name)

    # training mode: forward_features must update BN statistics exactly as forward does
    twin = copy.deepcopy(model)
    model.train()(x)
    feats_train = twin.train().forward_features(x)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: {k} differs after forward_features in train mode"
    assert feats_train["logits"].shape == (x.shape[0], NUM_CLASSES[zoo])

    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert torch.allclose(feats["logits"], logits, rtol=1e-5, atol=1e-5)
    stages, pooled = feats["stages"], feats["pooled"]
    assert len(stages) >= 3 and all(s.dim() == 4 and s.shape[0] == x.shape[0] for s in stages)
    sizes = [s.shape[-1] for s in stages]
    assert sizes == sorted(sizes, reverse=True)
    assert pooled.shape[0] == x.shape[0] and pooled.dim() == 2
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.allclose(classifier(pooled), logits, rtol=1e-5, atol=1e-5)
    if "preact_stages" in feats:
        assert [p.shape for p in feats["preact_stages"]] == [s.shape for s in stages]


# --- profile ---


def test_count_params_and_macs_small_cases() -> None:
    assert count_params(nn.Linear(10, 3)) == 33
    # resnet8 by hand: stem 442,368; layer1 4,718,592; layer2 3,670,016; layer3 3,670,016;
    # fc 6,400
    assert count_macs(models.create("resnet8"), 32) == 12_507_392


@pytest.mark.parametrize(
    ("zoo", "name", "published"),
    [
        ("cifar100", "resnet32x4", 1.08e9),
        ("cifar100", "resnet8x4", 0.177e9),
        ("imagenet", "ResNet18", 1.82e9),
        ("imagenet", "ResNet50", 4.09e9),
    ],
)
def test_count_macs_matches_published(zoo: str, name: str, published: float) -> None:
    macs = count_macs(_meta_model(zoo, name), 32 if zoo == "cifar100" else 224)
    assert abs(macs - published) / published < 0.01


def test_zoo_table() -> None:
    rows = zoo_table()
    assert {(r["dataset"], r["name"]) for r in rows} == {
        ("cifar100", n) for n in CIFAR_NAMES
    } | {("imagenet", n) for n in IMAGENET_NAMES}
    by_key = {(r["dataset"], r["name"]): r for r in rows}
    for zoo, name in _entries():
        assert by_key[(zoo, name)]["params"] == reference()[zoo][name]["num_params"]
    assert all(r["macs"] > 0 for r in rows)
    assert {r["dataset"] for r in zoo_table("cifar100")} == {"cifar100"}
    assert {r["dataset"] for r in zoo_table("imagenet")} == {"imagenet"}
