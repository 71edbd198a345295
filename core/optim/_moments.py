"""Adam's first two steps, shared by the per-tensor references of BAMSProd and AdaBound.

``g <- g + weight_decay * p``, ``m <- beta1 m + (1 - beta1) g`` and
``v <- beta2 v + (1 - beta2) g^2``, for float hyperparameters and for tensor ones (with
``differentiable=True`` they may require grad, and ``add``'s ``alpha`` and ``addcmul``'s
``value`` take numbers only): a tensor ``weight_decay`` multiplies, a tensor beta goes through
``lerp_``, whose weight may be a tensor, as torch's Adam does. Float hyperparameters keep the
in-place ops, so the reference's results do not change.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["decay", "update_moments"]


def decay(grad: Tensor, p: Tensor, weight_decay: Any) -> Tensor:
    """``grad + weight_decay * p`` (L2, as Adam's ``weight_decay``), a new tensor."""
    if isinstance(weight_decay, Tensor):
        return grad + weight_decay * p
    return grad.add(p, alpha=weight_decay)


def update_moments(
    exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, beta1: Any, beta2: Any
) -> None:
    """``m <- beta1 m + (1 - beta1) g`` and ``v <- beta2 v + (1 - beta2) g^2``, in place."""
    if isinstance(beta1, Tensor):
        exp_avg.lerp_(grad, (1 - beta1).to(exp_avg.device, exp_avg.dtype))
    else:
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    if isinstance(beta2, Tensor):
        exp_avg_sq.lerp_(grad.square(), (1 - beta2).to(exp_avg_sq.device, exp_avg_sq.dtype))
    else:
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
