r"""AdaBound and AMSBound (Luo et al., ICLR 2019): Adam whose per-element step is clipped.

Per parameter tensor at step ``t`` (``docs/algorithm.md``, "Baselines")::

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

Paths as BAMSProd's (:mod:`core.optim._paths`): the per-tensor reference, a foreach path, and
the reference compiled by ``torch.compile`` (the default on CUDA).

Reference: L. Luo, Y. Xiong, Y. Liu, X. Sun, "Adaptive Gradient Methods with Dynamic Bound of
Learning Rate", ICLR 2019, https://arxiv.org/abs/1902.09843 (code: Luolc/AdaBound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import (
    ParamsT,
    _get_value,
    _to_scalar,
    _use_grad_for_differentiable,
)

from bamsprod.core.optim import _moments, _paths
from bamsprod.core.optim.bamsprod import bound_schedule

__all__ = ["AdaBound", "adabound", "adabound_bounds"]


def adabound_bounds(
    final_lr: float, gamma: float, step: Any, lr: Any = 1.0, base_lr: float = 1.0
) -> tuple[Any, Any]:
    """``(lower, upper)`` on AdaBound's step size at ``step``, with ``final_lr * lr / base_lr``."""
    target = final_lr * lr / base_lr if base_lr != 0 else 0.0
    return bound_schedule(target, gamma, step)


def _sqrt(x: Any) -> Any:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


