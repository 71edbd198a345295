"""torch's generic optimizer tests, ported to ours, with torch's own Adam as the control.

After the ``OptimizerInfo`` suite of pytorch/pytorch (``test/test_optim.py``,
``TestOptimRenewed``; ``torch/testing/_internal/common_optimizers.py``), rewritten for this
project's optimizers: BAMSProd on a real group and on a binary group (``binary=True,
latent_clip=1.0``), AdaBound, AMSBound and Bop. Each :class:`Info` says, as torch's
``OptimizerInfo`` does, how to build the optimizer, its configurations (without the
implementation flags), and which implementations it has (``foreach``, ``fused``,
``differentiable``); :func:`all_inputs` adds each flag in turn, as torch's
``_get_optim_inputs_including_global_cliquey_kwargs`` does. ``torch.optim.Adam`` runs every
test too and passes it: a convention Adam keeps and one of ours breaks is a bug of ours.

Where our optimizers mean something else than torch's by design, the test says so: Bop holds its
weights at ``+-1`` (it binarizes them when added, and a loss need not fall in 20 steps), a
BAMSProd binary group clips its latent weights to ``[-1, 1]``, and AdaBound's bounds converge to
``final_lr`` whatever ``lr`` is. CPU only: tests/test_cuda.py covers the CUDA paths.
"""

from __future__ import annotations

import copy
import functools
import gc
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from optim_helpers import rel_err
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn import Parameter
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode

from bamsprod.core.optim import AdaBound, BAMSProd, Bop

IMPLS = ("foreach", "fused", "differentiable")
NEW_FLAGS = ("maximize", "foreach", "fused", "differentiable", "capturable")


def _binary_groups(params: Any) -> list[dict[str, Any]]:
    """``params`` (tensors, named tensors or group dicts) as BAMSProd binary groups."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [{"binary": True, "latent_clip": 1.0, **g} for g in params]
    return [{"params": params, "binary": True, "latent_clip": 1.0}]


@dataclass(frozen=True)
class Info:
    """One optimizer under test, after torch's ``OptimizerInfo``."""

    name: str
    make: Callable[..., Optimizer]  # make(params, **kwargs)
    configs: tuple[dict[str, Any], ...]  # as torch's optim_inputs_func: no implementation flags
    impls: tuple[str, ...]  # of IMPLS
    # Starting values the optimizer keeps as they are (Bop: +-1; a binary group: inside its clip).
    init: Callable[[Tensor], Tensor] = lambda t: t
    # Whether a loss must fall on a smooth problem (Bop flips signs: it need not in 20 steps).
    continuous: bool = True
    # Group keys under which a step moves nothing (torch's test uses lr=1e-28 alone), and the
    # keys a group that should move then needs (AdaBound's bounds converge to final_lr).
    frozen: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-28})
    thawed: dict[str, Any] = field(default_factory=dict)
    # Group keys an older state dict lacks (with NEW_FLAGS); __setstate__ must back-fill them.
    older_keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


