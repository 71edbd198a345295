"""AdaBound / AMSBound: bounds by hand, steps in numpy, schedulers move the bounds."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bamsprod.core.optim import AdaBound, adabound_bounds


def test_bounds_by_hand() -> None:
    # final_lr = 0.1, gamma = 0.5, t = 2: gamma t = 1 -> [0.1 * (1 - 1/2), 0.1 * (1 + 1)]
    assert adabound_bounds(0.1, 0.5, 2) == pytest.approx((0.05, 0.2))
    # lr halved from base 1e-3: final_lr acts as 0.05
    assert adabound_bounds(0.1, 0.5, 2, lr=5e-4, base_lr=1e-3) == pytest.approx((0.025, 0.1))
    assert adabound_bounds(0.1, 1e-3, 0) == (0.0, math.inf)
    assert adabound_bounds(0.1, 0.0, 10) == (0.0, math.inf)  # gamma = 0: Adam


def test_first_step_by_hand() -> None:
    # t = 1, eps = 0: sqrt(v) = sqrt(1 - beta2) |g| and m = (1 - beta1) g, so the raw step size
    # is lr / ((1 - beta1) |g|) = 1 / |g| with lr = 0.1, beta1 = 0.9. Bounds at gamma t = 0.5:
    # [0.1 (1 - 1/1.5), 0.1 (1 + 2)] = [1/30, 0.3].
    #   g = 1:   raw 1    -> 0.3,  dp = -0.3 * 0.1   = -0.03
    #   g = 10:  raw 0.1  inside,  dp = -0.1 * 1     = -0.1
    #   g = 100: raw 0.01 -> 1/30, dp = -(1/30) * 10 = -1/3
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = AdaBound([p], lr=0.1, betas=(0.9, 0.999), final_lr=0.1, gamma=0.5, eps=0.0)
    p.grad = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([-0.03, -0.1, -1 / 3], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


def np_adabound(p, grads, lrs, *, base_lr, betas, final_lr, gamma, eps, wd, amsbound):
    b1, b2 = betas
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        second = vmax if amsbound else v
        fl = final_lr * lr / base_lr
        lower = fl * (1 - 1 / (gamma * t + 1))
        upper = fl * (1 + 1 / (gamma * t))
        step = np.clip(
            lr * np.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(second) + eps), lower, upper
        )
        p = p - step * m
    return p


@pytest.mark.parametrize("amsbound", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_matches_numpy_with_a_scheduler(amsbound: bool, wd: float) -> None:
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(4, 3))
    # large gradients first, then small ones: v falls while v_max stays (AMSBound differs)
    grads = [rng.normal(size=(4, 3)) * (5.0 if t < 5 else 0.1) for t in range(15)]
    hp = dict(betas=(0.9, 0.99), final_lr=0.05, gamma=0.05, eps=1e-8)
    p = torch.tensor(p0, requires_grad=True)
    opt = AdaBound([p], lr=0.01, weight_decay=wd, amsbound=amsbound, **hp)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.3)
    lrs = []
    for g in grads:
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.tensor(g)
        opt.step()
        sched.step()
    assert lrs[0] == 0.01 and lrs[-1] == pytest.approx(0.01 * 0.09)
    expected = np_adabound(p0, grads, lrs, base_lr=0.01, wd=wd, amsbound=amsbound, **hp)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert ("max_exp_avg_sq" in opt.state[p]) == amsbound


def test_scheduler_halving_lr_halves_the_bounds() -> None:
    # Every coordinate is held at the upper bound (tiny gradients, huge raw step), so the
    # update is upper * m; halving lr must halve upper and hence the update, exactly.
    g = torch.full((5,), 1e-6, dtype=torch.float64)
    a = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt_a = AdaBound([a], lr=1e-3, final_lr=0.1, gamma=1e-3)
    opt_b = AdaBound([b], lr=1e-3, final_lr=0.1, gamma=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=1, gamma=0.5)
    for _ in range(2):
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
        sched.step()
    a0, b0 = a.detach().clone(), b.detach().clone()
    a.grad, b.grad = g.clone(), g.clone()
    opt_a.step()  # lr = 2.5e-4: a quarter
    opt_b.step()
    _, upper = adabound_bounds(0.1, 1e-3, 3)
    m = opt_b.state[b]["exp_avg"]
    torch.testing.assert_close(b0 - b.detach(), upper * m)  # held at the upper bound
    torch.testing.assert_close(a0 - a.detach(), 0.25 * (b0 - b.detach()))


def test_amsbound_gamma_zero_is_torch_amsgrad() -> None:
    # gamma = 0, eps = 0: clamp(lr sqrt(bc2)/bc1 / sqrt(v_max), 0, inf) m is AMSGrad's step.
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    ref = copy.deepcopy(ours)
    x, y = torch.randn(32, 5), torch.randn(32, 2)
    opt = AdaBound(ours.parameters(), lr=1e-2, gamma=0.0, eps=0.0, amsbound=True)
    torch_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, eps=0.0, amsgrad=True)
    for _ in range(50):
        for model, o in ((ours, opt), (ref, torch_opt)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        a, b = a.detach(), b.detach()
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-6


def test_state_dict_round_trip_keeps_base_lr() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    opt = AdaBound(model.parameters(), lr=1e-2, amsbound=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train(m: nn.Module, o: torch.optim.Optimizer, n: int) -> list[torch.Tensor]:
        for _ in range(n):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
        return [p.detach().clone() for p in m.parameters()]

    train(model, opt, 2)
    sched.step()
    sched.step()
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["base_lr"] == 1e-2
    expected = train(model, opt, 3)
    model2 = nn.Linear(4, 3)
    model2.load_state_dict(saved_model)
    opt2 = AdaBound(model2.parameters(), lr=0.3, amsbound=True)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["base_lr"] == 1e-2
    assert opt2.param_groups[0]["lr"] == pytest.approx(5e-3)
    for a, b in zip(train(model2, opt2, 3), expected, strict=True):
        assert torch.equal(a, b)


def test_closure_skip_and_sparse() -> None:
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    b0 = b.detach().clone()
    opt = AdaBound([a, b])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (a**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) > 0 and torch.equal(b.detach(), b0) and b not in opt.state
    emb = nn.Embedding(5, 2, sparse=True)
    opt = AdaBound(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="AdaBound does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
        ({"final_lr": -0.1}, "Invalid final learning rate: -0.1"),
        ({"gamma": -1.0}, "Invalid gamma value: -1.0"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaBound([torch.zeros(2, requires_grad=True)], **kwargs)
