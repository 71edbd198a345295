"""Binary layers against their definition: forward as the float layer fed ``sign(input)`` and
``a * sign(weight)``, backward as the STE with cancellation ``1{|x| <= 1}``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bamsprod.core.nn import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binary_weights,
    is_binary,
    ste_sign,
)


def ref_sign(x: torch.Tensor) -> torch.Tensor:
    """Independent sign with ``sign(0) = +1``."""
    return torch.ones_like(x) - 2.0 * (x < 0).to(x.dtype)


def ref_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel ``a = mean|w|``, broadcastable against ``w``."""
    return w.abs().reshape(w.shape[0], -1).mean(1).reshape(-1, *([1] * (w.dim() - 1)))


def test_sign_of_zero_is_plus_one() -> None:
    x = torch.tensor([0.0, -0.0, 1e-12, -1e-12, 3.0, -3.0])
    assert ste_sign(x).tolist() == [1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    assert torch.sign(torch.tensor(0.0)) == 0  # the trap ste_sign avoids


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ste_gradient_is_cancelled_outside_unit_interval(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.rand(200, dtype=dtype) * 6 - 3
    x = torch.cat([x, torch.tensor([1.0, -1.0, 0.0], dtype=dtype)]).requires_grad_()
    g = torch.randn_like(x)
    y = SignSTE.apply(x)
    y.backward(g)
    assert y.dtype == dtype
    assert torch.equal(y.detach(), ref_sign(x.detach()))
    expected = g * (x.detach().abs() <= 1).to(dtype)  # |x| = 1 passes
    assert torch.equal(x.grad, expected)


def make(kind: str, scale: bool, binary_act: bool, bias: bool) -> nn.Module:
    torch.manual_seed(1)
    if kind == "linear":
        layer: nn.Module = BinaryLinear(7, 5, bias=bias, scale=scale, binary_act=binary_act)
    else:
        layer = BinaryConv2d(
            3, 4, 3, stride=2, padding=1, bias=bias, scale=scale, binary_act=binary_act
        )
    layer = layer.double()
    with torch.no_grad():  # latent weights on both sides of the STE window
        layer.weight.uniform_(-1.5, 1.5)
    return layer


def float_layer(kind: str, layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if kind == "linear":
        return F.linear(x, w, layer.bias)
    return F.conv2d(x, w, layer.bias, stride=2, padding=1)


def inputs(kind: str) -> torch.Tensor:
    torch.manual_seed(2)
    shape = (6, 7) if kind == "linear" else (2, 3, 9, 9)
    x = torch.randn(*shape, dtype=torch.float64) * 1.5
    x.view(-1)[:3] = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    return x


CASES = [
    (kind, scale, act, bias)
    for kind in ("linear", "conv")
    for scale in (True, False)
    for act in (True, False)
    for bias in (False, True)
]


@pytest.mark.parametrize("kind,scale,binary_act,bias", CASES)
def test_forward_equals_float_layer_on_binarized_operands(
    kind: str, scale: bool, binary_act: bool, bias: bool
) -> None:
    layer = make(kind, scale, binary_act, bias)
    x = inputs(kind)
    w = layer.weight.detach()
    wb = ref_scale(w) * ref_sign(w) if scale else ref_sign(w)
    xb = ref_sign(x) if binary_act else x
    torch.testing.assert_close(layer(x), float_layer(kind, layer, xb, wb), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,scale,binary_act,bias", CASES)
def test_gradients_match_ste_definition(
    kind: str, scale: bool, binary_act: bool, bias: bool
) -> None:
    layer = make(kind, scale, binary_act, bias)
    x = inputs(kind).requires_grad_()
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)

    # Independent formula: the float layer on leaf operands sign(x) and a * sign(w) ...
    w = layer.weight.detach()
    a = ref_scale(w) if scale else torch.ones_like(w)
    wb = (a * ref_sign(w)).requires_grad_()
    xb = (ref_sign(x.detach()) if binary_act else x.detach().clone()).requires_grad_()
    bias_leaf = None if layer.bias is None else layer.bias.detach().clone().requires_grad_()
    ref = (
        F.linear(xb, wb, bias_leaf)
        if kind == "linear"
        else F.conv2d(xb, wb, bias_leaf, stride=2, padding=1)
    )
    ref.backward(g)
    # ... then the spec's STE: dL/dw = dL/dw_b * 1{|w| <= 1} (no factor a, no grad through a).
    cancel_x = (x.detach().abs() <= 1).double() if binary_act else torch.ones_like(x)
    torch.testing.assert_close(x.grad, xb.grad * cancel_x, rtol=1e-12, atol=1e-12)
    expected_w = wb.grad * (w.abs() <= 1).double()
    torch.testing.assert_close(layer.weight.grad, expected_w, rtol=1e-12, atol=1e-12)
    assert (layer.weight.grad[w.abs() > 1] == 0).all()
    if bias_leaf is not None:
        torch.testing.assert_close(layer.bias.grad, bias_leaf.grad)


def test_scale_is_per_output_channel_mean_abs() -> None:
    layer = BinaryLinear(3, 2, scale=True, binary_act=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.25, 0.0], [-2.0, 1.0, 3.0]]))
    out = layer(torch.eye(3, dtype=torch.float64))  # column j is w[:, j] binarized
    expected = torch.tensor([[0.25, -0.25, 0.25], [-2.0, 2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected.T)


def test_scale_false_weights_are_plus_minus_one() -> None:
    layer = BinaryConv2d(2, 3, 1, scale=False, binary_act=False)
    x = torch.zeros(1, 2, 1, 1)
    x[0, 0] = 1.0
    out = layer(x).flatten()
    assert set(out.tolist()) <= {-1.0, 1.0}


def test_binary_weights_and_is_binary() -> None:
    model = nn.Sequential(nn.Linear(4, 4), BinaryLinear(4, 4), nn.Sequential(BinaryLinear(4, 2)))
    assert [is_binary(m) for m in model] == [False, True, False]
    assert is_binary(model[2][0])
    bw = binary_weights(model)
    assert list(bw) == ["1.weight", "2.0.weight"]
    assert bw["1.weight"] is model[1].weight
    single = BinaryLinear(2, 2)
    assert binary_weights(single) == {"weight": single.weight}
