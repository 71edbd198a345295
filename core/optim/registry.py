"""Build an optimizer for a model by name, from a run config's hyperparameters (``core.config``).

``build(name, model, lr=None, **hparams)`` accepts exactly the names and hyperparameters of the
registry (``core.plugins``; ``core.config.OPTIMIZERS``), the built-ins' and installed plugins'
(``beta1``/``beta2`` become torch's ``betas``; missing ones take their defaults; ``lr=None``
takes ``core.config.DEFAULT_LR[name]``). It splits the model's parameters into two groups:

- ``{"name": "binary", "binary": True, "latent_clip": 1.0}``: the binary layers' latent weights
  (``core.nn.binary_weights(model)``);
- ``{"name": "real"}``: everything else (BatchNorm, biases, the real first and last layers).

The BinaryConnect latent clip to ``[-1, 1]`` is part of the optimizer that ``build`` returns:
BAMSProd applies its group's ``latent_clip`` itself, and for AdaBound/AMSBound, Adam, AMSGrad,
SGD and every plugin optimizer ``build`` registers a step post-hook that clips every group
marked ``binary`` to its ``latent_clip`` (an ``OptimizerSpec`` with ``latent_clip=True``). A
plugin receives these same groups and may ignore the marker. A trainer therefore only calls
``optimizer.step()``. Bop holds its binary weights at exactly ``+-1`` and needs no clip.
``clip_latent_weights(model)`` does the same clip by hand, for optimizers built some other way.

Adam, AMSGrad and SGD are torch's own classes. Bop is a
:class:`~core.optim.case_optimizer.CaseOptimizer`: Bop for the binary weights,
``torch.optim.Adam(lr)`` for the rest (larq's recipe).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from bamsprod.core.config import resolve_hparams
from bamsprod.core.nn import binary_weights
from bamsprod.core.optim.adabound import AdaBound
from bamsprod.core.optim.bamsprod import BAMSProd
from bamsprod.core.optim.bop import Bop
from bamsprod.core.optim.case_optimizer import CaseOptimizer
from bamsprod.core.plugins import registry, resolve

__all__ = ["build", "clip_latent_weights", "param_groups"]  # and OPTIMIZER_NAMES, on use

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


# The built-ins' builders, named by core.plugins.builtin: (groups, lr, resolved hparams).


def build_bamsprod(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return BAMSProd(
        groups,
        lr=lr,
        betas=_betas(h),
        eps=h["eps"],
        gamma=h["gamma"],
        kappa=h["kappa"],
        weight_decay=h["weight_decay"],
    )


def _adabound(groups: Groups, lr: float, h: dict[str, Any], amsbound: bool) -> Optimizer:
    return AdaBound(
        groups,
        lr=lr,
        betas=_betas(h),
        final_lr=h["final_lr"],
        gamma=h["gamma"],
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        amsbound=amsbound,
    )


def build_adabound(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return _adabound(groups, lr, h, amsbound=False)


def build_amsbound(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return _adabound(groups, lr, h, amsbound=True)


def _adam(groups: Groups, lr: float, h: dict[str, Any], amsgrad: bool) -> Optimizer:
    return torch.optim.Adam(
        groups,
        lr=lr,
        betas=_betas(h),
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        amsgrad=amsgrad,
    )


def build_adam(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return _adam(groups, lr, h, amsgrad=False)


def build_amsgrad(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return _adam(groups, lr, h, amsgrad=True)


def build_sgd(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
    return torch.optim.SGD(
        groups,
        lr=lr,
        momentum=h["momentum"],
        nesterov=h["nesterov"],
        weight_decay=h["weight_decay"],
    )


def build_bop(groups: Groups, lr: float, h: dict[str, Any]) -> Optimizer:
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


def __getattr__(name: str) -> Any:
    if name == "OPTIMIZER_NAMES":  # follows the registry: installed plugins included
        return tuple(registry().names("optimizer"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(
    name: str,
    model: nn.Module,
    lr: float | None = None,
    *,
    capturable: bool = False,
    **hparams: Any,
) -> Optimizer:
    """The optimizer ``name`` for ``model``, with spec-level hyperparameters.

    The names are the registry's (``core.plugins``; ``core.config.OPTIMIZERS``), plugins included.

    Args:
        name: one of :data:`OPTIMIZER_NAMES` (the keys of ``core.config.OPTIMIZERS``).
        model: the model; its binary layers' latent weights get their own group.
        lr: learning rate; ``None`` takes ``core.config.DEFAULT_LR[name]``.
        capturable: torch's ``capturable`` for every optimizer built (CUDA graphs).
        **hparams: hyperparameters by their spec names (e.g. ``beta1``, ``gamma``); unknown or
            out-of-range ones raise ``ValueError``.
    """
    spec = registry().spec("optimizer", name)  # ValueError: unknown, with the known names
    resolved = resolve_hparams(name, hparams)
    if lr is None:
        lr = spec.default_lr
    if not lr >= 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    groups = param_groups(model)
    if capturable:  # a group key: torch's and our optimizers all read it per group
        groups = [{**g, "capturable": True} for g in groups]
    optimizer = resolve(spec.build)(groups, float(lr), resolved)
    return _with_latent_clip(optimizer) if spec.latent_clip else optimizer
