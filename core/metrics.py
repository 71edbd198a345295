"""Metrics of binary weights: quantization error and sign-flip rate.

``quantization_error`` is ``e(w)`` of docs/algorithm.md ("Quantization error of a weight
tensor"): with output channels along dim 0 and the XNOR-Net scale ``a_c = mean|w_c|``,

    e(w) = sum_c ||w_c - a_c sign(w_c)||^2 / ||w||^2      (0 when ||w|| = 0),

scale-free, in [0, 1), and 0 exactly when every channel is already +-a_c. ``sign(0) = +1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["quantization_error", "quantization_error_tensor", "sign", "FlipCounter"]


def sign(x: Tensor) -> Tensor:
    """Sign with ``sign(0) = +1`` (``torch.sign(0)`` is 0, the usual trap)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def quantization_error_tensor(w: Tensor) -> Tensor:
    """``e(w)`` as a 0-d tensor on ``w``'s device (no host sync; for optimizers)."""
    w = w.detach()
    flat = w.reshape(1, -1) if w.dim() <= 1 else w.reshape(w.shape[0], -1)
    total = flat.pow(2).sum()
    scale = flat.abs().mean(dim=1, keepdim=True)
    resid = (flat - scale * sign(flat)).pow(2).sum()
    return torch.where(total > 0, resid / total.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)


def quantization_error(w: Tensor) -> float:
    """``e(w)`` of one weight tensor (docs/algorithm.md), as a Python float."""
    return float(quantization_error_tensor(w))


class FlipCounter:
    """Fraction of binary weights whose sign changed since the previous observation.

    The first observation is only a baseline (as in larq's FlipRatio); ``update`` returns
    ``None`` for it.
    """

    def __init__(self) -> None:
        self.prev: dict[str, Tensor] = {}

    def update(self, weights: dict[str, Tensor]) -> float | None:
        flips = 0
        total = 0
        first = not self.prev
        for name, w in weights.items():
            s = w.detach() >= 0
            if name in self.prev:
                flips += int((s != self.prev[name]).sum())
                total += s.numel()
            self.prev[name] = s.clone()
        if first or total == 0:
            return None
        return flips / total

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.cpu() for k, v in self.prev.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.prev = {k: v.clone() for k, v in state.items()}
