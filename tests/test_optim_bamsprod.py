"""BAMSProd: the spec's step by hand and in numpy, the five spec properties, fast == reference."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from optim_helpers import np_quant_error, rel_err
from torch import nn

import bamsprod.core.optim.bamsprod as bamsprod_module
from bamsprod.core.metrics import quantization_error
from bamsprod.core.nn import BinaryLinear, binary_weights
from bamsprod.core.optim import BAMSProd, bound_schedule, build

# ---------------------------------------------------------------- helpers


def np_bamsprod(p, grads, *, lr, betas, eps, gamma, kappa, wd, binary, clip):
    """The spec's pseudo-code, line by line, in float64 numpy."""
    b1, b2 = betas
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        e = np_quant_error(p) if binary else 0.0
        g = g + wd * p if wd else g
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vh = vmax / (1 - b2**t)
        if gamma > 0:
            zeta = vh.mean() * (1 + kappa * e)
            c_l = zeta * (1 - 1 / (gamma * t + 1))
            c_u = zeta * (1 + 1 / (gamma * t))
            vh = np.clip(vh, c_l, c_u)
        p = p - lr / (1 - b1**t) * m / (np.sqrt(vh) + eps)
        if binary and clip is not None:
            p = np.clip(p, -clip, clip)
    return p


def run_steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


# ---------------------------------------------------------------- hand-computed steps


@pytest.mark.parametrize("foreach", [False, True])
def test_first_step_by_hand(foreach: bool) -> None:
    # t = 1, beta1 = 0.9, beta2 = 0.999: m^ = g, v^ = g^2 = [0.01, 0.09], zeta = 0.05,
    # gamma = 1: c_l = 0.05 * (1 - 1/2) = 0.025, c_u = 0.05 * (1 + 1) = 0.1,
    # projected v^ = [0.025, 0.09]; lr = 0.1, eps = 0:
    # p0 = 1 - 0.1 * 0.1 / sqrt(0.025) = 0.93675444679...; p1 = -2 + 0.1 * 0.3 / 0.3 = -1.9
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = BAMSProd([p], lr=0.1, eps=0.0, gamma=1.0, foreach=foreach)
    p.grad = torch.tensor([0.1, -0.3], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([1 - 0.01 / math.sqrt(0.025), -1.9], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("foreach", [False, True])
def test_binary_step_by_hand(foreach: bool) -> None:
    # One channel w = [0.5, -1.5]: a = 1, residual (0.5-1)^2 + (-1.5+1)^2 = 0.5, ||w||^2 = 2.5,
    # so e = 0.2. g = [0.1, 0.3]: v^ = [0.01, 0.09], zeta = 0.05 * (1 + kappa e) = 0.07 with
    # kappa = 2; gamma = 1: c_l = 0.035, c_u = 0.14, projected v^ = [0.035, 0.09].
    # lr = 0.1: w0 = 0.5 - 0.1 * 0.1 / sqrt(0.035); w1 = -1.5 - 0.1 = -1.6, clipped to -1.
    # (Without the quantization error c_l would be 0.025 and w0 = 0.5 - 0.01 / sqrt(0.025).)
    w = torch.tensor([[0.5, -1.5]], dtype=torch.float64, requires_grad=True)
    opt = BAMSProd(
        [{"params": [w], "binary": True, "latent_clip": 1.0}],
        lr=0.1, eps=0.0, gamma=1.0, kappa=2.0, foreach=foreach,
    )  # fmt: skip
    w.grad = torch.tensor([[0.1, 0.3]], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([[0.5 - 0.01 / math.sqrt(0.035), -1.0]], dtype=torch.float64)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "binary, clip, wd, gamma",
    [
        (False, None, 0.0, 0.05),
        (True, 1.0, 0.0, 0.05),
        (True, 0.5, 0.01, 0.2),
        (False, None, 0.1, 0.0),
    ],
)
def test_matches_numpy_spec(foreach: bool, binary: bool, clip, wd: float, gamma: float) -> None:
    assert_matches_numpy_spec(binary, clip, wd, gamma, foreach=foreach)


def assert_matches_numpy_spec(binary: bool, clip, wd: float, gamma: float, **path) -> None:
    """12 steps of BAMSProd (``path``: foreach=/fused=) against the numpy port of the spec."""
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 5))
    grads = [rng.normal(size=(3, 5)) * rng.uniform(0.01, 3.0, size=(3, 1)) for _ in range(12)]
    hp = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, gamma=gamma, kappa=1.5)
    expected = np_bamsprod(p0, grads, wd=wd, binary=binary, clip=clip, **hp)
    p = torch.tensor(p0, requires_grad=True)
    opt = BAMSProd(
        [{"params": [p], "binary": binary, "latent_clip": clip}],
        weight_decay=wd, **path, **hp,
    )  # fmt: skip
    run_steps(opt, [p], [[torch.tensor(g)] for g in grads])
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- property 1: gamma = 0 is AMSGrad


