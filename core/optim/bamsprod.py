r"""BAMSProd: AMSGrad with a second moment projected into bounds set by the quantization error.

The algorithm (stated in full in ``docs/algorithm.md``), per parameter tensor ``p`` with
gradient ``g`` at step ``t = 1, 2, ...``::

    g   <- -g if maximize                            (torch's convention)
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
optimizer is exactly AMSGrad (``torch.optim.Adam(amsgrad=True)``).

Four implementations of the same maths (see :mod:`core.optim._paths`), chosen per group:

- :func:`_single_tensor_bamsprod`, the readable per-tensor loop: the reference, and what
  ``torch.compile`` traces (the ``compiled`` path, the default on CUDA).
- :func:`_multi_tensor_bamsprod`, ``torch._foreach_*`` ops over all tensors, the per-tensor sums
  as small device tensors; no host sync. Any device.
- :func:`_fused_bamsprod`, the CPU kernel ``csrc/bamsprod_fused.cpp`` (the default on CPU): two
  passes per tensor. Pass 1 updates ``m``, ``v``, ``v_max`` and sums (in double) ``v_max`` and,
  for binary groups, the per-channel ``S_c = sum|p_c|`` and ``||p||^2``: with ``a_c = S_c / n_c``,
  ``sum_c ||p_c - a_c sign(p_c)||^2 = ||p||^2 - sum_c S_c^2 / n_c``, so ``e(p)`` needs no pass of
  its own. Pass 2 projects ``v^``, steps ``p`` and clips it. It registers a fake kernel, so
  Dynamo traces it inside a compiled step.

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
from torch.optim.optimizer import (
    ParamsT,
    _get_value,
    _to_scalar,
    _use_grad_for_differentiable,
)

from bamsprod.core.metrics import quantization_error_tensor
from bamsprod.core.optim import _fused, _moments, _paths

__all__ = ["BAMSProd", "bamsprod", "bound_schedule"]

_FUSED_DTYPES = (torch.float32, torch.float64)


def bound_schedule(target: Any, gamma: float, step: Any) -> tuple[Any, Any]:
    """The bounds ``(lower, upper)`` after ``step`` steps, converging to ``target``.

    ``lower = target * (1 - 1 / (gamma * step + 1))`` (0 at step 0, non-decreasing) and
    ``upper = target * (1 + 1 / (gamma * step))`` (+inf at step 0, non-increasing): AdaBound's
    bound shape, which BAMSProd applies to the second moment with ``target = zeta``.
    ``target`` and ``step`` may be floats or tensors.
    """
    gt = gamma * step
    lower = target * (1.0 - 1.0 / (gt + 1.0))
    if isinstance(gt, Tensor):
        upper = target * (1.0 + 1.0 / gt)  # 1 / 0 = inf for tensors
    elif gt > 0:
        upper = target * (1.0 + 1.0 / gt)
    else:
        upper = torch.full_like(target, math.inf) if isinstance(target, Tensor) else math.inf
    return lower, upper


def _validate(group: dict[str, Any]) -> None:
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if group["foreach"] and not group["capturable"]:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
    elif not isinstance(lr, int | float):
        raise ValueError(f"Invalid learning rate: {lr!r}")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas} (expected two numbers)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    if not 0.0 <= wd:
        raise ValueError(f"Invalid weight_decay value: {wd}")
    for name in ("gamma", "kappa"):
        if not 0.0 <= group[name] < math.inf:
            raise ValueError(f"Invalid {name} value: {group[name]}")
    if not isinstance(group["binary"], bool):
        raise ValueError(f"Invalid binary value: {group['binary']!r} (expected True or False)")
    clip = group["latent_clip"]
    if clip is not None and not clip > 0:
        raise ValueError(f"Invalid latent_clip value: {clip} (expected None or > 0)")
    if group["fused"] and group["foreach"]:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if group["fused"] and group["differentiable"]:
        raise RuntimeError("`fused` does not support `differentiable`")


@_paths.document_flags(
    fused="The fast paths: the C++ kernel on CPU (float32/float64; built on first use and "
    "cached; where it can't be built, one warning and the foreach path) and the compiled path "
    "(Inductor, Triton kernels) on CUDA.",
)
class BAMSProd(_paths.PathOptimizer):
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

    See the module docstring (and ``docs/algorithm.md``) for the full algorithm.

    Args:
        params: parameters or param groups. Put binary layers' latent weights in a group with
            ``binary=True, latent_clip=1.0`` (``core.optim.build`` does this).
        lr: learning rate ``eta`` (a float or a 1-element tensor), read from
            ``param_groups[i]["lr"]`` every step.
        betas: ``(beta1, beta2)``, the moment decay rates.
        eps: added to the denominator.
        gamma: bound convergence speed; ``0`` disables the projection (plain AMSGrad).
        kappa: how much the quantization error ``e`` widens the target ``zeta``.
        weight_decay: L2 penalty added to the gradient (as Adam, not AdamW).
        binary: per group; measure ``e(p)`` on the group's tensors (else ``e = 0``).
        latent_clip: per group; with ``binary=True``, clip ``p`` to ``[-latent_clip,
            latent_clip]`` after the step. ``None``: no clip.
        {flags}

    State per parameter: ``step`` (a 0-d tensor), ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``.

    Reference: https://arxiv.org/abs/2009.13799
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        gamma: float = 1e-3,
        kappa: float = 1.0,
        weight_decay: float = 0.0,
        binary: bool = False,
        latent_clip: float | None = None,
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
            "eps": eps,
            "gamma": gamma,
            "kappa": kappa,
            "weight_decay": weight_decay,
            "binary": binary,
            "latent_clip": latent_clip,
            "foreach": foreach,
            "maximize": maximize,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validating its hyperparameters (group overrides included). The
        parameters ``fused=True`` needs are checked at the step, as torch does, so a model made
        on the meta device and materialised with ``to_empty()`` trains."""
        _validate({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"gamma": 1e-3, "kappa": 1.0, "binary": False, "latent_clip": None}

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
        # Dynamo runs this method eagerly and reads back the lists it was given, so it keeps
        # torch's signature: the lists as separate arguments.
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
                state["step"] = _paths.new_step(p, on_device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif not torch.is_tensor(state["step"]):  # set by hand, or an old state dict
                _paths.tensor_steps([state])
            if group["differentiable"] and state["step"].requires_grad:
                raise RuntimeError(
                    "`requires_grad` is not supported for `step` in differentiable mode"
                )
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            if group["fused"]:
                _check_fused([p for p in group["params"] if p.grad is not None])
            path = self._path(group, ("cpu",) if _fused_ok(group["params"]) else ())
            lists: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
            on_device = group["capturable"] or path == "compiled"
            self._init_group(group, *lists, on_device)
            if not lists[0]:
                continue
            beta1, beta2 = group["betas"]
            path = _step(
                path,
                *lists,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                gamma=group["gamma"],
                kappa=group["kappa"],
                weight_decay=group["weight_decay"],
                binary=group["binary"],
                latent_clip=group["latent_clip"],
                maximize=group["maximize"],
                capturable=group["capturable"],
                differentiable=group["differentiable"],
            )
            self._paths_taken.add(path)
        return loss


def _fused_ok(params: list[Tensor]) -> bool:
    """Whether every tensor is one the CPU kernel takes (float32/float64 on the CPU; a
    non-contiguous one is stepped by the foreach path inside :func:`_fused_bamsprod`)."""
    return all(p.device.type == "cpu" and p.dtype in _FUSED_DTYPES for p in params)


def _check_fused(params: list[Tensor]) -> None:
    """``fused=True`` takes float32/float64 CPU tensors (the kernel) or CUDA ones (compiled)."""
    for p in params:
        if not (_fused_ok([p]) or (p.device.type == "cuda" and _paths.has_triton())):
            raise RuntimeError(
                "BAMSProd `fused=True` requires float32 or float64 CPU parameters (or CUDA "
                f"with Triton), got {p.dtype} on {p.device}; use foreach=True instead"
            )


def bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    maximize: bool = False,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
) -> None:
    """Functional BAMSProd: update ``params``, the state tensors and ``state_steps`` in place.

    ``state_steps`` holds each tensor's step count before this step (0-d tensors, incremented
    here, as torch's functional optimizers do). ``foreach``/``fused`` choose the path as in
    :class:`BAMSProd`.
    """
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if not all(isinstance(t, Tensor) for t in state_steps):
        raise RuntimeError("API has changed, `state_steps` argument must contain a list of tensors")
    path = _paths.choose(
        params,
        foreach=foreach,
        fused=fused,
        differentiable=differentiable,
        fused_devices=("cpu",) if _fused_ok(params) else (),
    )
    _step(
        path,
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
        maximize=maximize,
        capturable=capturable,
        differentiable=differentiable,
    )


def _step(path: str, *lists: list[Tensor], **hyper: Any) -> str:
    """Run one group's step on ``path``; returns the path that ran (after any fallback)."""
    if path == "compiled":
        return _paths.run_compiled(_single_tensor_bamsprod, _multi_tensor_bamsprod, *lists, **hyper)
    if path == "fused":
        return _fused_bamsprod(*lists, **hyper)
    if path == "foreach":
        _multi_tensor_bamsprod(*lists, **hyper)
    else:
        _single_tensor_bamsprod(*lists, **hyper)
    return path


def _single_tensor_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> None:
    """The reference: the algorithm's step, one tensor at a time, line for line.

    Step-dependent factors are Python floats in plain eager mode (``step`` lives on the CPU
    there) and tensors when capturable, differentiable or compiled, so nothing syncs.
    """
    for i, p in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, max_exp_avg_sq, step_t = (
            exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i], state_steps[i]
        )  # fmt: skip
        step_t += 1
        # a clone when differentiable: a tensor beta's power keeps t for its gradient, and
        # the next step increments step_t in place
        t = step_t.clone() if differentiable else step_t if capturable else _get_value(step_t)
        # Autograd needs p as it was before the in-place update below (differentiable).
        p_before = p.clone() if differentiable else p
        # e(p) is measured on p before this update; with autograd through it (the metric's
        # version detaches p) when differentiable.
        e = None
        if binary and gamma > 0:
            e = _quantization_error(p_before) if differentiable else quantization_error_tensor(p)
        if weight_decay != 0:
            grad = _moments.decay(grad, p_before, weight_decay)
        _moments.update_moments(exp_avg, exp_avg_sq, grad, beta1, beta2)
        if differentiable:
            # from clones, and v_max read from a new tensor: autograd keeps no state tensor that
            # the next step changes in place, so backpropagating through several steps works
            v_max = torch.maximum(max_exp_avg_sq.clone(), exp_avg_sq.clone())
            max_exp_avg_sq.copy_(v_max)
        else:
            v_max = torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v_hat = v_max / (1 - beta2**t)
        if gamma > 0:
            zeta = v_hat.mean()
            if e is not None:
                zeta = zeta * (1 + kappa * e)
            lower, upper = bound_schedule(zeta, gamma, t)
            v_hat = torch.clamp(v_hat, lower, upper)
        denom = v_hat.sqrt() + eps
        step_size = lr / (1 - beta1**t)
        if isinstance(step_size, Tensor):
            m = exp_avg.clone() if differentiable else exp_avg
            p.sub_(m / denom * step_size)
        else:
            p.addcdiv_(exp_avg, denom, value=-step_size)
        if binary and latent_clip is not None:
            p.clamp_(-latent_clip, latent_clip)


