"""BAMSProd's fused CPU kernel: equal to the reference, the closed-form e(p), fallbacks, the API.

The kernel is built once per machine (cached under torch's extension root; ~10-60 s cold) by
the ``fused_ops`` fixture, once per test session. Where it cannot be built the kernel tests are
skipped with the reason, except under ``CI=true``, where they fail: CI must test the kernel.
"""

from __future__ import annotations

import copy
import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optim_helpers import np_quant_error, rel_err
from torch import nn

import bamsprod.core.optim._fused as fused_module
import bamsprod.core.optim.bamsprod as bamsprod_module
from bamsprod.core.metrics import quantization_error
from bamsprod.core.optim import BAMSProd, build

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def fused_ops():
    ops = fused_module.load()
    if ops is None:
        message = f"fused BAMSProd kernel unavailable: {fused_module.status()['error']}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return ops


def _mixed_groups(seed: int, *, big: bool = True) -> list[dict]:
    """Every shape the kernel cuts differently, in float32 and float64, binary and real."""
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    binary = [
        t(16, 8, 3, 3),  # conv: items of whole channels
        t(32, 16),
        t(7, 1, 1, 1),  # one element per channel
        t(5),  # 1-d: one channel
        t(()),  # 0-d
        t(3, 70_001),  # channels longer than an item: split into pieces
        t(4, 6, dtype=torch.float64),
    ]
    if big:
        binary.append(t(300, 1_000))  # several blocks, both threads
    real = [t(16), t(()), t(10, 32), t(3, 4, dtype=torch.float64), t(1, 6), t(64, 3, 3, 3)]
    return [
        {"params": binary, "binary": True, "latent_clip": 1.0},
        {"params": real, "weight_decay": 0.01},
        {"params": [t(6, 2), t(4, dtype=torch.float64)], "gamma": 0.0},
        {"params": [t(9, 4)], "binary": True, "latent_clip": None, "weight_decay": 0.1},
        {"params": [t(2, 3, 5)], "binary": True, "gamma": 0.0, "latent_clip": 0.5},
    ]


def _params(groups: list[dict]) -> list[torch.Tensor]:
    return [p for g in groups for p in g["params"]]


def _step_all(opts: list[torch.optim.Optimizer], params: list[list[torch.Tensor]], gen) -> None:
    for ps in zip(*params, strict=True):
        grad = torch.randn(ps[0].shape, generator=gen, dtype=ps[0].dtype)
        grad *= float(torch.rand((), generator=gen)) * 2  # a per-tensor scale
        for p in ps:
            p.grad = grad.clone()
    for opt in opts:
        opt.step()


def _assert_same(opt, ref, params, ref_params, tol: float = 1e-6) -> None:
    for p, r in zip(params, ref_params, strict=True):
        assert rel_err(p, r) <= tol, (tuple(p.shape), rel_err(p, r))
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert rel_err(opt.state[p][key], ref.state[r][key]) <= tol, (tuple(p.shape), key)
        assert opt.state[p]["step"] == ref.state[r]["step"]


# ---------------------------------------------------------------- fused == reference


def test_fused_equals_reference_over_50_steps(fused_ops) -> None:
    hp = dict(lr=0.02, gamma=0.05, kappa=1.5)
    ref_groups, fused_groups = _mixed_groups(0), _mixed_groups(0)
    ref = BAMSProd(ref_groups, foreach=False, **hp)
    opt = BAMSProd(fused_groups, fused=True, **hp)
    ref_params, params = _params(ref_groups), _params(fused_groups)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        _step_all([ref, opt], [ref_params, params], gen)
    _assert_same(opt, ref, params, ref_params)
    assert all(p.abs().max() <= 1.0 for p in fused_groups[0]["params"])  # latent clip
    assert fused_groups[4]["params"][0].abs().max() <= 0.5