ADAM = Info(
    "adam (control)",
    lambda params, **kw: torch.optim.Adam(params, **kw),
    ({}, {"lr": 0.01}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "maximize": True},
     {"weight_decay": 0.1, "amsgrad": True}),
    IMPLS,
    older_keys=("decoupled_weight_decay",),
)  # fmt: skip
BAMSPROD = Info(
    "bamsprod",
    lambda params, **kw: BAMSProd(params, **kw),
    ({}, {"lr": 0.01, "gamma": 0.5}, {"weight_decay": 0.1},
     {"weight_decay": 0.1, "maximize": True, "gamma": 0.1}, {"gamma": 0.0}),
    IMPLS,
    older_keys=("gamma", "kappa", "binary", "latent_clip"),
)  # fmt: skip
BAMSPROD_BINARY = Info(
    "bamsprod binary",
    lambda params, **kw: BAMSProd(_binary_groups(params), **kw),
    ({}, {"lr": 0.01, "gamma": 0.5, "kappa": 2.0},
     {"weight_decay": 0.1, "maximize": True, "gamma": 0.1}),
    IMPLS,
    init=torch.tanh,
    older_keys=("gamma", "kappa", "binary", "latent_clip"),
)  # fmt: skip
ADABOUND = Info(
    "adabound",
    lambda params, **kw: AdaBound(params, **kw),
    ({}, {"gamma": 0.1}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "maximize": True}),
    ("foreach", "differentiable"),
    frozen={"lr": 1e-28, "final_lr": 1e-28},
    thawed={"final_lr": 0.1},
    older_keys=("amsbound", "base_lr"),
)
AMSBOUND = Info(
    "amsbound",
    lambda params, **kw: AdaBound(params, amsbound=True, **kw),
    ({}, {"gamma": 0.1}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "maximize": True}),
    ("foreach", "differentiable"),
    frozen={"lr": 1e-28, "final_lr": 1e-28},
    thawed={"final_lr": 0.1},
    older_keys=("base_lr",),
)
BOP = Info(
    "bop",
    lambda params, **kw: Bop(params, **kw),
    ({}, {"gamma": 0.05, "threshold": 1e-4}, {"gamma": 0.05, "maximize": True}),
    ("differentiable",),
    init=lambda t: torch.where(t >= 0, 1.0, -1.0).to(t.dtype),
    continuous=False,
    frozen={"gamma": 0.0},
    thawed={"gamma": 1e-4},
    older_keys=("lr", "base_lr"),
)
INFOS = [ADAM, BAMSPROD, BAMSPROD_BINARY, ADABOUND, AMSBOUND, BOP]
CONTINUOUS = [i for i in INFOS if i.continuous]
OURS = [i for i in INFOS if i is not ADAM]


def with_impl(infos: list[Info], impl: str) -> list[Info]:
    return [i for i in infos if impl in i.impls]


