r"""BAMSProd: AMSGrad with a second moment projected into bounds set by the quantization error.

The algorithm, per parameter tensor ``p`` with gradient ``g`` at step ``t = 1, 2, ...`` (the
project's contract, ``shared/spec/bamsprod.md``)::

    g   <- g + weight_decay * p                      (L2, as Adam; skipped when 0)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    v_max <- max(v_max, v)                           (element-wise; AMSGrad)
    v^  <- v_max / (1 - beta2^t)                     (bias correction, as torch's amsgrad)
    if gamma > 0:
        e    <- e(p) if binary else 0                (quantization error of p before this step)
        zeta <- mean(v^) * (1 + kappa * e)           (mean over the tensor's elements)
        c_l  <- zeta * (1 - 1 / (gamma * t + 1))     (non-decreasing from 0)
        c_u  <- zeta * (1 + 1 / (gamma * t))         (non-increasing from +inf)
        v^   <- clamp(v^, c_l, c_u)                  (the projection Pi_[c_l, c_u])
    p   <- p - lr / (1 - beta1^t) * m / (sqrt(v^) + eps)
    if binary and latent_clip is not None:
        p <- clamp(p, -latent_clip, latent_clip)     (BinaryConnect latent clip)

``e(w) = sum_c ||w_c - a_c sign(w_c)||^2 / ||w||^2`` with ``a_c = mean|w_c|`` over output
channels (dim 0); see :func:`core.metrics.quantization_error_tensor`. With ``gamma = 0`` the
optimizer is exactly AMSGrad (``torch.optim.Adam(amsgrad=True)``). Late in training both bounds
reach ``zeta`` and each step tends to ``lr * m^ / sqrt(zeta)``: per-tensor normalised SGD with
momentum whose step shrinks as the quantization error grows.

Three implementations of the same maths, chosen by ``foreach`` and ``fused``:

- :func:`_single_tensor_bamsprod`, a readable per-tensor loop: the reference.
- :func:`_multi_tensor_bamsprod`, the foreach path: ``torch._foreach_*`` ops over all tensors,
  the per-tensor reductions (``mean(v^)``, ``e(p)``) batched into a few small tensors, no host
  sync. Any device.
- :func:`_fused_bamsprod`, the fused CPU path: a C++ kernel (``csrc/bamsprod_fused.cpp``, built
  on first use, see :mod:`core.optim._fused`) that makes two passes over each tensor. Pass 1
  updates ``m``, ``v``, ``v_max`` and sums (into doubles) ``v_max`` and, for binary groups, the
  per-channel ``S_c = sum|p_c|`` and ``||p||^2``; ``e(p)`` then needs no pass of its own, because
  with ``a_c = S_c / n_c``, ``sum_c ||p_c - a_c sign(p_c)||^2 = ||p||^2 - sum_c S_c^2 / n_c``.
  Pass 2 projects ``v^``, steps ``p`` and clips it.

Tests hold both fast paths equal to the reference to 1e-6 relative.

Reference: J. Liu et al., "BAMSProd: A Step towards Generalizing the Adaptive Optimization
Methods to Deep Binary Model", arXiv:2009.13799 (2020), https://arxiv.org/abs/2009.13799.
The exact bound formulas above are this project's choice (AdaBound's bound shape, Luo et al.,
ICLR 2019); the paper does not publish them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from core.metrics import quantization_error_tensor
from core.optim import _fused

__all__ = ["BAMSProd", "bamsprod", "bound_schedule"]


def bound_schedule(target: Any, gamma: float, step: int | float) -> tuple[Any, Any]:
    """The bounds ``(lower, upper)`` after ``step`` steps, converging to ``target``.

    ``lower = target * (1 - 1 / (gamma * step + 1))`` (0 at step 0, non-decreasing) and
    ``upper = target * (1 + 1 / (gamma * step))`` (+inf at step 0, non-increasing): AdaBound's
    bound shape, which BAMSProd applies to the second moment with ``target = zeta``.
    ``target`` may be a float or a tensor (then the bounds are tensors too).
    """
    gt = gamma * step
    lower = target * (1.0 - 1.0 / (gt + 1.0))
    if gt > 0:
        upper = target * (1.0 + 1.0 / gt)
    else:
        upper = torch.full_like(target, math.inf) if isinstance(target, Tensor) else math.inf
    return lower, upper


def _check(name: str, value: Any, ok: bool) -> None:
    if not ok:
        raise ValueError(f"Invalid {name} value: {value}")


def _validate(group: dict[str, Any]) -> None:
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    if not (isinstance(lr, int | float) and 0.0 <= lr):
        raise ValueError(f"Invalid learning rate: {lr}")
    _check("epsilon", eps, 0.0 <= eps)
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas} (expected two numbers)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    _check("weight_decay", wd, 0.0 <= wd)
    _check("gamma", group["gamma"], 0.0 <= group["gamma"] < math.inf)
    _check("kappa", group["kappa"], 0.0 <= group["kappa"] < math.inf)
    if not isinstance(group["binary"], bool):
        raise ValueError(f"Invalid binary value: {group['binary']!r} (expected True or False)")
    clip = group["latent_clip"]
    if clip is not None and not clip > 0:
        raise ValueError(f"Invalid latent_clip value: {clip} (expected None or > 0)")


class BAMSProd(Optimizer):
    r"""BAMSProd (Liu et al., 2020): AMSGrad whose denominator is projected into shrinking bounds.

    .. math::
        \begin{aligned}
        & m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
          v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        & \hat v_t = \max(\hat v_{t-1}^{raw}, v_t) / (1-\beta_2^t), \qquad
          \zeta_t = \operatorname{mean}(\hat v_t)\,(1 + \kappa\, e(p_{t-1})) \\
        & \tilde V_t = \Pi_{[c_l(t), c_u(t)]}(\hat v_t), \quad
          c_l = \zeta_t (1 - \tfrac{1}{\gamma t + 1}),\ c_u = \zeta_t (1 + \tfrac{1}{\gamma t}) \\
        & p_t = p_{t-1} - \frac{\eta}{1-\beta_1^t}\, \frac{m_t}{\sqrt{\tilde V_t} + \epsilon}
        \end{aligned}

    See the module docstring for the full algorithm, including weight decay and the latent clip.

    Args:
        params: parameters or param groups. Put binary layers' latent weights in a group with
            ``binary=True, latent_clip=1.0`` (``core.optim.build`` does this).
        lr: learning rate ``eta``, read from ``param_groups[i]["lr"]`` every step.
        betas: ``(beta1, beta2)``, the moment decay rates.
        eps: added to the denominator.
        gamma: bound convergence speed; ``0`` disables the projection (plain AMSGrad).
        kappa: how much the quantization error ``e`` widens the target ``zeta``.
        weight_decay: L2 penalty added to the gradient (as Adam, not AdamW).
        binary: per group; measure ``e(p)`` on the group's tensors (else ``e = 0``).
        latent_clip: per group; with ``binary=True``, clip ``p`` to ``[-latent_clip,
            latent_clip]`` after the step. ``None``: no clip.
        foreach: ``True`` for the ``torch._foreach_*`` fast path, ``False`` for the per-tensor
            reference; ``None`` picks the fast path when a group's tensors share one device
            and dtype.
        fused: ``True`` for the fused CPU kernel (float32/float64 CPU parameters only, else a
            ``RuntimeError``, as torch's Adam). It is compiled on first use (10-60 s, once per
            machine: the build is cached); if it cannot be built, one warning and the foreach
            path. Non-contiguous tensors take the foreach path too. ``None`` (default)
            or ``False``: the ``foreach`` choice, so that a run's numerics never depend on
            whether a compiler happened to be there.

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``.

    Reference: https://arxiv.org/abs/2009.13799
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        gamma: float = 1e-3,
        kappa: float = 1.0,
        weight_decay: float = 0.0,
        binary: bool = False,
        latent_clip: float | None = None,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "gamma": gamma,
            "kappa": kappa,
            "weight_decay": weight_decay,
            "binary": binary,
            "latent_clip": latent_clip,
            "foreach": foreach,
            "fused": fused,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validating its hyperparameters (group overrides included)."""
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["fused"]:
            if group["foreach"]:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
            for p in group["params"]:
                if p.device.type != "cpu" or p.dtype not in _FUSED_DTYPES:
                    raise RuntimeError(
                        "BAMSProd `fused=True` requires float32 or float64 CPU parameters, got "
                        f"{p.dtype} on {p.device}; use foreach=True (any device) instead"
                    )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("gamma", 1e-3)
            group.setdefault("kappa", 1.0)
            group.setdefault("binary", False)
            group.setdefault("latent_clip", None)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        steps: list[int],
    ) -> None:
        for p in group["params"]:
            if p.grad is None or p.numel() == 0:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    "BAMSProd does not support sparse gradients, please use dense gradients "
                    "(e.g. nn.Embedding(..., sparse=False)) or torch.optim.SparseAdam instead"
                )
            if torch.is_complex(p):
                raise RuntimeError(
                    "BAMSProd does not support complex parameters, please optimize "
                    "torch.view_as_real(p) instead"
                )
            state = self.state[p]
            if len(state) == 0:  # lazy state initialisation
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = int(state["step"]) + 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            max_exp_avg_sqs: list[Tensor] = []
            steps: list[int] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            bamsprod(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                foreach=group["foreach"],
                fused=group["fused"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                gamma=group["gamma"],
                kappa=group["kappa"],
                weight_decay=group["weight_decay"],
                binary=group["binary"],
                latent_clip=group["latent_clip"],
            )
        return loss


def _default_foreach(params: list[Tensor]) -> bool:
    """The fast path when every tensor shares one device and dtype (as torch groups them)."""
    if torch.jit.is_scripting() or not params:
        return False
    first = params[0]
    return all(p.device == first.device and p.dtype == first.dtype for p in params)


def bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
) -> None:
    """Functional BAMSProd: update ``params`` and the state tensors in place.

    ``state_steps`` holds each tensor's step count ``t`` for this step (already incremented).
    ``fused=True`` takes the fused CPU kernel (see :class:`BAMSProd`), else ``foreach`` picks.
    """
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if foreach is None:
        foreach = _default_foreach(params)
    if fused:
        func = _fused_bamsprod
    else:
        func = _multi_tensor_bamsprod if foreach else _single_tensor_bamsprod
    func(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        gamma=gamma,
        kappa=kappa,
        weight_decay=weight_decay,
        binary=binary,
        latent_clip=latent_clip,
    )


def _single_tensor_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
) -> None:
    """The reference: the spec's step, one tensor at a time, line for line."""
    for p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, t in zip(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, strict=True
    ):
        # e(p) is measured on p before this update.
        e = quantization_error_tensor(p) if binary and gamma > 0 else None
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        v_hat = max_exp_avg_sq / bias_correction2
        if gamma > 0:
            zeta = v_hat.mean()
            if e is not None:
                zeta = zeta * (1 + kappa * e)
            lower, upper = bound_schedule(zeta, gamma, t)
            v_hat.clamp_(min=lower, max=upper)
        denom = v_hat.sqrt_().add_(eps)
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
        if binary and latent_clip is not None:
            p.clamp_(-latent_clip, latent_clip)


