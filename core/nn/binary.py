"""Binary layers: sign with a straight-through estimator, BinaryLinear and BinaryConv2d.

Forward ``w_b = a * sign(w)`` with the per-output-channel scale ``a = mean|w|`` (or ``a = 1``
with ``scale=False``), activations ``sign(x)`` (or real with ``binary_act=False``).
Backward is the STE with cancellation, as docs/algorithm.md ("Binary layers") states it:
``dL/dx = dL/dsign(x) * 1{|x| <= 1}`` for activations and ``dL/dw = dL/dw_b * 1{|w| <= 1}``
for weights (the scale ``a`` passes no gradient and does not multiply the weight gradient).
``sign(0) = +1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SignSTE", "ste_sign", "BinaryLinear", "BinaryConv2d", "is_binary", "binary_weights"]


class SignSTE(torch.autograd.Function):
    """``sign(x)`` forward (``sign(0) = +1``); gradient ``g * 1{|x| <= 1}`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def ste_sign(x: Tensor) -> Tensor:
    return SignSTE.apply(x)


class ScaledSignSTE(torch.autograd.Function):
    """``a * sign(w)`` forward; ``g * 1{|w| <= 1}`` backward (docs/algorithm.md's STE)."""

    @staticmethod
    def forward(ctx, w: Tensor, a: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        return a * torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype), None


def _binary_weight(w: Tensor, scale: bool) -> Tensor:
    if not scale:
        return ste_sign(w)
    dims = tuple(range(1, w.dim()))
    a = w.detach().abs().mean(dim=dims, keepdim=True) if dims else w.detach().abs().mean()
    return ScaledSignSTE.apply(w, a)


class _BinaryMixin:
    """Marks a layer whose ``weight`` is a latent weight binarized in the forward pass."""

    is_binary = True
    scale: bool
    binary_act: bool

    def _inputs(self, x: Tensor) -> Tensor:
        return ste_sign(x) if self.binary_act else x


class BinaryLinear(_BinaryMixin, nn.Linear):
    """``nn.Linear`` with binary weights (and, by default, binary inputs)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        scale: bool = True,
        binary_act: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.scale = scale
        self.binary_act = binary_act

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._inputs(x), _binary_weight(self.weight, self.scale), self.bias)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """``nn.Conv2d`` with binary weights (and, by default, binary inputs)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        scale: bool = True,
        binary_act: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.scale = scale
        self.binary_act = binary_act

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(
            self._inputs(x), _binary_weight(self.weight, self.scale), self.bias
        )


def is_binary(module: nn.Module) -> bool:
    return bool(getattr(module, "is_binary", False))


def binary_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The latent weights of every binary layer, by qualified parameter name, in model order.

    A binary layer is a :class:`BinaryLinear`/:class:`BinaryConv2d` (or subclass), or any module
    with ``is_binary = True`` and a ``weight``. A model that keeps its binary weights some other
    way says so with a ``binary_weights()`` method returning ``{name: parameter}``; the metrics
    (quantization error, flip rate) and the optimizer's ``binary`` group then use that.
    """
    hook = getattr(model, "binary_weights", None)
    if callable(hook):
        return dict(hook())
    return {
        f"{name}.weight" if name else "weight": m.weight
        for name, m in model.named_modules()
        if is_binary(m)
    }