@pytest.mark.parametrize(
    "binary, clip, wd, gamma",
    [(False, None, 0.0, 0.05), (True, 1.0, 0.0, 0.05), (True, 0.5, 0.01, 0.2),
     (False, None, 0.1, 0.0), (True, 0.3, 0.0, 1.0)],
)  # fmt: skip
def test_fused_matches_numpy_spec(fused_ops, binary: bool, clip, wd: float, gamma: float) -> None:
    from test_optim_bamsprod import assert_matches_numpy_spec

    assert_matches_numpy_spec(binary, clip, wd, gamma, fused=True)


def test_fused_binary_step_by_hand(fused_ops) -> None:
    # As test_optim_bamsprod.test_binary_step_by_hand: e = 0.2, zeta = 0.07, c_l = 0.035.
    w = torch.tensor([[0.5, -1.5]], dtype=torch.float64, requires_grad=True)
    opt = BAMSProd(
        [{"params": [w], "binary": True, "latent_clip": 1.0}],
        lr=0.1, eps=0.0, gamma=1.0, kappa=2.0, fused=True,
    )  # fmt: skip
    w.grad = torch.tensor([[0.1, 0.3]], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([[0.5 - 0.01 / math.sqrt(0.035), -1.0]], dtype=torch.float64)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_fused_gamma_zero_is_torch_amsgrad(fused_ops, weight_decay: float) -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ref_model = copy.deepcopy(model)
    x, y = torch.randn(64, 6, generator=gen), torch.randn(64, 3, generator=gen)
    hp = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    opt = BAMSProd(model.parameters(), gamma=0.0, fused=True, **hp)
    torch_opt = torch.optim.Adam(ref_model.parameters(), amsgrad=True, **hp)
    for _ in range(100):
        for m, o in ((model, opt), (ref_model, torch_opt)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
        for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
            assert rel_err(a, b) <= 1e-6


def test_fused_is_independent_of_the_thread_count(fused_ops) -> None:
    # Partial sums are per work item and added in a fixed order: bit-identical results.
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            groups = _mixed_groups(5)
            opt = BAMSProd(groups, lr=0.02, gamma=0.1, fused=True)
            gen = torch.Generator().manual_seed(6)
            for _ in range(3):
                _step_all([opt], [_params(groups)], gen)
            results.append([p.detach().clone() for p in _params(groups)])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_fused_nan_gradient_spreads_like_the_reference(fused_ops) -> None:
    # A NaN in one gradient makes zeta NaN, so the reference turns the whole tensor NaN
    # (gamma > 0); with gamma = 0 only the NaN coordinate.
    for gamma in (0.1, 0.0):
        ps = [torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
        ps = [p.requires_grad_() for p in ps]
        ref = BAMSProd([ps[0]], gamma=gamma, foreach=False)
        opt = BAMSProd([ps[1]], gamma=gamma, fused=True)
        for p, o in zip(ps, (ref, opt), strict=True):
            p.grad = torch.ones(4, 5)
            p.grad[1, 2] = math.nan
            o.step()
        assert torch.equal(ps[0].isnan(), ps[1].isnan())
        assert int(ps[1].isnan().sum()) == (20 if gamma > 0 else 1)


def test_fused_step_bumps_version_counters(fused_ops) -> None:
    # Written through raw pointers: autograd must still see the in-place change.
    w = torch.randn(3, 4, requires_grad=True)
    opt = BAMSProd([w], fused=True)
    w.grad = torch.randn(3, 4)
    opt.step()
    state = opt.state[w]
    before = [t._version for t in (w, state["exp_avg"], state["max_exp_avg_sq"])]
    w.grad = torch.randn(3, 4)
    opt.step()
    after = [t._version for t in (w, state["exp_avg"], state["max_exp_avg_sq"])]
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_fused_state_dict_round_trip_and_build(fused_ops) -> None:
    torch.manual_seed(0)
    from bamsprod.core.nn import BinaryLinear

    model = nn.Sequential(nn.Linear(8, 16), BinaryLinear(16, 16), nn.Linear(16, 4))
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    opt = build("bamsprod", model, lr=1e-2, gamma=0.1)
    for group in opt.param_groups:
        group["fused"] = True

    def train(m, o, steps):
        for _ in range(steps):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        return [p.detach().clone() for p in m.parameters()]

    train(model, opt, 3)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert all(g["fused"] is True for g in saved_opt["param_groups"])
    expected = train(model, opt, 3)
    clone = copy.deepcopy(model)
    clone.load_state_dict(saved_model)
    opt2 = build("bamsprod", clone, lr=0.5)
    opt2.load_state_dict(saved_opt)
    got = train(clone, opt2, 3)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# ---------------------------------------------------------------- the closed-form e(p)


def _channel_tensors(draw, dtype) -> torch.Tensor:
    shape = draw(
        st.sampled_from([(), (1,), (7,), (3, 4), (5, 1), (4, 3, 2, 2), (2, 70_001), (6, 1, 1, 1)])
    )
    kind = draw(st.sampled_from(["normal", "equal_magnitude", "zeros", "some_zero_rows", "tiny"]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    if kind == "equal_magnitude":  # every channel already +-a_c: e = 0
        rows = w.reshape(w.shape[0] if w.dim() > 1 else 1, -1)
        scale = torch.rand(rows.shape[0], 1, generator=gen, dtype=torch.float64) + 0.1
        w = (torch.where(rows >= 0, 1.0, -1.0) * scale).reshape(shape)
    elif kind == "zeros":
        w = torch.zeros(shape, dtype=torch.float64)
    elif kind == "some_zero_rows" and w.dim() > 1:
        w[::2] = 0
    elif kind == "tiny":
        w = w * 1e-20
    return w.to(dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_closed_form_quantization_error_matches_metric(fused_ops, data, dtype) -> None:
    w = _channel_tensors(data.draw, dtype)
    kernel = float(fused_ops.quantization_errors([w])[0])
    foreach = float(bamsprod_module._quantization_errors([w.double()])[0])
    expected = quantization_error(w.double())
    assert 0.0 <= kernel < 1.0
    # float32 partial sums feed the double accumulators: the closed form's cancellation
    # (1 - sum S_c^2 / n_c / ||w||^2) costs a few float32 ulps on 70k-element channels.
    tol = 1e-6 if dtype == torch.float64 else 4e-6
    assert kernel == pytest.approx(expected, abs=tol)
    assert kernel == pytest.approx(np_quant_error(w.numpy()), abs=tol)
    assert foreach == pytest.approx(expected, abs=1e-9)
    if dtype == torch.float32 and w.abs().max() > 1e-15:
        # The metric in float32 agrees too (not on tiny weights, where its w^2 underflows).
        assert kernel == pytest.approx(quantization_error(w), abs=tol)


def test_closed_form_is_zero_exactly_when_binary(fused_ops) -> None:
    w = torch.tensor([[1.0, -1.0, 1.0], [-0.5, 0.5, 0.5]])
    z = torch.zeros(4, 3)
    near = w + 1e-3
    errors = fused_ops.quantization_errors([w, z, near])
    assert float(errors[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(errors[1]) == 0.0
    assert float(errors[2]) > 0.0


# ---------------------------------------------------------------- fallbacks


def test_non_contiguous_params_fall_back_and_still_match(fused_ops) -> None:
    gen = torch.Generator().manual_seed(3)
    shapes = [(8, 5), (6, 4, 3), (10,)]
    base = [torch.randn(s, generator=gen) for s in shapes]
    # p0: a transposed (non-contiguous) leaf; p1: contiguous with non-contiguous grads.
    ref_params = [b.clone().requires_grad_() for b in base]
    params = [
        base[0].t().contiguous().t().requires_grad_(),
        base[1].clone().requires_grad_(),
        base[2].clone().requires_grad_(),
    ]
    assert not params[0].is_contiguous()
    groups = lambda ps: [{"params": ps, "binary": True, "latent_clip": 2.0}]  # noqa: E731
    ref = BAMSProd(groups(ref_params), gamma=0.1, lr=0.01, foreach=False)
    opt = BAMSProd(groups(params), gamma=0.1, lr=0.01, fused=True)
    for _ in range(10):
        for r, p in zip(ref_params, params, strict=True):
            g = torch.randn(r.shape, generator=gen)
            r.grad = g.clone()
            p.grad = g.clone() if p.dim() != 3 else g.transpose(0, 2).contiguous().transpose(0, 2)
        ref.step()
        opt.step()
    assert not params[1].grad.is_contiguous()
    _assert_same(opt, ref, params, ref_params)


def test_unbuildable_kernel_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler():
        raise RuntimeError("Error building extension 'x'\nc++: error: not found")

    monkeypatch.setattr(fused_module, "_ops", None)
    monkeypatch.setattr(fused_module, "_error", None)
    monkeypatch.setattr(fused_module, "_build", no_compiler)
    ref_groups, fused_groups = _mixed_groups(7, big=False), _mixed_groups(7, big=False)
    ref = BAMSProd(ref_groups, gamma=0.05, foreach=False)
    opt = BAMSProd(fused_groups, gamma=0.05, fused=True)
    gen = torch.Generator().manual_seed(8)
    with pytest.warns(RuntimeWarning, match="fused CPU kernel could not be built") as record:
        _step_all([ref, opt], [_params(ref_groups), _params(fused_groups)], gen)
    assert len([w for w in record if "fused CPU kernel" in str(w.message)]) == 1
    assert "c++: error: not found" in fused_module.status()["error"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        for _ in range(4):
            _step_all([ref, opt], [_params(ref_groups), _params(fused_groups)], gen)
    _assert_same(opt, ref, _params(fused_groups), _params(ref_groups))


# ---------------------------------------------------------------- the API


def test_default_on_cpu_is_the_kernel_and_fused_false_never_touches_it(
    fused_ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = torch.randn(3, requires_grad=True)
    opt = BAMSProd([p])
    assert opt.param_groups[0]["fused"] is None
    p.grad = torch.ones(3)
    opt.step()
    assert opt.paths() == "fused"

    def refuse():
        raise AssertionError("fused=False must not load the kernel")

    monkeypatch.setattr(fused_module, "load", refuse)
    for kwargs, path in (({"fused": False}, "foreach"), ({"foreach": False}, "single_tensor")):
        opt = BAMSProd([p], **kwargs)
        opt.step()
        assert opt.paths() == path


def test_fused_and_foreach_together_are_refused() -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        BAMSProd([p], fused=True, foreach=True)
    opt = BAMSProd([p], foreach=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "fused": True})


@pytest.mark.parametrize(
    "tensor",
    [torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.bfloat16),
     torch.zeros(3, device="meta")],
)  # fmt: skip
def test_fused_refuses_unsupported_params_at_the_step(tensor: torch.Tensor) -> None:
    """As torch's ``fused=True``: at the step (a meta model may be materialised before it),
    before any state is made."""
    p = tensor.requires_grad_()
    opt = BAMSProd([p], fused=True)
    p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="requires float32 or float64 CPU parameters"):
        opt.step()
    assert not opt.state


def test_functional_fused_step_refuses_grad_mode() -> None:
    p = torch.randn(3, requires_grad=True)
    state = [[torch.zeros(3)] for _ in range(3)]
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, gamma=1e-3, kappa=1.0,
              weight_decay=0.0, binary=False, latent_clip=None)  # fmt: skip
    with pytest.raises(RuntimeError, match="in-place operation"):
        steps = [torch.tensor(0.0)]
        bamsprod_module.bamsprod([p], [torch.ones(3)], *state, steps, fused=True, **hp)
    with torch.no_grad():
        step = torch.tensor(0.0)
        bamsprod_module.bamsprod([p], [torch.ones(3)], *state, [step], fused=True, **hp)
    assert float(step) == 1.0


def test_setstate_backfills_fused() -> None:
    p = torch.zeros(2, requires_grad=True)
    opt = BAMSProd([p])
    state = opt.__getstate__()
    del state["param_groups"][0]["fused"]
    opt.__setstate__(state)
    assert opt.param_groups[0]["fused"] is None


def test_build_flags_never_use_march_native() -> None:
    flags = fused_module.build_flags()
    assert "-O3" in flags and "-fopenmp" in flags
    assert not any(f.startswith("-march") for f in flags)
    assert fused_module.extension_name(flags).startswith("bamsprod_fused_")
