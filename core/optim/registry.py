"""Build an optimizer for a model by name, from the spec-level hyperparameters.

``build(name, model, lr=None, **hparams)`` accepts exactly the names and hyperparameters of
``core.spec.OPTIMIZERS`` (``beta1``/``beta2`` become torch's ``betas``; missing ones take the
spec's defaults; ``lr=None`` takes ``core.spec.DEFAULT_LR[name]``). It splits the model's
parameters into two groups:

- ``{"name": "binary", "binary": True, "latent_clip": 1.0}``: the binary layers' latent weights
  (``core.nn.binary_weights(model)``);
- ``{"name": "real"}``: everything else (BatchNorm, biases, the real first and last layers).

The BinaryConnect latent clip to ``[-1, 1]`` is part of the optimizer that ``build`` returns:
BAMSProd applies its group's ``latent_clip`` itself, and for AdaBound/AMSBound, Adam, AMSGrad and
SGD ``build`` registers a step post-hook that clips every group marked ``binary`` to its
``latent_clip``. A trainer therefore only calls ``optimizer.step()``. Bop holds its binary
weights at exactly ``+-1`` and needs no clip. ``clip_latent_weights(model)`` does the same clip
by hand, for optimizers built some other way.

Adam, AMSGrad and SGD are torch's own classes. Bop is a :class:`~core.optim.bop.CaseOptimizer`:
Bop for the binary weights, ``torch.optim.Adam(lr)`` for the rest (larq's recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from bamsprod.core.nn import binary_weights
from bamsprod.core.optim.adabound import AdaBound
from bamsprod.core.optim.bamsprod import BAMSProd
from bamsprod.core.optim.bop import Bop, CaseOptimizer
from bamsprod.core.spec import DEFAULT_LR, resolve_hparams

__all__ = ["OPTIMIZER_NAMES", "build", "clip_latent_weights", "param_groups"]

LATENT_CLIP = 1.0

Groups = list[dict[str, Any]]


def param_groups(model: nn.Module, latent_clip: float | None = LATENT_CLIP) -> Groups:
    """The model's trainable parameters as ``[real group, binary group]`` (empty ones dropped)."""
    binary = [p for p in binary_weights(model).values() if p.requires_grad]
    binary_ids = {id(p) for p in binary}
    real = [p for p in model.parameters() if p.requires_grad and id(p) not in binary_ids]
    groups: Groups = []
    if real:
        groups.append({"name": "real", "params": real})
    if binary:
        groups.append(
            {"name": "binary", "params": binary, "binary": True, "latent_clip": latent_clip}
        )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


@torch.no_grad()
def clip_latent_weights(model: nn.Module, value: float = LATENT_CLIP) -> None:
    """Clip every binary layer's latent weight to ``[-value, value]`` in place (BinaryConnect)."""
    for p in binary_weights(model).values():
        p.clamp_(-value, value)


def _clip_binary_groups(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    with torch.no_grad():
        for group in optimizer.param_groups:
            clip = group.get("latent_clip")
            if group.get("binary") and clip is not None:
                for p in group["params"]:
                    p.clamp_(-clip, clip)


def _with_latent_clip(optimizer: Optimizer) -> Optimizer:
    optimizer.register_step_post_hook(_clip_binary_groups)
    return optimizer


def _betas(h: dict[str, Any]) -> tuple[float, float]:
    return (h["beta1"], h["beta2"])


def _bamsprod(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return BAMSProd(
        groups,
        lr=lr,
        betas=_betas(h),
        eps=h["eps"],
        gamma=h["gamma"],
        kappa=h["kappa"],
        weight_decay=h["weight_decay"],
    )


def _adabound(amsbound: bool) -> Callable[[Groups, float, dict[str, Any]], Optimizer]:
    def make(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
        opt = AdaBound(
            groups,
            lr=lr,
            betas=_betas(h),
            final_lr=h["final_lr"],
            gamma=h["gamma"],
            eps=h["eps"],
            weight_decay=h["weight_decay"],
            amsbound=amsbound,
        )
        return _with_latent_clip(opt)

    return make


def _adam(amsgrad: bool) -> Callable[[Groups, float, dict[str, Any]], Optimizer]:
    def make(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
        opt = torch.optim.Adam(
            groups,
            lr=lr,
            betas=_betas(h),
            eps=h["eps"],
            weight_decay=h["weight_decay"],
            amsgrad=amsgrad,
        )
        return _with_latent_clip(opt)

    return make


def _sgd(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    opt = torch.optim.SGD(
        groups,
        lr=lr,
        momentum=h["momentum"],
        nesterov=h["nesterov"],
        weight_decay=h["weight_decay"],
    )
    return _with_latent_clip(opt)


def _bop(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    optimizers: list[Optimizer] = []
    for group in groups:
        params = group["params"]
        capturable = group.get("capturable", False)
        if group.get("binary"):
            optimizers.append(
                Bop(
                    [{"name": "binary", "params": params, "capturable": capturable}],
                    gamma=h["gamma"],
                    threshold=h["threshold"],
                    lr=lr,
                )
            )
        else:
            optimizers.append(
                torch.optim.Adam(
                    [{"name": "real", "params": params, "capturable": capturable}],
                    lr=lr,
                    betas=_betas(h),
                    eps=h["eps"],
                )
            )
    return CaseOptimizer(*optimizers)


_BUILDERS: dict[str, Callable[[Groups, float, dict[str, Any]], Optimizer]] = {
    "bamsprod": _bamsprod,
    "bop": _bop,
    "adabound": _adabound(amsbound=False),
    "amsbound": _adabound(amsbound=True),
    "adam": _adam(amsgrad=False),
    "amsgrad": _adam(amsgrad=True),
    "sgd": _sgd,
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build(
    name: str,
    model: nn.Module,
    lr: float | None = None,
    *,
    capturable: bool = False,
    **hparams: Any,
) -> Optimizer:
    """The optimizer ``name`` for ``model``, with spec-level hyperparameters.

    The names are those of ``core.spec.OPTIMIZERS`` (a test checks the two agree).

    Args:
        name: one of :data:`OPTIMIZER_NAMES` (the keys of ``core.spec.OPTIMIZERS``).
        model: the model; its binary layers' latent weights get their own group.
        lr: learning rate; ``None`` takes ``core.spec.DEFAULT_LR[name]``.
        capturable: torch's ``capturable`` for every optimizer built (CUDA graphs).
        **hparams: hyperparameters by their spec names (e.g. ``beta1``, ``gamma``); unknown or
            out-of-range ones raise ``ValueError``.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZER_NAMES)}")
    resolved = resolve_hparams(name, hparams)
    if lr is None:
        lr = DEFAULT_LR[name]
    if not lr >= 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    groups = param_groups(model)
    if capturable:  # a group key: torch's and our optimizers all read it per group
        groups = [{**g, "capturable": True} for g in groups]
    return _BUILDERS[name](groups, float(lr), resolved)
