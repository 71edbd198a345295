"""``differentiable=True``, held to torch's gradchecks, with torch's Adam as the control.

After pytorch/pytorch ``test/optim/test_optim.py`` (``TestDifferentiableOptimizer``): one step
is a function of the parameter, its gradient and the state tensors, and ``gradcheck`` compares
autograd's Jacobian of it with finite differences (float64); and two steps are a function of
tensor hyperparameters (``lr``, ``weight_decay``, ``betas``) that require grad, a meta-loss
backpropagated through both. A step that cuts a dependence (a detached term) fails the first;
one that cannot take a tensor hyperparameter fails the second.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.autograd import gradcheck
from torch.optim import Optimizer

from bamsprod.core.optim import AdaBound, BAMSProd, Bop


def _diff_fn(
    p: Tensor, grad: Tensor, state: dict[str, Any], make: Any, kwargs: dict[str, Any], *_: Any
) -> tuple[Tensor, ...]:
    """One step from ``(p, grad, state)``; ``*_`` are the state's tensors again, so that
    ``gradcheck`` sees them as inputs."""
    p = p.clone()
    p.grad = grad
    opt = make([p], **kwargs)
    opt.state[p].update({k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()})
    opt.step()
    return (p, *(v for v in opt.state[p].values() if isinstance(v, Tensor) and v.requires_grad))


def _state(*names: str) -> dict[str, Tensor]:
    # ``step`` is a count, not a continuous variable: it never requires grad
    state = {"step": torch.tensor(10.0, dtype=torch.float64)}
    for name in names:
        state[name] = torch.rand(10, dtype=torch.float64, requires_grad=True)
    return state


def _binary(params: Any, **kwargs: Any) -> BAMSProd:
    return BAMSProd([{"params": params, "binary": True, "latent_clip": 1.0}], **kwargs)


ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

ONE_STEP: dict[str, tuple[Any, dict[str, Any], tuple[str, ...]]] = {
    "adam (control)": (torch.optim.Adam, {"lr": 0.9, "amsgrad": True}, ADAM_STATE),
    "adam weight decay, maximize (control)": (
        torch.optim.Adam, {"lr": 0.9, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
        ADAM_STATE,
    ),
    "bamsprod": (BAMSProd, {"lr": 0.9, "gamma": 0.5}, ADAM_STATE),
    "bamsprod weight decay, maximize": (
        BAMSProd, {"lr": 0.9, "gamma": 0.5, "weight_decay": 0.1, "maximize": True}, ADAM_STATE,
    ),
    # gamma large enough that the projection bites, so e(p) reaches the update
    "bamsprod binary": (_binary, {"lr": 0.1, "gamma": 1.0, "kappa": 2.0}, ADAM_STATE),
    "bamsprod binary weight decay": (
        _binary, {"lr": 0.1, "gamma": 1.0, "weight_decay": 0.1, "maximize": True}, ADAM_STATE,
    ),
    "adabound": (AdaBound, {"lr": 0.9, "gamma": 0.1, "weight_decay": 0.1}, ADAM_STATE[:2]),
    "amsbound": (
        AdaBound, {"lr": 0.9, "gamma": 0.1, "amsbound": True, "maximize": True}, ADAM_STATE,
    ),
    "bop": (Bop, {"gamma": 0.5, "threshold": 0.3}, ("exp_avg",)),
    "bop maximize": (Bop, {"gamma": 0.5, "threshold": 0.3, "maximize": True}, ("exp_avg",)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ONE_STEP))
def test_one_step_gradcheck(name: str) -> None:
    torch.manual_seed(0)
    make, kwargs, names = ONE_STEP[name]
    p = torch.rand(10, dtype=torch.float64, requires_grad=True)
    grad = torch.rand(10, dtype=torch.float64, requires_grad=True)
    state = _state(*names)
    kwargs = {**kwargs, "differentiable": True}
    assert gradcheck(_diff_fn, (p, grad, state, make, kwargs, *state.values()))


def _two_steps_fn(
    p: Tensor, grad: Tensor, state: dict[str, Any], make: Any, kwargs: dict[str, Any], *_: Any
) -> tuple[Tensor, ...]:
    """Two steps on ``mse(x * sum(p), y)``, then the meta-loss's gradient with respect to the
    tensor hyperparameters in ``kwargs`` (``beta1``/``beta2`` become ``betas``)."""
    p = p.clone()
    p.grad = grad
    state = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
    kwargs = {k: v.clone() if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    if "beta1" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
    hyper = [v for v in kwargs.values() if isinstance(v, Tensor) and v.requires_grad]
    hyper += list(kwargs.get("betas", ()))
    optimizer: Optimizer = make([p], **kwargs)
    optimizer.state[p].update(state)
    x = torch.tensor([1.0], dtype=torch.float64)
    y = torch.tensor([2.0], dtype=torch.float64)
    for _ in range(2):
        loss = nn.functional.mse_loss(x * p.sum(), y)
        loss.backward(inputs=(p,), create_graph=True)
        optimizer.step()
        optimizer.zero_grad()
    loss.backward(inputs=tuple(hyper), create_graph=True)
    assert all(h.grad is not None for h in hyper)  # every hyperparameter reached the loss
    tensors = (v for v in optimizer.state[p].values() if isinstance(v, Tensor) and v.requires_grad)
    return (loss, *tensors, *hyper)


def _hyper(**values: float) -> dict[str, Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}


HYPER = {
    "lr": {"lr": 0.001},
    "weight_decay": {"weight_decay": 0.999},
    "betas": {"beta1": 0.9, "beta2": 0.999, "lr": 0.001},
    "all": {"lr": 0.001, "weight_decay": 0.999, "beta1": 0.9, "beta2": 0.999},
}
def _adabound(params: Any, **kwargs: Any) -> AdaBound:
    # base_lr as a scheduler sees it: fixed. Left to default, each finite-difference point would
    # build its optimizer with base_lr = its own lr, and the bounds (final_lr lr / base_lr) would
    # not move with lr at all there, while autograd (rightly) holds base_lr fixed.
    return AdaBound([{"params": params, "base_lr": 0.001}], **kwargs)


TWO_STEPS = {
    # torch's own configuration (amsgrad=False): torch's AMSGrad keeps a saved v alive across
    # steps and fails two steps; ours clone what they keep, and pass with it
    "adam (control)": (torch.optim.Adam, {}, ADAM_STATE),
    "bamsprod": (BAMSProd, {"gamma": 0.5}, ADAM_STATE),
    "bamsprod binary": (_binary, {"gamma": 1.0}, ADAM_STATE),
    "adabound": (_adabound, {"gamma": 0.1}, ADAM_STATE[:2]),
    "amsbound": (_adabound, {"gamma": 0.1, "amsbound": True}, ADAM_STATE),
}


@pytest.mark.parametrize("hyper", list(HYPER))
@pytest.mark.parametrize("name", list(TWO_STEPS))
def test_tensor_hyperparameters_gradcheck(name: str, hyper: str) -> None:
    torch.manual_seed(0)
    make, fixed, names = TWO_STEPS[name]
    p = torch.rand(10, dtype=torch.float64, requires_grad=True)
    grad = torch.rand(10, dtype=torch.float64, requires_grad=True)
    state = _state(*names)
    kwargs = {**fixed, **_hyper(**HYPER[hyper]), "differentiable": True}
    tensors = [v for v in kwargs.values() if isinstance(v, Tensor)]
    assert gradcheck(_two_steps_fn, (p, grad, state, make, kwargs, *state.values(), *tensors))


def test_bop_backward_through_a_step() -> None:
    """Bop's flip is piecewise constant in ``m``: one step's Jacobian is ``+-1`` (kept or
    flipped) on the weight and ``1 - gamma``, ``gamma`` on the average and the gradient."""
    w = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    p = w.clone()
    opt = Bop([p], gamma=0.5, threshold=0.1, differentiable=True)
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    p.mul_(scale)  # p now depends on scale (its value is unchanged)
    m = torch.tensor([0.0, 0.0, -0.4, -0.4], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.4, -0.4, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt.state[p].update({"step": torch.tensor(0.0), "exp_avg": m.clone()})
    p.grad = g
    opt.step()
    # m' = 0.5 m + 0.5 g = [0.2, -0.2, -0.2, -0.2]; flips where m' w >= 0.1: [yes, yes, no, yes]
    assert p.tolist() == [-1.0, 1.0, 1.0, 1.0]
    c = torch.arange(1.0, 5.0, dtype=torch.float64)
    ((p * c).sum() + (opt.state[p]["exp_avg"] * c).sum()).backward()
    assert float(scale.grad) == float((c * p).sum())  # d p' / d scale = flip * w = p'
    assert m.grad.tolist() == (0.5 * c).tolist() and g.grad.tolist() == (0.5 * c).tolist()
