"""The optimizer registry: the spec's names and hyperparameters, groups, latent clip, round trip."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from bamsprod.core.config import DEFAULT_LR, OPTIMIZERS, HParam
from bamsprod.core.nn import BinaryLinear, binary_weights
from bamsprod.core.optim import (
    OPTIMIZER_NAMES,
    AdaBound,
    BAMSProd,
    Bop,
    CaseOptimizer,
    build,
    clip_latent_weights,
)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 12, bias=False), nn.BatchNorm1d(12),  # a bias before BN gets no gradient
        BinaryLinear(12, 12), nn.BatchNorm1d(12),
        nn.Linear(12, 3),
    )  # fmt: skip


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, seeds: range) -> list[torch.Tensor]:
    for s in seeds:
        x, y = batch(s)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def lookup(group: dict[str, Any], key: str) -> Any:
    if key == "beta1":
        return group["betas"][0]
    if key == "beta2":
        return group["betas"][1]
    return group[key]


def other_value(h: HParam) -> Any:
    """A valid value different from the default."""
    if isinstance(h.default, bool):
        return not h.default
    lo = h.lo if h.lo is not None else 0.0
    value = h.default / 2 if h.default / 2 >= lo and h.default != 0 else lo + (h.hi - lo) / 4
    assert value != h.default and h.check("x", value) == value
    return value


def test_registry_names_are_the_spec_names() -> None:
    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert len(OPTIMIZER_NAMES) == len(set(OPTIMIZER_NAMES))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_spec_hparam_is_accepted_and_lands(name: str) -> None:
    for key, h in OPTIMIZERS[name].items():
        value = other_value(h)
        opt = build(name, make_model(), **{key: value})
        groups = opt.param_groups
        if name == "bop":  # gamma/threshold go to Bop, beta1/beta2/eps to Adam (the real params)
            adam, bop = opt.optimizers
            groups = bop.param_groups if key in ("gamma", "threshold") else adam.param_groups
        found = [lookup(g, key) for g in groups]
        assert found and all(v == value for v in found), (name, key, value, found)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_defaults_come_from_the_spec(name: str) -> None:
    opt = build(name, make_model())
    assert all(g["lr"] == DEFAULT_LR[name] for g in opt.param_groups)
    groups = opt.optimizers[0].param_groups if name == "bop" else opt.param_groups
    for key, h in OPTIMIZERS[name].items():
        if name == "bop" and key in ("gamma", "threshold"):
            assert opt.optimizers[1].param_groups[0][key] == h.default
        else:
            assert all(lookup(g, key) == h.default for g in groups), key
    opt = build(name, make_model(), lr=0.123)
    assert all(g["lr"] == 0.123 for g in opt.param_groups)


def test_classes_and_flags() -> None:
    model = make_model()
    assert type(build("bamsprod", model)) is BAMSProd
    assert type(build("adam", model)) is torch.optim.Adam
    assert build("adam", model).param_groups[0]["amsgrad"] is False
    assert build("amsgrad", model).param_groups[0]["amsgrad"] is True
    assert type(build("sgd", model)) is torch.optim.SGD
    assert build("adabound", model).param_groups[0]["amsbound"] is False
    assert build("amsbound", model).param_groups[0]["amsbound"] is True
    assert type(build("amsbound", model)) is AdaBound
    bop = build("bop", model)
    assert isinstance(bop, CaseOptimizer)
    assert [type(o) for o in bop.optimizers] == [torch.optim.Adam, Bop]


def test_unknown_names_and_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; known: bamsprod, bop"):
        build("rmsprop", make_model())
    with pytest.raises(ValueError, match="unknown hparam 'betas'"):
        build("adam", make_model(), betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="beta1 must be <="):
        build("bamsprod", make_model(), beta1=1.5)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        build("sgd", make_model(), lr=-1.0)


def test_binary_latent_weights_get_their_own_group() -> None:
    model = make_model()
    opt = build("bamsprod", model)
    real, binary = opt.param_groups
    latent = list(binary_weights(model).values())
    assert binary["name"] == "binary" and binary["params"] == latent
    assert binary["binary"] is True and binary["latent_clip"] == 1.0
    assert real["name"] == "real" and real["binary"] is False and real["latent_clip"] is None
    n_params = len(list(model.parameters()))
    assert len(real["params"]) + len(binary["params"]) == n_params


def test_models_without_binary_layers_get_one_group() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for name in OPTIMIZER_NAMES:
        opt = build(name, model)
        assert [g["name"] for g in opt.param_groups] == ["real"]
        opt.zero_grad()
        model(torch.randn(2, 3)).sum().backward()
        opt.step()


@pytest.mark.parametrize("name", [n for n in sorted(OPTIMIZERS) if n != "bop"])
def test_latent_weights_are_clipped_after_each_step(name: str) -> None:
    model = make_model()
    latent = binary_weights(model)["2.weight"]
    with torch.no_grad():
        latent.uniform_(-0.999, 0.999)
    opt = build(name, model, lr=5.0)  # a huge step pushes many latent weights out of [-1, 1]
    x, y = batch(0)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        latent.grad = torch.sign(latent.detach()).neg_() + 0.0  # push every weight outwards
    opt.step()
    assert latent.abs().max() <= 1.0
    assert (latent.abs() == 1.0).any()


def test_bop_keeps_kernels_binary_and_clip_helper() -> None:
    model = make_model()
    opt = build("bop", model)
    train(model, opt, range(3))
    for w in binary_weights(model).values():
        assert set(w.unique().tolist()) <= {-1.0, 1.0}
    model = make_model()
    latent = binary_weights(model)["2.weight"]
    with torch.no_grad():
        latent.mul_(100)
    clip_latent_weights(model)
    assert latent.abs().max() == 1.0
    clip_latent_weights(model, 0.25)
    assert latent.abs().max() == 0.25


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_and_round_trips(name: str) -> None:
    model = make_model()
    opt = build(name, model)
    start = [p.detach().clone() for p in model.parameters()]
    train(model, opt, range(3))
    assert all(not torch.equal(a, p) for a, p in zip(start, model.parameters(), strict=True))
    saved_model = copy.deepcopy(model.state_dict())
    saved = copy.deepcopy(opt.state_dict())
    expected = train(model, opt, range(3, 6))
    model2 = make_model(seed=1)
    opt2 = build(name, model2, lr=0.77)  # built on other weights and lr, then loaded
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved)
    for a, b in zip(train(model2, opt2, range(3, 6)), expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_schedulers_drive_every_optimizer(name: str) -> None:
    model = make_model()
    opt = build(name, model, lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    train(model, opt, range(1))
    sched.step()
    assert all(g["lr"] == pytest.approx(1e-3) for g in opt.param_groups)
