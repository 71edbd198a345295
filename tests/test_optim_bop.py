"""Bop's flip rule by hand and in numpy, CaseOptimizer as one torch optimizer, a tiny task."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bamsprod.core.nn import BinaryLinear, binary_weights
from bamsprod.core.optim import Bop, CaseOptimizer, build


def test_construction_binarizes_with_sign_zero_plus_one() -> None:
    w = torch.tensor([0.3, -0.2, 0.0, -0.0, 5.0, -1e-9], requires_grad=True)
    Bop([w])
    assert w.tolist() == [1.0, -1.0, 1.0, 1.0, 1.0, -1.0]


def test_flip_rule_by_hand() -> None:
    # gamma = 0.5, tau = 0.1, m0 = 0, so m = 0.5 g:
    #   w   = [ 1,    1,   -1,   -1,    1,    -1,   1   ]
    #   g   = [ 0.4, -0.4,  0.4, -0.4,  0.1,   0,   0.2 ]
    #   m   = [ 0.2, -0.2,  0.2, -0.2,  0.05,  0,   0.1 ]
    #   |m| >= tau and sign(m) = sign(w):
    #       [ yes,  no,    no,   yes,  no,    no,  yes (|m| = tau) ]
    w = torch.tensor([1.0, 1, -1, -1, 1, -1, 1], dtype=torch.float64, requires_grad=True)
    opt = Bop([w], gamma=0.5, threshold=0.1)
    w.grad = torch.tensor([0.4, -0.4, 0.4, -0.4, 0.1, 0.0, 0.2], dtype=torch.float64)
    opt.step()
    assert w.tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0]
    assert opt.state[w]["exp_avg"].tolist() == pytest.approx([0.2, -0.2, 0.2, -0.2, 0.05, 0, 0.1])
    # second step, g = 0: m halves to [0.1, -0.1, 0.1, -0.1, 0.025, 0, 0.05]; the new signs
    # [-1, 1, -1, 1, 1, -1, -1] disagree with m where |m| >= tau, so nothing flips back.
    w.grad = torch.zeros(7, dtype=torch.float64)
    opt.step()
    assert w.tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0]


def test_sign_of_zero_average_is_plus_one() -> None:
    # tau = 0 and m = 0: |m| >= tau holds and sign(0) = +1, so only w = +1 flips.
    w = torch.tensor([1.0, -1.0], requires_grad=True)
    opt = Bop([w], gamma=0.1, threshold=0.0)
    w.grad = torch.zeros(2)
    opt.step()
    assert w.tolist() == [-1.0, -1.0]


def np_bop(w: np.ndarray, grads: list[np.ndarray], gamma: float, tau: float) -> np.ndarray:
    w = np.where(w >= 0, 1.0, -1.0)
    m = np.zeros_like(w)
    for g in grads:
        m = (1 - gamma) * m + gamma * g
        sign_m = np.where(m >= 0, 1.0, -1.0)
        flip = (np.abs(m) >= tau) & (sign_m == w)
        w = np.where(flip, -w, w)
    return w


def test_matches_numpy_over_many_steps() -> None:
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 7))
    grads = [rng.normal(size=(6, 7)) + 0.3 for _ in range(40)]
    expected = np_bop(w0, grads, gamma=0.2, tau=0.15)
    w = torch.tensor(w0, requires_grad=True)
    opt = Bop([w], gamma=0.2, threshold=0.15)
    flips = 0
    for g in grads:
        before = w.detach().clone()
        w.grad = torch.tensor(g)
        opt.step()
        flips += int((w.detach() != before).sum())
    np.testing.assert_array_equal(w.detach().numpy(), expected)
    assert flips > 0


def _case(lr: float = 0.01) -> tuple[nn.Module, CaseOptimizer, Bop, torch.optim.Adam]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), BinaryLinear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    binary = list(binary_weights(model).values())
    others = [p for p in model.parameters() if all(p is not b for b in binary)]
    bop = Bop(binary, gamma=1e-2, threshold=1e-6, lr=lr)
    adam = torch.optim.Adam(others, lr=lr)
    return model, CaseOptimizer(bop, adam), bop, adam


def _loss(model: nn.Module, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def test_case_optimizer_shares_group_dicts_and_schedulers_drive_both() -> None:
    model, opt, bop, adam = _case()
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0] is bop.param_groups[0]
    assert opt.param_groups[1] is adam.param_groups[0]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w = bop.param_groups[0]["params"][0]
    for _ in range(2):
        opt.zero_grad()
        _loss(model).backward()
        m_before = bop.state[w]["exp_avg"].clone() if w in bop.state else torch.zeros_like(w)
        grad = w.grad.clone()
        opt.step()
        # Bop's rate is gamma * lr / base_lr: the scheduler moves it
        gamma = 1e-2 * opt.param_groups[0]["lr"] / 0.01
        torch.testing.assert_close(bop.state[w]["exp_avg"], (1 - gamma) * m_before + gamma * grad)
        sched.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert bop.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_case_optimizer_state_dict_round_trip() -> None:
    model, opt, _, _ = _case()
    for i in range(3):
        opt.zero_grad()
        _loss(model, i).backward()
        opt.step()
    saved_model = copy.deepcopy(model.state_dict())
    saved = copy.deepcopy(opt.state_dict())
    assert sorted(saved["state"]) == list(range(len(saved["state"])))
    assert [g["params"] for g in saved["param_groups"]] == [[0], [1, 2, 3, 4, 5, 6]]

    def more(m: nn.Module, o: torch.optim.Optimizer) -> list[torch.Tensor]:
        for i in range(3, 6):
            o.zero_grad()
            _loss(m, i).backward()
            o.step()
        return [p.detach().clone() for p in m.parameters()]

    expected = more(model, opt)
    model2, opt2, bop2, adam2 = _case(lr=0.5)
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0] is bop2.param_groups[0]  # still linked after loading
    assert opt2.param_groups[1]["lr"] == 0.01
    for a, b in zip(more(model2, opt2), expected, strict=True):
        assert torch.equal(a, b)


def test_case_optimizer_closure_zero_grad_and_guards() -> None:
    model, opt, bop, adam = _case()
    calls = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(model)
        loss.backward()
        calls.append(1)
        return loss

    loss = opt.step(closure)
    assert calls == [1] and loss.ndim == 0
    assert set(opt.state) == set(bop.state) | set(adam.state)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match="add it to one of .optimizers"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="more than one optimizer"):
        CaseOptimizer(torch.optim.SGD([p], lr=0.1), torch.optim.Adam([p]))


def test_skips_no_grad_and_refuses_sparse() -> None:
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = Bop([a, b])
    b0 = b.detach().clone()
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), b0) and b not in opt.state
    emb = nn.Embedding(5, 2, sparse=True)
    opt = Bop(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="Bop does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 1.5}, "Invalid gamma value: 1.5"),
        ({"gamma": -0.1}, "Invalid gamma value: -0.1"),
        ({"threshold": -1e-8}, "Invalid threshold value: -1e-08"),
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bop([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bop_trains_digits_and_kernels_stay_binary() -> None:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    model = nn.Sequential(
        nn.Linear(64, 128), nn.BatchNorm1d(128),
        BinaryLinear(128, 128), nn.BatchNorm1d(128),
        BinaryLinear(128, 128), nn.BatchNorm1d(128),
        nn.Linear(128, 10),
    )  # fmt: skip
    opt = build("bop", model, gamma=1e-3)
    kernels = binary_weights(model)
    start = {n: w.detach().clone() for n, w in kernels.items()}
    for _ in range(5):
        model.train()
        for i in range(0, 1400, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x[1400:]).argmax(1) == y[1400:]).float().mean())
    assert acc >= 0.9, acc
    for name, w in kernels.items():
        assert set(w.unique().tolist()) <= {-1.0, 1.0}, name
        assert (w != start[name]).any(), f"{name}: no weight flipped"