def _problem(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(64, 6, generator=g)
    y = torch.randn(64, 3, generator=g)
    return model, x, y


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_gamma_zero_is_torch_amsgrad(foreach: bool, weight_decay: float, seed: int) -> None:
    ours, x, y = _problem(seed)
    ref = copy.deepcopy(ours)
    hp = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    opt = BAMSProd(ours.parameters(), gamma=0.0, foreach=foreach, **hp)
    torch_opt = torch.optim.Adam(ref.parameters(), amsgrad=True, **hp)
    for _ in range(100):
        for model, o in ((ours, opt), (ref, torch_opt)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            assert rel_err(a.detach(), b.detach()) <= 1e-6


# ---------------------------------------------------------------- property 2: the bounds


def test_bound_schedule_shape() -> None:
    zeta, gamma = 0.7, 1e-3
    assert bound_schedule(zeta, gamma, 0) == (0.0, math.inf)
    steps = [1, 2, 3, 10, 100, 1_000, 10_000, 10**5, 10**6, 10**8]
    lows, ups = zip(*(bound_schedule(zeta, gamma, t) for t in steps), strict=True)
    assert all(a <= b for a, b in zip(lows, lows[1:], strict=False))  # non-decreasing
    assert all(a >= b for a, b in zip(ups, ups[1:], strict=False))  # non-increasing
    assert all(lo < zeta < up for lo, up in zip(lows, ups, strict=True))
    assert lows[0] == pytest.approx(zeta * (1 - 1 / (gamma + 1)))
    assert ups[0] == pytest.approx(zeta * (1 + 1 / gamma))
    lo, up = bound_schedule(zeta, gamma, 10**12)
    assert lo == pytest.approx(zeta, rel=1e-8) and up == pytest.approx(zeta, rel=1e-8)


def test_bound_schedule_tensor_and_gamma_zero() -> None:
    z = torch.tensor([0.5, 2.0])
    lo, up = bound_schedule(z, 0.5, 2)  # gamma * t = 1
    torch.testing.assert_close(lo, z * 0.5)
    torch.testing.assert_close(up, z * 2.0)
    lo, up = bound_schedule(z, 0.0, 5)
    assert torch.equal(lo, torch.zeros(2)) and torch.isinf(up).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_projection_bites_in_a_real_step(foreach: bool) -> None:
    # Gradients spanning four decades: with gamma * t = 1 at t = 1 the bounds are [zeta/2,
    # 2 zeta], so the smallest coordinates are raised to c_l and the largest lowered to c_u.
    g = torch.tensor([1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
    p = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    lr, eps = 0.1, 0.0
    opt = BAMSProd([p], lr=lr, eps=eps, gamma=1.0, foreach=foreach)
    p.grad = g.clone()
    opt.step()
    zeta = float((g**2).mean())  # v^ = g^2 at t = 1
    # p = -lr * m^ / sqrt(V~) with m^ = g, so V~ = (lr * g / -p)^2
    v_tilde = (lr * g / -p.detach()) ** 2
    c_l, c_u = zeta / 2, zeta * 2
    assert torch.all(v_tilde >= c_l * (1 - 1e-12)) and torch.all(v_tilde <= c_u * (1 + 1e-12))
    assert v_tilde[0] == pytest.approx(c_l, rel=1e-12)  # raised to the lower bound
    assert v_tilde[-1] == pytest.approx(c_u, rel=1e-12)  # lowered to the upper bound
    inside = (g**2 > c_l) & (g**2 < c_u)
    assert inside.any()
    torch.testing.assert_close(v_tilde[inside], (g**2)[inside])  # untouched inside


# ---------------------------------------------------------------- property 3: late training


@pytest.mark.parametrize("foreach", [False, True])
def test_late_step_tends_to_normalised_momentum(foreach: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    near_binary = (torch.randn(4, 8, generator=gen).sign() * 0.5).double()
    near_binary += 0.01 * torch.randn(4, 8, generator=gen, dtype=torch.float64)
    gaussian = torch.randn(4, 8, generator=gen, dtype=torch.float64) * 0.5
    params = [near_binary.requires_grad_(), gaussian.requires_grad_()]
    lr, kappa = 1e-3, 2.0
    opt = BAMSProd(
        [{"params": params, "binary": True}], lr=lr, kappa=kappa, eps=0.0, foreach=foreach
    )
    grads = [torch.randn(4, 8, generator=gen, dtype=torch.float64) for _ in range(5)]
    run_steps(opt, params, [[g, g] for g in grads])  # the same gradients for both tensors
    for p in params:
        opt.state[p]["step"] = 10**9  # late in training: gamma * t = 1e6
    errors = [quantization_error(p) for p in params]
    before = [p.detach().clone() for p in params]
    g = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    run_steps(opt, params, [[g, g]])
    steps = []
    for p, p0, e in zip(params, before, errors, strict=True):
        state = opt.state[p]
        m_hat = state["exp_avg"]  # 1 - beta1^t == 1
        zeta = float(state["max_exp_avg_sq"].mean()) * (1 + kappa * e)
        step = p.detach() - p0
        torch.testing.assert_close(step, -lr * m_hat / math.sqrt(zeta), rtol=2e-6, atol=0)
        steps.append(step)
    # the step shrinks as the quantization error grows
    assert errors[0] < 0.01 < 0.2 < errors[1]
    ratio = steps[1].abs() / steps[0].abs()
    expected = math.sqrt((1 + kappa * errors[0]) / (1 + kappa * errors[1]))
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-5, atol=0)
    assert expected < 1


# ---------------------------------------------------------------- property 5: the optimizer API


def _binary_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), BinaryLinear(16, 16), nn.BatchNorm1d(16),
                          nn.Linear(16, 4))  # fmt: skip
    x = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    return model, x, y


def _train(model: nn.Module, opt: torch.optim.Optimizer, x, y, steps: int) -> list[torch.Tensor]:
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip_reproduces_next_steps(foreach: bool) -> None:
    model, x, y = _binary_problem()
    opt = build("bamsprod", model, lr=1e-2, gamma=0.1)
    for group in opt.param_groups:
        group["foreach"] = foreach
    _train(model, opt, x, y, 5)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    expected = _train(model, opt, x, y, 5)

    clone, _, _ = _binary_problem(seed=1)  # different initial weights, then loaded
    clone.load_state_dict(saved_model)
    opt2 = build("bamsprod", clone, lr=0.5)  # different lr: the saved groups win
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[1]["binary"] is True
    got = _train(clone, opt2, x, y, 5)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_state_is_lazy_and_named() -> None:
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = BAMSProd([a, b])
    assert len(opt.state) == 0
    a.grad = torch.ones(3)
    opt.step()
    assert set(opt.state[a]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert opt.state[a]["step"] == 1
    assert b not in opt.state  # no grad: skipped, no state


@pytest.mark.parametrize("foreach", [False, True])
def test_scheduler_drives_lr(foreach: bool) -> None:
    # The update is linear in lr given the same moments: after a StepLR halving, the step is
    # exactly half of the unscheduled optimizer's step on the same gradients.
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 4, generator=gen) for _ in range(4)]
    a = torch.randn(5, 4, generator=gen, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    opt_a = BAMSProd([a], lr=0.01, gamma=0.5, foreach=foreach)
    opt_b = BAMSProd([b], lr=0.01, gamma=0.5, foreach=foreach)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=3, gamma=0.5)
    for i, g in enumerate(grads):
        a0, b0 = a.detach().clone(), b.detach().clone()
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
        sched.step()
        ratio = 0.5 if i == 3 else 1.0
        torch.testing.assert_close(a.detach() - a0, ratio * (b.detach() - b0))
    assert opt_a.param_groups[0]["lr"] == pytest.approx(0.005)


def test_closure_is_called_and_returned() -> None:
    model, x, y = _binary_problem()
    opt = build("bamsprod", model)
    calls = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        calls.append(1)
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert calls == [1] and torch.is_tensor(loss) and loss.ndim == 0
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("foreach", [False, True])
def test_params_without_grad_are_skipped(foreach: bool) -> None:
    a = torch.randn(4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    b0 = b.detach().clone()
    opt = BAMSProd([a, b], lr=0.1, foreach=foreach)
    for _ in range(3):
        a.grad = torch.randn(4)
        opt.step()
    assert torch.equal(b.detach(), b0) and b not in opt.state
    assert opt.state[a]["step"] == 3


def test_sparse_gradients_are_refused() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    opt = BAMSProd(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="BAMSProd does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
        ({"gamma": -0.5}, "Invalid gamma value: -0.5"),
        ({"kappa": -2.0}, "Invalid kappa value: -2.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
        ({"latent_clip": 0.0}, "Invalid latent_clip value: 0.0"),
        ({"binary": "yes"}, "Invalid binary value: 'yes'"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        BAMSProd([torch.zeros(2, requires_grad=True)], **kwargs)


def test_invalid_group_override_is_refused() -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid latent_clip value: -1"):
        BAMSProd([{"params": [p], "binary": True, "latent_clip": -1}])


def test_setstate_backfills_missing_keys() -> None:
    p = torch.zeros(2, requires_grad=True)
    opt = BAMSProd([p])
    state = opt.__getstate__()
    for key in ("gamma", "kappa", "binary", "latent_clip", "foreach"):
        del state["param_groups"][0][key]  # an "old checkpoint"
    opt.__setstate__(state)
    group = opt.param_groups[0]
    assert (group["gamma"], group["kappa"], group["binary"]) == (1e-3, 1.0, False)
    p.grad = torch.ones(2)
    opt.step()


# ---------------------------------------------------------------- fast path == reference


def _mixed_params(seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    binary = [t(16, 8, 3, 3), t(32, 16), t(7, 1, 1, 1), t(5)]
    real = [t(16), t(()), t(10, 32), t(3, 4, dtype=torch.float64), t(1, 6)]
    return [
        {"params": binary, "binary": True, "latent_clip": 1.0},
        {"params": real, "weight_decay": 0.01},
        {"params": [t(6, 2)], "gamma": 0.0},
    ]


def test_fast_path_equals_reference_on_mixed_shapes() -> None:
    groups = {foreach: _mixed_params(0) for foreach in (False, True)}
    opts = {f: BAMSProd(g, lr=0.02, gamma=0.05, foreach=f) for f, g in groups.items()}
    gen = torch.Generator().manual_seed(1)
    params = {f: [p for g in groups[f] for p in g["params"]] for f in groups}
    for _ in range(30):
        for p_ref, p_fast in zip(params[False], params[True], strict=True):
            grad = torch.randn(p_ref.shape, generator=gen, dtype=p_ref.dtype)
            grad *= float(torch.rand((), generator=gen)) * 2  # a per-tensor scale
            p_ref.grad, p_fast.grad = grad.clone(), grad.clone()
        for opt in opts.values():
            opt.step()
    for p_ref, p_fast in zip(params[False], params[True], strict=True):
        assert rel_err(p_fast.detach(), p_ref.detach()) <= 1e-6
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            ref_state = opts[False].state[p_ref][key]
            assert rel_err(opts[True].state[p_fast][key], ref_state) <= 1e-6
    binary = groups[True][0]["params"]
    assert all(p.abs().max() <= 1.0 for p in binary)  # latent clip applied


def test_fast_path_in_many_buckets_equals_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny buckets: every tensor (and every dtype) in a bucket of its own or a few together.
    monkeypatch.setattr(bamsprod_module, "_BUCKET_NUMEL", 200)
    groups = {foreach: _mixed_params(2) for foreach in (False, True)}
    opts = {f: BAMSProd(g, lr=0.02, gamma=0.1, kappa=3.0, foreach=f) for f, g in groups.items()}
    params = {f: [p for g in groups[f] for p in g["params"]] for f in groups}
    assert len(bamsprod_module._buckets(params[True], 200)) > 5
    gen = torch.Generator().manual_seed(4)
    for _ in range(10):
        for p_ref, p_fast in zip(params[False], params[True], strict=True):
            grad = torch.randn(p_ref.shape, generator=gen, dtype=p_ref.dtype)
            p_ref.grad, p_fast.grad = grad.clone(), grad.clone()
        for opt in opts.values():
            opt.step()
    for p_ref, p_fast in zip(params[False], params[True], strict=True):
        assert rel_err(p_fast.detach(), p_ref.detach()) <= 1e-6


def test_buckets_split_by_size_device_and_dtype() -> None:
    ts = [torch.zeros(60), torch.zeros(60), torch.zeros(3, dtype=torch.float64), torch.zeros(50),
          torch.zeros(500), torch.zeros(10)]  # fmt: skip
    assert sorted(bamsprod_module._buckets(ts, 128)) == [[0, 1], [2], [3], [4], [5]]


@pytest.mark.parametrize(
    "w",
    [
        torch.tensor(0.7),
        torch.tensor([0.5, -1.5]),
        torch.zeros(3, 4),
        torch.tensor([[1.0, -1.0, 1.0], [-0.5, 0.5, 0.5]]),  # already +-a_c: e = 0
        torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0)),
        torch.randn(16, 5, generator=torch.Generator().manual_seed(1)).double(),
        torch.randn(6, 4, 2, generator=torch.Generator().manual_seed(2)).transpose(0, 1),
    ],
)
def test_batched_quantization_error_matches_metric(w: torch.Tensor) -> None:
    got = bamsprod_module._quantization_errors([w])
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(quantization_error(w), abs=1e-6)
    assert float(got[0]) == pytest.approx(np_quant_error(w.numpy()), abs=1e-6)


@pytest.mark.parametrize("capturable", [False, True])
def test_fast_path_makes_no_host_sync(monkeypatch: pytest.MonkeyPatch, capturable: bool) -> None:
    """No tensor value is read on the host, except (as torch's optimizers do) the CPU-held
    ``step`` counts when not capturable; nothing is built from a host list per step."""
    groups = _mixed_params(0)
    opt = BAMSProd(groups, gamma=0.05, foreach=True, capturable=capturable)
    for g in groups:
        for p in g["params"]:
            p.grad = torch.randn_like(p)
    opt.step()  # state creation happens outside the check
    steps = {id(s["step"]) for s in opt.state.values()} if not capturable else set()
    item = torch.Tensor.item

    def refuse(self, *args, **kwargs):
        if id(self) in steps:
            return item(self)
        raise AssertionError("host sync in the fast path")

    def no_copy(*args, **kwargs):
        raise AssertionError("a tensor built from a host list in the fast path")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    monkeypatch.setattr(torch, "tensor", no_copy)
    opt.step()


# ---------------------------------------------------------------- a tiny real task


def test_trains_a_binary_mlp_on_digits() -> None:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = nn.Sequential(
        nn.Linear(64, 128), nn.BatchNorm1d(128),
        BinaryLinear(128, 128), nn.BatchNorm1d(128),
        BinaryLinear(128, 128), nn.BatchNorm1d(128),
        nn.Linear(128, 10),
    )  # fmt: skip
    opt = build("bamsprod", model, lr=5e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(5):
        for i in range(0, len(y_train), 100):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[i : i + 100]), y_train[i : i + 100])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    assert acc >= 0.9, acc
    for n, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    for w in binary_weights(model).values():
        assert w.abs().max() <= 1.0  # the latent clip held