def _quantization_errors(params: list[Tensor]) -> Tensor:
    """``e(p)`` of every tensor as one 1-d tensor: two read passes per tensor, no host sync.

    With ``S_c = sum|w_c|`` over the ``n_c`` elements of channel ``c``, the residual is
    ``sum_c ||w_c - a_c sign(w_c)||^2 = ||w||^2 - sum_c S_c^2 / n_c``, so
    ``e = 1 - (sum_c S_c^2 / n_c) / ||w||^2`` (0 when ``||w|| = 0``).
    """
    l1_sq, l2_sq, n_c = [], [], []
    for p in params:
        flat = p.reshape(p.shape[0] if p.dim() > 1 else 1, -1)
        s = flat.abs().sum(dim=1)  # S_c: abs + row sums beat vector_norm(ord=1) on CPU
        l1_sq.append(torch.linalg.vecdot(s, s))
        w = flat.reshape(-1)
        l2_sq.append(torch.linalg.vecdot(w, w))
        n_c.append(max(flat.shape[1], 1))
    l1 = torch.stack(l1_sq)
    l2 = torch.stack(l2_sq)
    ratio = l1.div_(torch.tensor(n_c, dtype=l1.dtype, device=l1.device)).div_(l2)
    return torch.where(l2 > 0, (1 - ratio).clamp_(min=0), 0.0)