@_paths.document_flags(
    fused="The fast path: the compiled reference on CUDA; elsewhere the foreach path."
)
class AdaBound(_paths.PathOptimizer):
    r"""AdaBound / AMSBound: Adam with the step size clipped into bounds that converge to SGD's.

    .. math::
        \eta_t = \operatorname{clip}\!\Big(\frac{\alpha\sqrt{1-\beta_2^t}}{(1-\beta_1^t)
        (\sqrt{v_t}+\epsilon)},\ \eta_l(t),\ \eta_u(t)\Big), \quad
        \eta_l = \alpha^\ast (1 - \tfrac{1}{\gamma t + 1}),\
        \eta_u = \alpha^\ast (1 + \tfrac{1}{\gamma t}), \quad
        p_t = p_{t-1} - \eta_t \odot m_t

    Args:
        params: parameters or param groups.
        lr: Adam learning rate ``alpha`` (a float or a 1-element tensor).
        betas: ``(beta1, beta2)``.
        final_lr: the SGD learning rate ``alpha*`` the bounds converge to, scaled by
            ``lr / base_lr`` at each step.
        gamma: bound convergence speed.
        eps: added to ``sqrt(v)``.
        weight_decay: L2 penalty added to the gradient.
        amsbound: use the running max of ``v`` (AMSBound).
        {flags}

    State per parameter: ``step`` (a 0-d tensor), ``exp_avg``, ``exp_avg_sq`` and, for
    AMSBound, ``max_exp_avg_sq``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(_to_scalar(b) for b in betas),
            "final_lr": final_lr,
            "gamma": gamma,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsbound": amsbound,
            "foreach": foreach,
            "maximize": maximize,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated) and record its ``base_lr``."""
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("base_lr", float(group["lr"]))

    def group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"amsbound": False, "base_lr": group["lr"]}

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        steps: list[Tensor],
        on_device: bool,
    ) -> None:
        # Keeps torch's signature (the lists as separate arguments): Dynamo runs it eagerly.
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
                state["step"] = _paths.new_step(p, on_device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsbound"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
            elif not torch.is_tensor(state["step"]):
                _paths.tensor_steps([state])
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsbound"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            path = self._path(group)
            lists: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
            self._init_group(group, *lists, group["capturable"] or path == "compiled")
            if not lists[0]:
                continue
            beta1, beta2 = group["betas"]
            path = adabound(
                *lists,
                path=path,
                lr=group["lr"],
                base_lr=group["base_lr"],
                final_lr=group["final_lr"],
                beta1=beta1,
                beta2=beta2,
                gamma=group["gamma"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                amsbound=group["amsbound"],
                maximize=group["maximize"],
                capturable=group["capturable"],
                differentiable=group["differentiable"],
            )
            self._paths_taken.add(path)
        return loss


def adabound(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    path: str = "single_tensor",
    **hyper: Any,
) -> str:
    """Functional AdaBound over tensor lists (``max_exp_avg_sqs`` empty unless AMSBound);
    ``path`` is one of :data:`core.optim._paths.Path` but ``fused``. Returns the path taken."""
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    if path == "compiled":
        return _paths.run_compiled(_single_tensor_adabound, _multi_tensor_adabound, *lists, **hyper)
    fn = _multi_tensor_adabound if path == "foreach" else _single_tensor_adabound
    fn(*lists, **hyper)
    return path


def _single_tensor_adabound(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    base_lr: float,
    final_lr: float,
    beta1: float,
    beta2: float,
    gamma: float,
    eps: float,
    weight_decay: float,
    amsbound: bool,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> None:
    """The reference: one AdaBound step per tensor, in place (AMSBound with ``v_max``)."""
    for i, p in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, step_t = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step_t += 1
        # a clone when differentiable: a tensor beta's power keeps t for its gradient, and
        # the next step increments step_t in place
        t = step_t.clone() if differentiable else step_t if capturable else _get_value(step_t)
        if weight_decay != 0:
            # autograd needs p as it was before the in-place update below (differentiable)
            grad = _moments.decay(grad, p.clone() if differentiable else p, weight_decay)
        _moments.update_moments(exp_avg, exp_avg_sq, grad, beta1, beta2)
        second = exp_avg_sq
        if amsbound:
            max_sq = max_exp_avg_sqs[i]
            if differentiable:
                # from clones, and read from a new tensor: autograd keeps no state tensor that
                # the next step changes in place, so backpropagating through several steps works
                second = torch.maximum(max_sq.clone(), exp_avg_sq.clone())
                max_sq.copy_(second)
            else:
                second = torch.maximum(max_sq, exp_avg_sq, out=max_sq)
        step_size = lr * _sqrt(1 - beta2**t) / (1 - beta1**t)
        # step = clamp(step_size / (sqrt(v) + eps), lower, upper)
        step = step_size / (second.sqrt() + eps)
        if gamma > 0:
            lower, upper = adabound_bounds(final_lr, gamma, t, lr, base_lr)
            step = step.clamp(lower, upper)
        p.sub_(step * (exp_avg.clone() if differentiable else exp_avg))


def _multi_tensor_adabound(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    base_lr: float,
    final_lr: float,
    beta1: float,
    beta2: float,
    gamma: float,
    eps: float,
    weight_decay: float,
    amsbound: bool,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> None:
    """The foreach path: the same step with ``torch._foreach_*`` ops, no host sync."""
    if differentiable:
        raise RuntimeError("the foreach path does not support differentiable=True")
    torch._foreach_add_(state_steps, 1)
    if capturable:
        bc1 = torch._foreach_pow(beta1, state_steps)
        torch._foreach_neg_(bc1)
        torch._foreach_add_(bc1, 1)
        sizes = torch._foreach_pow(beta2, state_steps)
        torch._foreach_neg_(sizes)
        torch._foreach_add_(sizes, 1)
        torch._foreach_sqrt_(sizes)
        torch._foreach_div_(sizes, bc1)
        torch._foreach_mul_(sizes, lr)
        gt = torch._foreach_mul(state_steps, gamma)
        uppers = torch._foreach_reciprocal(gt)
        torch._foreach_add_(uppers, 1)  # 1 + 1 / (gt)
        lowers = torch._foreach_reciprocal(uppers)  # 1 - 1 / (gt + 1)
        target = final_lr * lr / base_lr if base_lr != 0 else 0.0
        torch._foreach_mul_(lowers, target)
        torch._foreach_mul_(uppers, target)
    else:
        lr = _get_value(lr)
        ts = [_get_value(s) for s in state_steps]
        sizes = [lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) for t in ts]
        bounds = [adabound_bounds(final_lr, gamma, t, lr, base_lr) for t in ts]
        lowers, uppers = [b[0] for b in bounds], [b[1] for b in bounds]
    # At most one list of temporaries at a time (torch's foreach budget): weight decay goes in
    # place into the negated gradients when there are any, and they are freed before the step
    # sizes are made.
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        if maximize:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    del grads
    second = exp_avg_sqs
    if amsbound:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        second = max_exp_avg_sqs
    step = torch._foreach_sqrt(second)
    torch._foreach_add_(step, eps)
    torch._foreach_reciprocal_(step)
    torch._foreach_mul_(step, sizes)
    if gamma > 0:
        if capturable:
            torch._foreach_maximum_(step, lowers)
            torch._foreach_minimum_(step, uppers)
        else:
            torch._foreach_clamp_min_(step, lowers)
            torch._foreach_clamp_max_(step, uppers)
    torch._foreach_mul_(step, exp_avgs)
    torch._foreach_sub_(params, step)


def _validate(group: dict[str, Any]) -> None:
    lr = group["lr"]
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
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
    if group["fused"] and group["foreach"]:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
