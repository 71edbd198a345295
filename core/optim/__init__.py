"""Optimizers for binary neural networks: BAMSProd, Bop, AdaBound/AMSBound, and a registry.

Three ways to get an optimizer, best first:

1. ``build(name, model, lr=None, **hparams)``: by registry name (``OPTIMIZER_NAMES``, the same
   names and hyperparameters as ``core.config.OPTIMIZERS``, installed plugins included). It puts
   the binary layers' latent weights in their own group and applies the BinaryConnect latent
   clip to ``[-1, 1]``.
2. The classes, with groups you make yourself: ``BAMSProd([{"params": latent, "binary": True,
   "latent_clip": 1.0}, {"params": rest}])``, ``CaseOptimizer(Bop(latent), Adam(rest))``.
3. The functional step ``core.optim.bamsprod.bamsprod(...)``, for code that keeps its own
   state.

Adam, AMSGrad and SGD are torch's own classes; nothing here re-implements them.
"""

from bamsprod.core.optim.adabound import AdaBound, adabound_bounds
from bamsprod.core.optim.bamsprod import BAMSProd, bound_schedule
from bamsprod.core.optim.bop import Bop
from bamsprod.core.optim.case_optimizer import CaseOptimizer
from bamsprod.core.optim.registry import build, clip_latent_weights, param_groups

__all__ = [
    "OPTIMIZER_NAMES",
    "AdaBound",
    "BAMSProd",
    "Bop",
    "CaseOptimizer",
    "adabound_bounds",
    "bound_schedule",
    "build",
    "clip_latent_weights",
    "param_groups",
]


def __getattr__(name: str) -> object:
    # Read from the registry on use, never while this package imports: a plugin's module may
    # import bamsprod.core.optim itself.
    if name == "OPTIMIZER_NAMES":
        from bamsprod.core.optim import registry

        return registry.OPTIMIZER_NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