def all_inputs(info: Info, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every configuration with every implementation flag ``False``, then each one ``True``."""
    impls = [f for f in info.impls if f not in skip]
    out = []
    for config in info.configs:
        base = {**config, **dict.fromkeys(impls, False)}
        out.append(base)
        out.extend({**base, flag: True} for flag in impls)
    return out


def _param(info: Info, *shape: int, dtype: torch.dtype = torch.float32, **kw: Any) -> Parameter:
    return Parameter(info.init(torch.randn(*shape, dtype=dtype, **kw)))


def _quadratic(weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    return (weight.mv(x) + bias).pow(2).sum()


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal state dicts: same keys, same values, tensors equal exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(map(str, a)), b)
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and a.device == b.device, path
        assert torch.equal(a, b), path
    else:
        assert a == b, (path, a, b)


def _step(optimizer: Optimizer, closure: Callable[[], Tensor]) -> Tensor:
    loss = closure()
    optimizer.step()
    return loss


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------ the update goes downhill


@pytest.mark.parametrize("with_lrsched", [False, True])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("info", CONTINUOUS, ids=str)
def test_forloop_goes_right_direction(info: Info, contiguous: bool, with_lrsched: bool) -> None:
    schedulers_c = [lambda o: StepLR(o, gamma=0.9, step_size=10), ReduceLROnPlateau]
    for config in info.configs:
        kwargs = {**config, "foreach": False} if "foreach" in info.impls else config
        if contiguous:
            weight, bias = _param(info, 10, 5), _param(info, 10)
        else:
            weight = Parameter(info.init(torch.randn(10, 5, 2))[..., 0])
            bias = Parameter(info.init(torch.randn(10, 2))[..., 0])
        x = torch.randn(5)
        optimizer = info.make([weight, bias], **kwargs)
        schedulers = [s(optimizer) for s in schedulers_c] if with_lrsched else []

        def closure(optimizer=optimizer, weight=weight, bias=bias, x=x) -> Tensor:
            optimizer.zero_grad()
            loss = _quadratic(weight, bias, x)
            loss.backward()
            return loss

        initial = float(closure())
        for _ in range(20):
            loss = _step(optimizer, closure)
            for s in schedulers:
                s.step(loss) if isinstance(s, ReduceLROnPlateau) else s.step()
        if config.get("maximize"):
            assert float(closure()) > initial, config
        else:
            assert float(closure()) < initial, config


@pytest.mark.parametrize("info", CONTINUOUS, ids=str)
def test_param_groups_weight_decay(info: Info) -> None:
    for kwargs in all_inputs(info, skip=("differentiable",)):
        weight, bias = _param(info, 10, 5), _param(info, 10)
        x = torch.randn(5)
        optimizer = info.make(
            [{"params": [weight], **kwargs}, {"params": [bias], **kwargs, "weight_decay": 0.0}]
        )
        initial = float(_quadratic(weight, bias, x))
        for _ in range(20):
            optimizer.zero_grad()
            loss = _quadratic(weight, bias, x)
            loss.backward()
            optimizer.step()
        if kwargs.get("maximize"):
            assert float(loss) > initial, kwargs
        else:
            assert float(loss) < initial, kwargs


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_param_groups_lr(info: Info) -> None:
    """A group's own keys win over the defaults: a frozen default group never moves."""
    for kwargs in all_inputs(info, skip=("differentiable",)):
        kwargs = {**info.thawed, **kwargs, "lr": kwargs.get("lr") or 1e-3}
        weight, bias, irrelevant = _param(info, 10, 5), _param(info, 10), _param(info, 2)
        before = irrelevant.detach().clone()
        x = torch.randn(5)
        optimizer = info.make(
            [{"params": [weight, bias], **kwargs}, {"params": [irrelevant]}], **info.frozen
        )
        initial = float(_quadratic(weight, bias, x))
        for _ in range(20):
            optimizer.zero_grad()
            loss = _quadratic(weight, bias, x)
            loss.backward()
            irrelevant.grad = torch.rand_like(irrelevant)
            optimizer.step()
        if info.continuous:
            assert (float(loss) > initial) if kwargs.get("maximize") else (float(loss) < initial)
        assert torch.equal(irrelevant.detach(), before), kwargs


# ------------------------------------------------------------------ tensor lr, tensor step


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_tensor_lr(info: Info) -> None:
    """A 1-element tensor lr steps as its float does, on every path that accepts one."""
    for kwargs in all_inputs(info, skip=("differentiable",)):
        weight, bias = _param(info, 10, 5), _param(info, 10)
        weight_c = Parameter(weight.detach().clone())
        bias_c = Parameter(bias.detach().clone())
        x = torch.randn(5)
        lr = kwargs.get("lr", 1e-3)
        reference = info.make([weight, bias], **{**kwargs, "lr": lr})
        try:
            optimizer = info.make([weight_c, bias_c], **{**kwargs, "lr": torch.tensor(lr)})
        except ValueError as e:  # torch's rule: foreach without capturable takes a float lr
            assert "lr as a Tensor is not supported" in str(e)
            continue
        for _ in range(5):
            for opt, w, b in ((reference, weight, bias), (optimizer, weight_c, bias_c)):
                opt.zero_grad()
                _quadratic(w, b, x).backward()
                opt.step()
            torch.testing.assert_close(weight_c, weight)
            torch.testing.assert_close(bias_c, bias)


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_load_nontensor_step(info: Info) -> None:
    """``step`` is a 0-d tensor; a state dict with Python numbers there still loads and steps."""
    params = [_param(info, 2, 3) for _ in range(2)]
    for p in params:
        p.grad = torch.rand_like(p)
    for kwargs in all_inputs(info, skip=("differentiable",)):
        optimizer = info.make(params, **kwargs)
        for _ in range(3):
            optimizer.step()
        assert all(
            torch.is_tensor(s["step"]) and s["step"].dim() == 0 for s in optimizer.state.values()
        )
        state_dict = copy.deepcopy(optimizer.state_dict())
        for p_state in state_dict["state"].values():
            p_state["step"] = p_state["step"].item()
        optimizer.load_state_dict(state_dict)
        optimizer.step()
        assert all(float(s["step"]) == 4 for s in optimizer.state.values()), kwargs


@pytest.mark.parametrize("info", OURS, ids=str)
def test_capturable_matches(info: Info) -> None:
    """Ours accept ``capturable`` on any device (torch's Adam refuses it on the CPU): the
    step-dependent factors are then computed on the device, from the tensor ``step``, and the
    trajectory is the same."""
    paths = ({"foreach": False}, {"foreach": True}) if "foreach" in info.impls else ({},)
    for config in info.configs:
        for flags in paths:
            weight, bias = _param(info, 10, 5), _param(info, 10)
            weight_c = Parameter(weight.detach().clone())
            bias_c = Parameter(bias.detach().clone())
            x = torch.randn(5)
            plain = info.make([weight, bias], **config, **flags)
            captured = info.make([weight_c, bias_c], **config, **flags, capturable=True)
            for _ in range(4):
                for opt, w, b in ((plain, weight, bias), (captured, weight_c, bias_c)):
                    opt.zero_grad()
                    _quadratic(w, b, x).backward()
                    opt.step()
                assert rel_err(weight_c, weight) <= 1e-6, (config, flags)
                assert rel_err(bias_c, bias) <= 1e-6, (config, flags)


# ------------------------------------------------------------------ every path, the same step


def _compare_between(models: list[nn.Module], optimizers: list[Optimizer], name: str) -> None:
    """torch's ``_compare_between``: 7 steps side by side, a layer frozen for two of them and
    no gradient at all for one; parameters and every state tensor agree after each step."""
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64).reshape(3, 2)
    for i in range(7):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            if i == 3:
                model[2].requires_grad_(False)
            if i == 5:
                model[2].requires_grad_(True)
            if i != 2:
                model(x).sum().backward()
            optimizer.step()
        ref, other = optimizers
        for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert rel_err(q, p) <= 1e-6, (name, i)
            for key, value in ref.state[p].items():
                assert rel_err(other.state[q][key], value) <= 1e-6, (name, i, key)


