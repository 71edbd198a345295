r"""Bop, the binary optimizer (Helwegen et al., NeurIPS 2019).

Bop keeps no latent weights: a binary weight is held at ``+-1`` and flipped when an exponential
moving average of its gradient is strong enough and points the same way as the weight::

    m <- (1 - gamma) * m + gamma * g
    w <- -w   where |m| >= threshold and sign(m) == sign(w)     (sign(0) = +1)

Only binary layers' weights belong in Bop. Everything else (BatchNorm, the real first and last
layers) goes to another optimizer, Adam in the paper, and
:class:`~core.optim.case_optimizer.CaseOptimizer` joins the two into one optimizer. Ways to use
it, best first:

1. ``core.optim.build("bop", model)``: binary latent weights to Bop, the rest to Adam.
2. ``CaseOptimizer(Bop(binary_params), torch.optim.Adam(other_params, lr=0.01))``.
3. ``Bop(params)`` alone, when every parameter is a binary weight.

Bop binarizes its parameters in place when they are added (``w <- sign(w)``, ``sign(0) = +1``)
and every step writes ``+-1`` again, so the weights stay exactly binary.

Schedulers: a Bop group has an ``lr`` key only so that LR schedulers can drive it. Bop uses
``gamma * lr / base_lr`` as its adaptivity rate, where ``base_lr`` is the group's ``lr`` when it
was added, so a scheduler that decays ``lr`` by 0.1 decays ``gamma`` by 0.1 (the paper's recipe).

Reference: K. Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural
Network Optimization", NeurIPS 2019, https://arxiv.org/abs/1906.02107; larq's
``larq.optimizers.Bop`` and ``CaseOptimizer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT, _use_grad_for_differentiable

from bamsprod.core.optim import _paths

__all__ = ["Bop"]


@_paths.document_flags(
    foreach="Bop has no foreach path: ``True`` runs the reference too.",
    fused="The fast path: the compiled reference on CUDA; elsewhere the reference.",
)
class Bop(_paths.PathOptimizer):
    r"""Bop: flip a binary weight when its gradient's moving average agrees with its sign.

    .. math::
        m_t = (1-\gamma) m_{t-1} + \gamma g_t, \qquad
        w_t = \begin{cases} -w_{t-1} & |m_t| \ge \tau \text{ and }
              \operatorname{sign}(m_t) = \operatorname{sign}(w_{t-1}) \\
              w_{t-1} & \text{otherwise} \end{cases}

    Args:
        params: binary weights only (held at ``+-1``; they are set to ``sign(w)`` here).
        gamma: adaptivity rate ``gamma`` of the gradient average.
        threshold: flip threshold ``tau``.
        lr: a scheduler handle: the rate used is ``gamma * lr / base_lr`` (see module docs).
        {flags}

    State per parameter: ``step`` (a 0-d tensor), ``exp_avg`` (the average ``m``).
    """

    def __init__(
        self,
        params: ParamsT,
        gamma: float = 1e-4,
        threshold: float = 1e-8,
        lr: float | Tensor = 1.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "gamma": gamma,
            "threshold": threshold,
            "lr": lr,
            "foreach": foreach,
            "maximize": maximize,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated), record its ``base_lr`` and binarize its weights."""
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("base_lr", float(group["lr"]))
        for p in group["params"]:
            binary = torch.where(p.detach() >= 0, 1.0, -1.0)
            # differentiable: autograd records that p no longer depends on its old value
            # (sign has zero derivative); a leaf is simply set
            with torch.set_grad_enabled(group["differentiable"] and not p.is_leaf):
                p.copy_(binary)

    def group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"lr": 1.0, "base_lr": group.get("lr", 1.0)}

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        steps: list[Tensor],
        on_device: bool,
    ) -> None:
        # Keeps torch's signature (the lists as separate arguments): Dynamo runs it eagerly.
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    "Bop does not support sparse gradients, please use dense gradients"
                )
            state = self.state[p]
            if len(state) == 0:
                state["step"] = _paths.new_step(p, on_device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif not torch.is_tensor(state["step"]):
                _paths.tensor_steps([state])
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            steps.append(state["step"])

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one Bop step; ``closure`` re-evaluates the model and returns the loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            path = self._path(group)
            path = "compiled" if path == "compiled" else "single_tensor"
            lists: tuple[list[Tensor], ...] = ([], [], [], [])
            self._init_group(group, *lists, group["capturable"] or path == "compiled")
            if not lists[0]:
                continue
            base_lr = group["base_lr"]
            hyper = {
                "gamma": group["gamma"] * (group["lr"] / base_lr if base_lr != 0 else 0.0),
                "threshold": group["threshold"],
                "maximize": group["maximize"],
            }
            if path == "compiled":
                path = _paths.run_compiled(_single_tensor_bop, _single_tensor_bop, *lists, **hyper)
                path = "compiled" if path == "compiled" else "single_tensor"
            else:
                _single_tensor_bop(*lists, **hyper, differentiable=group["differentiable"])
            self._paths_taken.add(path)
        return loss


def _single_tensor_bop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    state_steps: list[Tensor],
    *,
    gamma: float | Tensor,
    threshold: float,
    maximize: bool,
    differentiable: bool = False,
) -> None:
    """One Bop step per tensor, in place. Each ``p`` holds ``+-1`` and still does afterwards.

    The flip is ``p <- p * (1 - 2 flip)`` with a 0/1 mask that is piecewise constant in ``m``
    and ``p``: with ``differentiable``, autograd sees the step's exact Jacobian (``+-1`` on the
    weight, ``1 - gamma`` and ``gamma`` on the average and the gradient), and the mask is made
    from detached tensors, so nothing it read is needed again after ``p`` changes.
    """
    for p, grad, exp_avg, step_t in zip(params, grads, exp_avgs, state_steps, strict=True):
        step_t += 1
        # m <- (1 - gamma) m + gamma g, as tensor-scalar products: under torch.compile a
        # Scalar argument (lerp's weight) would bake the lr-dependent gamma into the graph.
        exp_avg.mul_(1 - gamma).add_((-grad if maximize else grad) * gamma)
        m, w = (exp_avg.detach(), p.detach()) if differentiable else (exp_avg, p)
        if threshold > 0:
            # With p = +-1, m p = +-|m|: "|m| >= tau and sign(m) = sign(p)" is exactly m p >= tau
            # (m = 0 gives 0 < tau). Float ops only: bool tensors are slow on CPU.
            flip = torch.mul(m, w).ge_(threshold)  # 1.0 where the weight flips, else 0.0
        else:  # tau = 0: m = 0 must flip only w = +1 (sign(0) = +1), so spell the rule out
            flip = ((m >= 0) == (w >= 0)).to(p.dtype)
        p.mul_(flip.mul_(-2.0).add_(1.0))


def _validate(group: dict[str, Any]) -> None:
    lr = group["lr"]
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= group["gamma"] <= 1.0:
        raise ValueError(f"Invalid gamma value: {group['gamma']} (expected 0 <= gamma <= 1)")
    if not 0.0 <= group["threshold"]:
        raise ValueError(f"Invalid threshold value: {group['threshold']}")
    if not 0.0 <= group["lr"]:
        raise ValueError(f"Invalid learning rate: {group['lr']}")
