"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms", arXiv:2302.06675), as a plain ``torch.optim.Optimizer``.

For each parameter ``p`` with gradient ``g`` and momentum ``m`` (zero at the start)::

    p <- p * (1 - lr * weight_decay)                 decoupled weight decay
    p <- p - lr * sign(beta1 * m + (1 - beta1) * g)  the update: a sign, like Bop's flips
    m <- beta2 * m + (1 - beta2) * g                 the momentum, updated after

bamsprod reads the hyperparameters from ``__init__``'s signature: ``lr`` (its default, 1e-4,
is the run's default learning rate), ``betas`` (shown as ``beta1`` and ``beta2``) and
``weight_decay``. ``@bamsprod.hparams`` adds their ranges, log scale and help. bamsprod passes
the same parameter groups as to its built-ins (the binary layers' latent weights in a group
marked ``binary``), which Lion treats like any other group, and clips the binary latent weights
to [-1, 1] after each step, as it does for Adam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import bamsprod
import torch
from torch import Tensor


def lion(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], *, lr: float,
         beta1: float, beta2: float, weight_decay: float) -> None:
    """One Lion step over the tensors, in place (the algorithm above)."""
    for p, g, m in zip(params, grads, exp_avgs, strict=True):
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        update = m.mul(beta1).add_(g, alpha=1 - beta1).sign_()
        p.add_(update, alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)


@bamsprod.hparams(
    lr={"lo": 1e-7, "hi": 1.0, "log": True,
        "help": "step size; Lion's is 3-10x smaller than Adam's"},
    beta1={"lo": 0.0, "hi": 0.999999, "help": "gradient/momentum mix inside the sign"},
    beta2={"lo": 0.0, "hi": 0.999999, "help": "momentum decay"},
    weight_decay={"lo": 0.0, "hi": 10.0,
                  "help": "decoupled weight decay: p *= 1 - lr * weight_decay"},
)
class Lion(torch.optim.Optimizer):
    """Lion: the sign of a momentum interpolation, with decoupled weight decay (Chen et al.
    2023)."""

    bamsprod_state_slots = 1  # one momentum tensor per parameter (for bamsprod's memory check)

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
            beta1, beta2 = group["betas"]
            lion(params, grads, exp_avgs, lr=group["lr"], beta1=beta1, beta2=beta2,
                 weight_decay=group["weight_decay"])
        return loss
