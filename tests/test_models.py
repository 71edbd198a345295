"""Models by name: every model on every data set's shape, real first/last layers, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bamsprod.core.config import DATASETS, MODELS
from bamsprod.core.nn import (
    BinaryConv2d,
    BinaryLinear,
    binary_weights,
    build_model,
    is_binary,
    model_names,
)

SHAPES = sorted({tuple(meta["shape"]) for meta in DATASETS.values()})
SMALL = {
    "mlp": {"width": 32, "depth": 2},
    "binarynet": {"width_mult": 0.0625},
    "resnet18": {"width_mult": 0.0625},
}


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def test_names_are_the_spec_registry() -> None:
    assert model_names() == list(MODELS)
    assert set(SMALL) == set(MODELS)
    assert set(SHAPES) >= {(1, 28, 28), (1, 8, 8), (3, 32, 32)}


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known: mlp, binarynet, resnet18"):
        build_model("vgg", (1, 8, 8), 10)


@pytest.mark.parametrize("bad", [{"widht": 3}, {"width": 3}, {"depth": 0}])
def test_bad_model_args_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_model("mlp", (1, 8, 8), 10, **bad)


@pytest.mark.parametrize("shape,classes", [((1, 8), 10), ((1, 0, 8), 10), ((1, 8, 8), 1)])
def test_bad_shape_or_classes(shape: tuple, classes: int) -> None:
    with pytest.raises(ValueError):
        build_model("mlp", shape, classes)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(MODELS))
def test_builds_forward_backward(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 7, **SMALL[name])
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # At least one binary layer, and its latent weight got a nonzero STE gradient.
    bw = binary_weights(model)
    assert bw
    assert any(w.grad.abs().sum() > 0 for w in bw.values())
    # First and last layers real.
    layers = weighted_layers(model)
    assert not is_binary(layers[0]) and not is_binary(layers[-1])
    assert isinstance(layers[-1], nn.Linear) and layers[-1].out_features == 7
    assert any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules())
    model.eval()
    assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", list(MODELS))
def test_deterministic_given_seed(name: str) -> None:
    def build() -> nn.Module:
        torch.manual_seed(123)
        return build_model(name, (1, 8, 8), 10, **SMALL[name])

    a, b = build(), build()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_options_reach_every_binary_layer(name: str) -> None:
    model = build_model(name, (1, 8, 8), 10, scale=False, binary_act=False, **SMALL[name])
    binary = [m for m in model.modules() if is_binary(m)]
    assert binary and all(isinstance(m, BinaryLinear | BinaryConv2d) for m in binary)
    assert all(m.scale is False and m.binary_act is False for m in binary)
    default = build_model(name, (1, 8, 8), 10, **SMALL[name])
    assert all(m.scale and m.binary_act for m in default.modules() if is_binary(m))


def test_mlp_depth_is_binary_layer_count() -> None:
    for depth in (1, 3):
        model = build_model("mlp", (1, 28, 28), 10, width=16, depth=depth)
        assert len(binary_weights(model)) == depth
        layers = weighted_layers(model)
        assert layers[0].in_features == 784 and layers[0].out_features == 16


def test_latent_weights_start_inside_ste_window() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10, width_mult=0.125)
    assert all(w.abs().max() <= 1 for w in binary_weights(model).values())


def test_resnet18_parameter_count() -> None:
    model = build_model("resnet18", (3, 32, 32), 10, width_mult=1.0)
    n = sum(p.numel() for p in model.parameters())
    assert 10.5e6 < n < 11.8e6  # ResNet-18 for CIFAR-10: about 11.2M
    assert len(binary_weights(model)) == 16  # every 3x3 conv outside the stem


def test_binarynet_layout_at_full_width() -> None:
    model = build_model("binarynet", (3, 32, 32), 10, width_mult=1.0)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [128, 128, 256, 256, 512, 512]
    assert fcs == [1024, 1024, 10]
    assert next(m for m in model.modules() if isinstance(m, BinaryLinear)).in_features == 8192


def test_mlp_learns_digits() -> None:
    from bamsprod.core.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model("mlp", data.shape, data.classes, width=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        model.train()
        perm = torch.randperm(data.n_train)
        for i in range(0, data.n_train, 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert acc > 0.8