def _quantization_error(w: Tensor) -> Tensor:
    """``e(w)`` as :func:`core.metrics.quantization_error_tensor` computes it, but with autograd
    through ``w`` (``sign`` is piecewise constant: the gradient flows through ``a_c`` and the
    norms), for ``differentiable=True``."""
    flat = w.reshape(1, -1) if w.dim() <= 1 else w.reshape(w.shape[0], -1)
    total = flat.pow(2).sum()
    sign = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype)
    resid = (flat - flat.abs().mean(dim=1, keepdim=True) * sign).pow(2).sum()
    return torch.where(total > 0, resid / total.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)


def _quantization_errors(params: list[Tensor]) -> Tensor:
    """``e(p)`` of every tensor as one 1-d tensor: two read passes per tensor, no host sync.

    With ``S_c = sum|w_c|`` over the ``n_c`` elements of channel ``c``, the residual is
    ``sum_c ||w_c - a_c sign(w_c)||^2 = ||w||^2 - sum_c S_c^2 / n_c``, so
    ``e = 1 - (sum_c S_c^2 / n_c) / ||w||^2`` (0 when ``||w|| = 0``).
    """
    l1_sq, l2_sq = [], []
    for p in params:
        flat = p.reshape(p.shape[0] if p.dim() > 1 else 1, -1)
        s = flat.abs().sum(dim=1)  # S_c: abs + row sums beat vector_norm(ord=1) on CPU
        l1_sq.append(torch.linalg.vecdot(s, s) / max(flat.shape[1], 1))
        w = flat.reshape(-1)
        l2_sq.append(torch.linalg.vecdot(w, w))
    l1 = torch.stack(l1_sq)
    l2 = torch.stack(l2_sq)
    ratio = l1.div_(l2)
    return torch.where(l2 > 0, (1 - ratio).clamp_(min=0), 0.0)