# The fast path works through a group's tensors in buckets of at most this many elements (a
# bigger tensor is a bucket of its own), so its temporaries (the denominators, the decayed
# gradients) are never allocated for the whole model at once: on CPU, freeing tens of MB per
# step hands the pages back to the OS and page-faults them in again on the next step.
_BUCKET_NUMEL = 1 << 22


def _buckets(tensors: list[Tensor], max_numel: int) -> list[list[int]]:
    """Consecutive indices of ``tensors`` grouped by device and dtype, ``max_numel`` at most."""
    out: list[list[int]] = []
    open_: dict[tuple[torch.device, torch.dtype], tuple[list[int], int]] = {}
    for i, t in enumerate(tensors):
        key = (t.device, t.dtype)
        current, size = open_.get(key, ([], 0))
        if current and size + t.numel() > max_numel:
            out.append(current)
            current, size = [], 0
        open_[key] = (current + [i], size + t.numel())
    out.extend(current for current, _ in open_.values() if current)
    return out


def _multi_tensor_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
) -> None:
    """The fast path: the same step with ``torch._foreach_*`` ops over buckets of tensors.

    The projection is applied to ``v_max`` directly with bounds scaled by ``1 - beta2^t``, and
    the bias correction of ``v`` is folded into the step size, as torch's Adam does:
    ``m / (sqrt(v_max / bc2) + eps) = sqrt(bc2) * m / (sqrt(v_max) + eps * sqrt(bc2))``.
    Per-tensor reductions (``sum(v_max)``, ``e(p)``) stay on the device as small tensors.
    """
    for idx in _buckets(params, _BUCKET_NUMEL):
        dev_params = [params[i] for i in idx]
        dev_grads = [grads[i] for i in idx]
        dev_exp_avgs = [exp_avgs[i] for i in idx]
        dev_exp_avg_sqs = [exp_avg_sqs[i] for i in idx]
        dev_max = [max_exp_avg_sqs[i] for i in idx]
        steps = [state_steps[i] for i in idx]

        errors = _quantization_errors(dev_params) if binary and gamma > 0 else None
        if weight_decay != 0:
            dev_grads = torch._foreach_add(dev_grads, dev_params, alpha=weight_decay)
        torch._foreach_lerp_(dev_exp_avgs, dev_grads, 1 - beta1)
        torch._foreach_mul_(dev_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(dev_exp_avg_sqs, dev_grads, dev_grads, 1 - beta2)
        torch._foreach_maximum_(dev_max, dev_exp_avg_sqs)
        del dev_grads

        bc2_sqrt = [math.sqrt(1 - beta2**t) for t in steps]
        step_sizes = [-lr * s / (1 - beta1**t) for s, t in zip(bc2_sqrt, steps, strict=True)]
        if gamma > 0:
            # Bounds on v_max (= bounds on v^ times bc2): zeta * bc2 = sum(v_max) / n * (1 + k e).
            coefs = [
                bound_schedule(1.0 / max(p.numel(), 1), gamma, t)
                for p, t in zip(dev_params, steps, strict=True)
            ]
            p0 = dev_params[0]
            coef = torch.tensor(coefs, dtype=p0.dtype, device=p0.device)
            target = torch.stack([v.sum() for v in dev_max])
            if errors is not None:
                target = target * (1 + kappa * errors)
            lowers, uppers = coef.mul_(target.unsqueeze(1)).unbind(1)
            # Two one-sided clamps: torch.clamp with tensor bounds is not vectorised on CPU.
            denom = torch._foreach_maximum(dev_max, lowers.unbind(0))
            torch._foreach_minimum_(denom, uppers.unbind(0))
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(dev_max)
        torch._foreach_add_(denom, [eps * s for s in bc2_sqrt])
        torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom, step_sizes)
        del denom
        if binary and latent_clip is not None:
            for p in dev_params:
                p.clamp_(-latent_clip, latent_clip)