def _model_and_params(info: Info) -> tuple[nn.Module, list[Tensor]]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1), nn.Sigmoid()).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(info.init(p))
    # a 0-d parameter last, as torch's test has (pytorch/pytorch#100701)
    empty = torch.empty((), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        empty.copy_(info.init(torch.rand(())))
    empty.grad = torch.rand_like(empty)
    return model, [*model.parameters(), empty]


@pytest.mark.parametrize(
    ("info", "impl"),
    [(i, "foreach") for i in with_impl(INFOS, "foreach")]
    + [(i, "fused") for i in with_impl(INFOS, "fused")],
    ids=lambda v: str(v),
)
def test_path_matches_forloop(info: Info, impl: str) -> None:
    """torch's ``test_foreach_matches_forloop`` and ``test_fused_matches_forloop`` (float64)."""
    for config in info.configs:
        models, optimizers = [], []
        for flags in ({"foreach": False}, {impl: True}):
            model, params = _model_and_params(info)
            models.append(model)
            optimizers.append(info.make(params, **config, **flags))
        _compare_between(models, optimizers, f"{info} {impl} {config}")


# ------------------------------------------------------------------ no gradient, no step


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_step_is_noop_when_params_have_no_grad(info: Info) -> None:
    params = [info.init(torch.randn(2, 3)) for _ in range(2)]
    old = [p.clone() for p in params]
    for kwargs in all_inputs(info):
        optimizer = info.make(params, **kwargs)
        assert optimizer.step(lambda: torch.tensor([1.0])).tolist() == [1.0]
        assert all(torch.equal(p, q) for p, q in zip(params, old, strict=True)), kwargs


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_step_is_noop_for_zero_grads(info: Info) -> None:
    param = info.init(torch.randn(5, 1)).requires_grad_()
    old = param.detach().clone()
    for kwargs in all_inputs(info):
        if kwargs.get("weight_decay", 0) != 0:  # decay moves a parameter without a gradient
            continue
        params = [param.clone()] if kwargs.get("differentiable") else [param]
        optimizer = info.make(params, **kwargs)
        params[0].grad = torch.zeros_like(params[0])
        optimizer.step(lambda: torch.tensor([1.0]))
        assert torch.equal(params[0].detach(), old), kwargs


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_non_empty_state(info: Info) -> None:
    model = nn.Linear(5, 5)
    for kwargs in info.configs:
        optimizer = info.make(model.parameters(), **kwargs)
        optimizer.zero_grad()
        model(torch.rand(2, 5)).sum().backward()
        optimizer.step()
        assert optimizer.state and all(len(s) > 0 for s in optimizer.state.values())


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_optimizer_can_be_printed(info: Info) -> None:
    params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
    for kwargs in all_inputs(info):
        text = repr(info.make(params, **kwargs))
        assert "Parameter Group 0" in text and "lr" in text


# ------------------------------------------------------------------ state dicts


def _named(params: list[Tensor], named: bool) -> list[Any]:
    return [(f"name{i}", p) for i, p in enumerate(params)] if named else params


def _without_param_names(state_dict: dict[str, Any]) -> dict[str, Any]:
    state_dict = copy.deepcopy(state_dict)
    for group in state_dict["param_groups"]:
        group.pop("param_names", None)
    return state_dict


@pytest.mark.parametrize("named1", [False, True])
@pytest.mark.parametrize("named0", [False, True])
@pytest.mark.parametrize("info", INFOS, ids=str)
def test_state_dict_deterministic(info: Info, named0: bool, named1: bool) -> None:
    weight, bias = _param(info, 2, 3), _param(info, 2)
    x = torch.randn(3)

    def closure(optimizer: Optimizer, w: Tensor, b: Tensor) -> Tensor:
        optimizer.zero_grad()
        loss = _quadratic(w, b, x)
        loss.backward()
        return loss

    for kwargs in all_inputs(info, skip=("differentiable",)):
        optimizer = info.make(_named([weight, bias], named0), **kwargs)
        for _ in range(10):
            _step(optimizer, functools.partial(closure, optimizer, weight, bias))
        with torch.no_grad():
            weight_c, bias_c = Parameter(weight.clone()), Parameter(bias.clone())
        optimizer_c = info.make(_named([weight_c, bias_c], named1), **kwargs)
        optimizer_c.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        for _ in range(10):
            _step(optimizer, functools.partial(closure, optimizer, weight, bias))
            _step(optimizer_c, functools.partial(closure, optimizer_c, weight_c, bias_c))
            assert torch.equal(weight, weight_c) and torch.equal(bias, bias_c), kwargs
        # equal, not identical, parameters give the same state dict (names are optional)
        _assert_same(
            _without_param_names(optimizer.state_dict()),
            _without_param_names(optimizer_c.state_dict()),
        )
        # repeated parameters are represented identically (pytorch/pytorch#36831)
        optimizer_c.param_groups.extend(optimizer_c.param_groups)
        _assert_same(
            _without_param_names(optimizer.state_dict())["param_groups"][-1],
            _without_param_names(optimizer_c.state_dict())["param_groups"][-1],
        )


def _conv_bn(info: Info) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 2, 1, stride=2), nn.BatchNorm2d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(info.init(p))
    return model