# The foreach path works through a group's tensors in buckets of at most this many elements (a
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


def _step_factors(
    steps: list[Tensor], numels: list[int], *, lr: float | Tensor, beta1: float, beta2: float,
    eps: float, gamma: float, capturable: bool,
) -> tuple[list[Any], list[Any], list[Any], list[Any]]:  # fmt: skip
    """Per tensor: the step size ``-lr sqrt(bc2) / bc1``, ``eps sqrt(bc2)``, and the bounds'
    coefficients on ``sum(v_max)`` (``(1 - 1/(gt+1)) / n`` and ``(1 + 1/(gt)) / n``).

    Python floats from CPU steps; 0-d tensors on the steps' device when ``capturable``.
    """
    if capturable:
        bc1 = torch._foreach_pow(beta1, steps)
        torch._foreach_sub_(bc1, 1)  # bc1 - 1 = -(1 - beta1^t)
        bc2_sqrt = torch._foreach_pow(beta2, steps)
        torch._foreach_neg_(bc2_sqrt)
        torch._foreach_add_(bc2_sqrt, 1)
        torch._foreach_sqrt_(bc2_sqrt)
        sizes = torch._foreach_div(bc2_sqrt, bc1)
        torch._foreach_mul_(sizes, lr)
        epss = torch._foreach_mul(bc2_sqrt, eps)
        gt = torch._foreach_mul(steps, gamma)
        uppers = torch._foreach_reciprocal(gt)
        torch._foreach_add_(uppers, 1)  # 1 + 1 / (gt)
        lowers = torch._foreach_reciprocal(uppers)  # gt / (gt + 1) = 1 - 1 / (gt + 1)
        inv_n = [1.0 / n for n in numels]
        torch._foreach_mul_(uppers, inv_n)
        torch._foreach_mul_(lowers, inv_n)
        return sizes, epss, lowers, uppers
    lr = _get_value(lr)
    ts = [_get_value(s) for s in steps]
    roots = [math.sqrt(1 - beta2**t) for t in ts]
    sizes = [-lr * r / (1 - beta1**t) for r, t in zip(roots, ts, strict=True)]
    bounds = [bound_schedule(1.0 / n, gamma, t) for n, t in zip(numels, ts, strict=True)]
    return sizes, [eps * r for r in roots], [b[0] for b in bounds], [b[1] for b in bounds]


