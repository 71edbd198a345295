r"""AdaBound and AMSBound (Luo et al., ICLR 2019): Adam whose per-element step is clipped.

Per parameter tensor at step ``t`` (the project's spec, "Baselines")::

    g   <- g + weight_decay * p                       (L2; skipped when 0)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    v   <- max(v_max, v)  for AMSBound                (v_max kept as state)
    final_lr <- final_lr * lr / base_lr               (schedulers move the bounds too)
    lower <- final_lr * (1 - 1 / (gamma * t + 1))
    upper <- final_lr * (1 + 1 / (gamma * t))
    step  <- clamp(lr * sqrt(1 - beta2^t) / (1 - beta1^t) / (sqrt(v) + eps), lower, upper)
    p   <- p - step * m

``base_lr`` is the group's ``lr`` when it was added (stored in the group as ``"base_lr"``, so it
survives ``state_dict``). With ``gamma = 0`` the bounds are ``[0, inf)`` and the method is Adam
(with ``eps`` added to the uncorrected ``sqrt(v)``, as in the paper's code).

Reference: L. Luo, Y. Xiong, Y. Liu, X. Sun, "Adaptive Gradient Methods with Dynamic Bound of
Learning Rate", ICLR 2019, https://arxiv.org/abs/1902.09843 (code: Luolc/AdaBound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from core.optim.bamsprod import bound_schedule

__all__ = ["AdaBound", "adabound_bounds"]


def adabound_bounds(
    final_lr: float, gamma: float, step: int, lr: float = 1.0, base_lr: float = 1.0
) -> tuple[float, float]:
    """``(lower, upper)`` on AdaBound's step size at ``step``, with ``final_lr * lr / base_lr``."""
    target = final_lr * lr / base_lr if base_lr != 0 else 0.0
    return bound_schedule(target, gamma, step)


class AdaBound(Optimizer):
    r"""AdaBound / AMSBound: Adam with the step size clipped into bounds that converge to SGD's.

    .. math::
        \eta_t = \operatorname{clip}\!\Big(\frac{\alpha\sqrt{1-\beta_2^t}}{(1-\beta_1^t)
        (\sqrt{v_t}+\epsilon)},\ \eta_l(t),\ \eta_u(t)\Big), \quad
        \eta_l = \alpha^\ast (1 - \tfrac{1}{\gamma t + 1}),\
        \eta_u = \alpha^\ast (1 + \tfrac{1}{\gamma t}), \quad
        p_t = p_{t-1} - \eta_t \odot m_t

    Args:
        params: parameters or param groups.
        lr: Adam learning rate ``alpha``.
        betas: ``(beta1, beta2)``.
        final_lr: the SGD learning rate ``alpha*`` the bounds converge to, scaled by
            ``lr / base_lr`` at each step.
        gamma: bound convergence speed.
        eps: added to ``sqrt(v)``.
        weight_decay: L2 penalty added to the gradient.
        amsbound: use the running max of ``v`` (AMSBound).

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` and, for AMSBound,
    ``max_exp_avg_sq``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "final_lr": final_lr,
            "gamma": gamma,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsbound": amsbound,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated) and record its ``base_lr``."""
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("base_lr", group["lr"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsbound", False)
            group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            amsbound = group["amsbound"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        "AdaBound does not support sparse gradients, please use dense gradients "
                        "or torch.optim.SparseAdam instead"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if amsbound:
                        state["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                state["step"] = int(state["step"]) + 1
                _adabound_update(
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state.get("max_exp_avg_sq") if amsbound else None,
                    state["step"],
                    lr=group["lr"],
                    base_lr=group["base_lr"],
                    final_lr=group["final_lr"],
                    beta1=beta1,
                    beta2=beta2,
                    gamma=group["gamma"],
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                )
        return loss


def _adabound_update(
    p: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    t: int,
    *,
    lr: float,
    base_lr: float,
    final_lr: float,
    beta1: float,
    beta2: float,
    gamma: float,
    eps: float,
    weight_decay: float,
) -> None:
    """One AdaBound step on one tensor, in place (AMSBound when ``max_exp_avg_sq`` is given)."""
    if weight_decay != 0:
        grad = grad.add(p, alpha=weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
    lower, upper = adabound_bounds(final_lr, gamma, t, lr, base_lr)
    # step = clamp(step_size / (sqrt(v) + eps), lower, upper), built in one buffer
    step = second.sqrt().add_(eps).reciprocal_().mul_(step_size).clamp_(lower, upper)
    p.addcmul_(step, exp_avg, value=-1.0)


def _validate(group: dict[str, Any]) -> None:
    if not 0.0 <= group["lr"]:
        raise ValueError(f"Invalid learning rate: {group['lr']}")
    if not 0.0 <= group["eps"]:
        raise ValueError(f"Invalid epsilon value: {group['eps']}")
    betas = group["betas"]
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    if not 0.0 <= group["final_lr"]:
        raise ValueError(f"Invalid final learning rate: {group['final_lr']}")
    if not 0.0 <= group["gamma"] < math.inf:
        raise ValueError(f"Invalid gamma value: {group['gamma']}")
    if not 0.0 <= group["weight_decay"]:
        raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