def _fwd_bwd(optimizer: Optimizer, model: nn.Module, x: Tensor) -> None:
    optimizer.zero_grad()
    model(x).sum().backward()


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_can_load_older_state_dict(info: Info) -> None:
    """A state dict from before a flag (or a group key) existed loads and steps."""
    for kwargs in all_inputs(info, skip=("differentiable",)):
        model = _conv_bn(info)
        x = torch.rand(1, 4, 16, 16)
        optimizer = info.make(model.parameters(), **kwargs)
        for _ in range(3):
            _fwd_bwd(optimizer, model, x)
            optimizer.step()
        old = copy.deepcopy(optimizer.state_dict())
        for group in old["param_groups"]:
            for key in (*NEW_FLAGS, *info.older_keys):
                group.pop(key, None)
        optimizer.load_state_dict(old)
        group = optimizer.param_groups[0]
        assert all(key in group for key in (*NEW_FLAGS, *info.older_keys)), kwargs  # back-filled
        _fwd_bwd(optimizer, model, x)
        optimizer.step()


@pytest.mark.parametrize("named1", [False, True])
@pytest.mark.parametrize("named0", [False, True])
@pytest.mark.parametrize("info", INFOS, ids=str)
def test_can_load_from_to_named_state_dict(info: Info, named0: bool, named1: bool) -> None:
    for kwargs in all_inputs(info, skip=("differentiable",)):
        model = _conv_bn(info)
        x = torch.rand(1, 4, 16, 16)
        params0 = model.named_parameters() if named0 else model.parameters()
        optimizer = info.make(params0, **kwargs)
        for _ in range(3):
            _fwd_bwd(optimizer, model, x)
            optimizer.step()
        params1 = model.named_parameters() if named1 else model.parameters()
        optimizer2 = info.make(params1, **kwargs)
        optimizer2.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        _fwd_bwd(optimizer2, model, x)
        optimizer2.step()
        if named0 or named1:
            names = optimizer2.state_dict()["param_groups"][0]["param_names"]
            assert names == ["0.weight", "0.bias", "1.weight", "1.bias"], kwargs


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("info", INFOS, ids=str)
def test_save_load_equality_with_weights_only(info: Info, named: bool) -> None:
    """The state dict is plain data: ``torch.load(weights_only=True)`` gives it back whole."""
    weight, bias = _param(info, 2, 3), _param(info, 2)
    x = torch.randn(3)
    for kwargs in all_inputs(info, skip=("differentiable",)):
        optimizer = info.make(_named([weight, bias], named), **kwargs)
        for _ in range(3):
            optimizer.zero_grad()
            _quadratic(weight, bias, x).backward()
            optimizer.step()
        sd = optimizer.state_dict()
        buffer = io.BytesIO()
        torch.save(sd, buffer)
        buffer.seek(0)
        _assert_same(torch.load(buffer, weights_only=True), sd)


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_deepcopy_copies_all_public_attrs(info: Info) -> None:
    params = [_param(info, 2, 3) for _ in range(2)]
    for p in params:
        p.grad = torch.rand_like(p)
    for kwargs in all_inputs(info, skip=("differentiable",)):
        optimizer = info.make(params, **kwargs)
        for _ in range(3):
            optimizer.step()

        def public(obj: object) -> set[str]:
            return {k for k in obj.__dict__ if not k.startswith("_")}

        twin = copy.deepcopy(optimizer)
        assert public(twin) == public(optimizer), kwargs
        _assert_same(twin.state_dict(), optimizer.state_dict())