def _multi_tensor_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> None:
    """The foreach path: the same step with ``torch._foreach_*`` ops over buckets of tensors.

    The projection is applied to ``v_max`` directly with bounds scaled by ``1 - beta2^t``, and
    the bias correction of ``v`` is folded into the step size, as torch's Adam does:
    ``m / (sqrt(v_max / bc2) + eps) = sqrt(bc2) * m / (sqrt(v_max) + eps * sqrt(bc2))``.
    Per-tensor sums stay on the device as small tensors.
    """
    if differentiable:
        raise RuntimeError("the foreach path does not support differentiable=True")
    torch._foreach_add_(state_steps, 1)
    for idx in _buckets(params, _BUCKET_NUMEL):
        dev_params = [params[i] for i in idx]
        dev_grads = [grads[i] for i in idx]
        dev_exp_avgs = [exp_avgs[i] for i in idx]
        dev_exp_avg_sqs = [exp_avg_sqs[i] for i in idx]
        dev_max = [max_exp_avg_sqs[i] for i in idx]
        sizes, epss, lower_c, upper_c = _step_factors(
            [state_steps[i] for i in idx],
            [max(p.numel(), 1) for p in dev_params],
            lr=lr, beta1=beta1, beta2=beta2, eps=eps, gamma=gamma, capturable=capturable,
        )  # fmt: skip

        errors = _quantization_errors(dev_params) if binary and gamma > 0 else None
        # At most one list of temporaries at a time (torch's foreach budget): weight decay goes
        # in place into the negated gradients when there are any.
        if maximize:
            dev_grads = torch._foreach_neg(dev_grads)
        if weight_decay != 0:
            if maximize:
                torch._foreach_add_(dev_grads, dev_params, alpha=weight_decay)
            else:
                dev_grads = torch._foreach_add(dev_grads, dev_params, alpha=weight_decay)
        torch._foreach_lerp_(dev_exp_avgs, dev_grads, 1 - beta1)
        torch._foreach_mul_(dev_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(dev_exp_avg_sqs, dev_grads, dev_grads, 1 - beta2)
        torch._foreach_maximum_(dev_max, dev_exp_avg_sqs)
        del dev_grads

        if gamma > 0:
            # Bounds on v_max (= bounds on v^ times bc2): zeta * bc2 = sum(v_max) / n * (1 + k e).
            # torch.sum's cascade summation: _foreach_norm(ord=1) drifts from it on big tensors
            sums = torch.stack([v.sum() for v in dev_max])
            if errors is not None:
                sums.mul_(errors.mul_(kappa).add_(1))
            sums = sums.unbind(0)
            lowers = torch._foreach_mul(sums, lower_c)
            uppers = torch._foreach_mul(sums, upper_c)
            # Two one-sided clamps: torch.clamp with tensor bounds is not vectorised on CPU.
            denom = torch._foreach_maximum(dev_max, lowers)
            torch._foreach_minimum_(denom, uppers)
            torch._foreach_sqrt_(denom)
        else:
            denom = torch._foreach_sqrt(dev_max)
        torch._foreach_add_(denom, epss)
        if capturable:
            torch._foreach_div_(denom, sizes)
            torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom)
        else:
            torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom, sizes)
        del denom
        if binary and latent_clip is not None:
            torch._foreach_clamp_min_(dev_params, -latent_clip)
            torch._foreach_clamp_max_(dev_params, latent_clip)