_FUSED_DTYPES = (torch.float32, torch.float64)


def _fusable(*tensors: Tensor) -> bool:
    """Whether the fused kernel takes this parameter: CPU, float32/float64, all contiguous."""
    p = tensors[0]
    return (
        p.device.type == "cpu"
        and p.dtype in _FUSED_DTYPES
        and all(t.dtype == p.dtype and t.is_contiguous() for t in tensors)
    )


def _fused_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
) -> None:
    """The fused CPU path: two passes per tensor in one C++ call for the whole group.

    Pass 1 updates ``m``, ``v``, ``v_max`` and sums, in double, ``v_max`` and (binary groups)
    the per-channel ``S_c = sum|p_c|`` and ``||p||^2``; then ``e = max(0, 1 - sum_c S_c^2 / n_c
    / ||p||^2)``, ``zeta`` and the bounds; pass 2 clamps ``v^``, steps ``p`` and clips it. Threads:
    ``torch.get_num_threads()``; results do not depend on the thread count. Tensors the kernel
    cannot take (non-contiguous), and all of them when the kernel cannot be built, go to
    :func:`_multi_tensor_bamsprod`.
    """
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        gamma=gamma,
        kappa=kappa,
        weight_decay=weight_decay,
        binary=binary,
        latent_clip=latent_clip,
    )
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        # As torch's own in-place ops refuse (the kernel writes through raw pointers).
        raise RuntimeError(
            "a leaf Variable that requires grad is being used in an in-place operation: call "
            "BAMSProd's functional step under torch.no_grad() (Optimizer.step does)"
        )
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
    ops = _fused.load()
    if ops is None:
        _multi_tensor_bamsprod(*lists, state_steps, **hyper)
        return
    rest = [i for i, ts in enumerate(zip(*lists, strict=True)) if not _fusable(*ts)]
    if not rest:
        ops.step(*lists, state_steps, **hyper)
        return
    skip = set(rest)
    take = [i for i in range(len(params)) if i not in skip]
    if take:
        ops.step(*([ts[i] for i in take] for ts in lists), [state_steps[i] for i in take], **hyper)
    _multi_tensor_bamsprod(
        *([ts[i] for i in rest] for ts in lists), [state_steps[i] for i in rest], **hyper
    )