# ------------------------------------------------------------------ hooks


def _hook_params() -> list[Tensor]:
    return [torch.tensor([1.0, 1.0])]  # no grad: every step is a no-op, only hooks run


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_state_dict_hooks(info: Info) -> None:
    def pre(optimizer: Optimizer) -> None:
        optimizer.state["test"] = 1

    def post(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict["ran_pre_hook"] = state_dict["state"].pop("test", None) == 1
        return state_dict

    for kwargs in all_inputs(info):
        optimizer = info.make(_hook_params(), **kwargs)
        optimizer.register_state_dict_pre_hook(pre)
        assert optimizer.state_dict()["state"]["test"] == 1
        optimizer = info.make(_hook_params(), **kwargs)
        optimizer.register_state_dict_post_hook(post)
        assert optimizer.state_dict()["ran_pre_hook"] is False
        optimizer.register_state_dict_pre_hook(pre)
        state_dict = optimizer.state_dict()
        assert "test" not in state_dict["state"] and state_dict["ran_pre_hook"] is True


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_load_state_dict_hooks(info: Info) -> None:
    def pre1(optimizer: Optimizer, state_dict: dict[str, Any]) -> None:
        state_dict["param_groups"][0]["lr"] = 0.002

    def pre2(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        mine = copy.deepcopy(state_dict)
        mine["param_groups"][0]["lr"] = 0.003
        return mine

    def post(optimizer: Optimizer) -> None:
        optimizer.state["ran_pre2"] = optimizer.param_groups[0]["lr"] == 0.003
        optimizer.state["ran_post"] = True

    for kwargs in all_inputs(info):
        optimizer = info.make(_hook_params(), **kwargs)
        state_dict = optimizer.state_dict()
        optimizer.register_load_state_dict_pre_hook(pre1)
        optimizer.load_state_dict(state_dict)
        assert optimizer.param_groups[0]["lr"] == 0.002
        optimizer.register_load_state_dict_pre_hook(pre2, prepend=True)
        optimizer.load_state_dict(state_dict)
        assert optimizer.param_groups[0]["lr"] == 0.002  # prepended: pre1 has the last word

        optimizer = info.make(_hook_params(), **kwargs)
        optimizer.register_load_state_dict_post_hook(post)
        optimizer.load_state_dict(optimizer.state_dict())
        assert optimizer.state["ran_pre2"] is False and optimizer.state["ran_post"] is True
        optimizer.register_load_state_dict_pre_hook(pre2)
        optimizer.load_state_dict(optimizer.state_dict())
        assert optimizer.state["ran_pre2"] is True


def _recorder(calls: list[str], label: str) -> Callable[..., None]:
    def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        calls.append(label)

    return hook


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_step_hooks(info: Info) -> None:
    for kwargs in all_inputs(info):
        calls: list[str] = []
        optimizer = info.make(_hook_params(), **kwargs)
        other = SGD(_hook_params())
        handles = [
            register_optimizer_step_pre_hook(_recorder(calls, "global pre")),
            register_optimizer_step_post_hook(_recorder(calls, "global post")),
        ]
        try:
            for opt in (optimizer, other):
                handles.append(opt.register_step_pre_hook(_recorder(calls, "pre")))
                handles.append(opt.register_step_post_hook(_recorder(calls, "post")))
            optimizer.step()
            other.step()
            optimizer.step()
        finally:
            for handle in handles:
                handle.remove()
        assert calls == ["global pre", "pre", "post", "global post"] * 3, kwargs
        optimizer.step()
        other.step()
        assert len(calls) == 12, kwargs


# ------------------------------------------------------------------ what is refused, and how


@pytest.mark.parametrize("info", INFOS, ids=str)
def test_complex_parameters(info: Info) -> None:
    """Adam steps a complex parameter as its ``view_as_real``; ours refuse complex parameters
    when they are added, with a clear error, before any state or parameter changes."""
    for kwargs in all_inputs(info, skip=("differentiable", "fused")):
        complex_params = [
            torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
            torch.randn(10, dtype=torch.complex64, requires_grad=True),
            torch.randn(10, 5, requires_grad=True),
        ]
        if info is not ADAM:
            real = torch.randn(3, requires_grad=True)
            before = real.detach().clone()
            for params in (complex_params, [{"params": [real]}, {"params": complex_params}]):
                with pytest.raises(RuntimeError, match="does not support complex parameters"):
                    info.make(params, **kwargs)
            assert torch.equal(real.detach(), before)  # e.g. not binarized by Bop
            continue
        real_params = [
            (torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
            for p in complex_params
        ]
        complex_opt = info.make(complex_params, **kwargs)
        real_opt = info.make(real_params, **kwargs)
        for _ in range(3):
            for p, q in zip(complex_params, real_params, strict=True):
                q.grad = torch.randn_like(q)
                p.grad = torch.view_as_complex(q.grad) if p.is_complex() else q.grad.clone()
            complex_opt.step()
            real_opt.step()
        for p, q in zip(complex_params, real_params, strict=True):
            torch.testing.assert_close(torch.view_as_real(p) if p.is_complex() else p, q)


@pytest.mark.parametrize("info", with_impl(INFOS, "fused"), ids=str)
def test_fused_error_on_params_on_meta(info: Info) -> None:
    """``fused=True`` checks the parameters at the step, as torch does, so a model built on the
    meta device and materialised with ``to_empty()`` trains (deferred initialisation; with
    ``swap_module_params_on_conversion``, so the parameters stay the optimizer's)."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1), nn.Sigmoid())
    optimizer = info.make(model.parameters(), fused=True)
    with torch.device("meta"):
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match=r"`fused=True` requires"):
        optimizer.step()
    assert all(len(s) == 0 for s in optimizer.state.values())  # refused before any state
    optimizer.zero_grad(set_to_none=True)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # the optimizer's tensors stay
    try:
        model.to_empty(device="cpu")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(info.init(torch.randn_like(p)))
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    optimizer.step()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


ERRORS: dict[str, list[tuple[Callable[[], Any], type[Exception], str]]] = {
    # (what to run, the error, a regex its message matches); torch's own for Adam
    "adam (control)": [
        (lambda: torch.optim.Adam([torch.zeros(2)], lr=-1.0), ValueError, "Invalid learning rate"),
        (lambda: torch.optim.Adam([torch.zeros(2)], lr=torch.tensor([1.0, 1.0])), ValueError,
         "Tensor lr must be 1-element"),
        (lambda: torch.optim.Adam([torch.zeros(2)], lr=torch.tensor(1e-3), foreach=True),
         ValueError, "lr as a Tensor is not supported"),
        (lambda: torch.optim.Adam([torch.zeros(2)], fused=True, foreach=True), RuntimeError,
         "`fused` and `foreach` cannot be `True` together"),
        (lambda: torch.optim.Adam([torch.zeros(2)], fused=True, differentiable=True),
         RuntimeError, "`fused` does not support `differentiable`"),
    ],
    "bamsprod": [
        (lambda: BAMSProd([torch.zeros(2)], lr=-1.0), ValueError, "Invalid learning rate"),
        (lambda: BAMSProd([torch.zeros(2)], lr=torch.tensor([1.0, 1.0])), ValueError,
         "Tensor lr must be 1-element"),
        (lambda: BAMSProd([torch.zeros(2)], lr=torch.tensor(1e-3), foreach=True), ValueError,
         "lr as a Tensor is not supported"),
        (lambda: BAMSProd([torch.zeros(2)], fused=True, foreach=True), RuntimeError,
         "`fused` and `foreach` cannot be `True` together"),
        (lambda: BAMSProd([torch.zeros(2)], fused=True, differentiable=True), RuntimeError,
         "`fused` does not support `differentiable`"),
        (lambda: BAMSProd([torch.zeros(2, dtype=torch.complex64)]), RuntimeError,
         "does not support complex parameters"),
    ],
    "adabound": [
        (lambda: AdaBound([torch.zeros(2)], lr=-1.0), ValueError, "Invalid learning rate"),
        (lambda: AdaBound([torch.zeros(2)], lr=torch.tensor([1.0, 1.0])), ValueError,
         "Tensor lr must be 1-element"),
        (lambda: AdaBound([torch.zeros(2)], fused=True, foreach=True), RuntimeError,
         "`fused` and `foreach` cannot be `True` together"),
        (lambda: AdaBound([torch.zeros(2, dtype=torch.complex64)]), RuntimeError,
         "does not support complex parameters"),
    ],
    "bop": [
        (lambda: Bop([torch.zeros(2)], lr=-1.0), ValueError, "Invalid learning rate"),
        (lambda: Bop([torch.zeros(2)], lr=torch.tensor([1.0, 1.0])), ValueError,
         "Tensor lr must be 1-element"),
        (lambda: Bop([torch.zeros(2, dtype=torch.complex64)]), RuntimeError,
         "does not support complex parameters"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors(name: str) -> None:
    for run, error, message in ERRORS[name]:
        with pytest.raises(error, match=message):
            run()


# ------------------------------------------------------------------ memory of the foreach path


class _PeakMemory(TorchDispatchMode):
    """The peak bytes of tensors allocated while active and still alive (CPU has no
    ``torch.cuda.max_memory_allocated``): after every op, the new storages its outputs hold
    (not an input's: in-place results and views are not allocations) join a list of weak
    references, the dead ones leave it, and the live total is compared with the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: list[tuple[StorageWeakRef, int]] = []
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, Tensor)
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs:
                storage = t.untyped_storage()
                self.live.append((StorageWeakRef(storage), storage.nbytes()))
                inputs.add(storage.data_ptr())
        self.live = [(ref, n) for ref, n in self.live if not ref.expired()]
        self.peak = max(self.peak, sum(n for _, n in self.live))
        return out


def _peak_step_bytes(info: Info, kwargs: dict[str, Any], params: list[Tensor]) -> int:
    optimizer = info.make(params, **kwargs)
    for p in params:
        p.grad = torch.rand_like(p)
    optimizer.step()  # the state is made here, outside the measure
    gc.collect()
    with _PeakMemory() as memory:
        optimizer.step()
    return memory.peak


@pytest.mark.parametrize("info", with_impl(INFOS, "foreach"), ids=str)
def test_peak_memory_foreach(info: Info) -> None:
    """torch's ``test_peak_memory_foreach`` on the CPU: the foreach path may hold at most one
    parameter-sized list of temporaries more than the for-loop holds at its peak."""
    nparams = 10
    param = torch.rand(16, 8)
    intermediate_size = nparams * param.nelement() * param.element_size()
    for config in info.configs:
        peaks = []
        for foreach in (False, True):
            params = [info.init(torch.rand_like(param)) for _ in range(nparams)]
            peaks.append(_peak_step_bytes(info, {**config, "foreach": foreach}, params))
        forloop, multi = peaks
        assert forloop > 0  # the measure sees the for-loop's temporaries
        assert multi <= forloop + intermediate_size, (config, forloop, multi, intermediate_size)