def _assume_constant_result(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What ``torch.compiler.assume_constant_result`` does (it marks ``fn``; Dynamo reads the
    mark when it traces a call), without importing Dynamo: that import pulls in Inductor, 0.7 s
    and a slower eager step afterwards, in every process that imports this module.
    ``tests/test_optim_torch_compiled.py`` checks the mark is torch's."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@_assume_constant_result
def _kernel_loaded() -> bool:
    """Load the kernel (on first use) and say whether it is there.

    Dynamo calls this eagerly while it traces a step and keeps the answer as a constant: the
    loader takes a lock, a context manager a ``fullgraph`` compile cannot trace, so the first
    thing a process does with the kernel may be a compile. Its ``load()`` after this one only
    reads the loaded ops.
    """
    return _fused.load() is not None


def _fused_bamsprod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    gamma: float,
    kappa: float,
    weight_decay: float,
    binary: bool,
    latent_clip: float | None,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> str:
    """The fused CPU path: two passes per tensor in one C++ call for the whole group.

    Pass 1 updates ``m``, ``v``, ``v_max`` and sums, in double, ``v_max`` and (binary groups)
    the per-channel ``S_c = sum|p_c|`` and ``||p||^2``; then ``e = max(0, 1 - sum_c S_c^2 / n_c
    / ||p||^2)``, ``zeta`` and the bounds; pass 2 clamps ``v^``, steps ``p`` and clips it.
    Threads: ``torch.get_num_threads()``; results do not depend on the thread count. When the
    kernel cannot be built, the foreach path.
    """
    hyper = dict(
        beta1=beta1, beta2=beta2, eps=eps, gamma=gamma, kappa=kappa, weight_decay=weight_decay,
        binary=binary, latent_clip=latent_clip,
    )  # fmt: skip
    ops = _fused.load() if _kernel_loaded() else None
    if ops is None:
        _multi_tensor_bamsprod(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
            maximize=maximize, capturable=capturable, differentiable=differentiable, **hyper,
        )  # fmt: skip
        return "foreach"
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        # As torch's own in-place ops refuse (the kernel writes through raw pointers).
        raise RuntimeError(
            "a leaf Variable that requires grad is being used in an in-place operation: call "
            "BAMSProd's functional step under torch.no_grad() (Optimizer.step does)"
        )
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    strided = [i for i, p in enumerate(params) if not p.is_contiguous()]
    if strided:  # the kernel walks memory linearly: these take the foreach path
        take = [i for i in range(len(params)) if i not in set(strided)]
        _multi_tensor_bamsprod(
            *([ts[i] for i in strided] for ts in lists), lr=lr, maximize=maximize,
            capturable=capturable, differentiable=differentiable, **hyper,
        )  # fmt: skip
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps = (
            [ts[i] for i in take] for ts in lists
        )
        if not params:
            return "foreach"
    if maximize:
        grads = torch._foreach_neg(grads)
    grads = [g.contiguous() for g in grads]
    torch._foreach_add_(state_steps, 1)
    # A tensor lr goes in as a tensor (``step.tensor_lr``): compiled, it stays a graph input.
    step = ops.step.tensor_lr if isinstance(lr, Tensor) else ops.step.default
    step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, **hyper)
    return "fused"
