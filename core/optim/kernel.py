"""Build an optimizer's kernel before training, so that no step pays for it.

BAMSProd's fused CPU kernel (``csrc/bamsprod_fused.cpp``, see ``_fused``) is compiled, or
loaded from its on-disk cache, the first time a step takes the fused path: tens of seconds for
a first build on a small machine. Inside a timed epoch that would count as training time (and
an ETA read from it would be ten times too long). The trainer asks :func:`pending` once the
optimizer exists and, when it is, calls :func:`prepare` before the first epoch starts, with a
phase the dashboard shows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from bamsprod.core.optim import _fused, _paths
from bamsprod.core.optim.bamsprod import BAMSProd, _fused_ok

__all__ = ["pending", "prepare", "takes_kernel"]


def _parts(optimizer: torch.optim.Optimizer) -> Iterator[torch.optim.Optimizer]:
    """The optimizer, or the optimizers a ``CaseOptimizer`` combines."""
    inner = getattr(optimizer, "optimizers", None)
    if isinstance(inner, list | tuple):
        for part in inner:
            yield from _parts(part)
    else:
        yield optimizer


def takes_kernel(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step of ``optimizer`` takes the fused CPU kernel: some BAMSProd group whose
    path (``_paths.choose``, as ``step`` chooses it) is ``fused``."""
    for part in _parts(optimizer):
        if not isinstance(part, BAMSProd):
            continue
        for group in part.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                continue
            path = _paths.choose(
                params,
                foreach=group["foreach"],
                fused=group["fused"],
                differentiable=group["differentiable"],
                fused_devices=("cpu",) if _fused_ok(params) else (),
            )
            if path == "fused":
                return True
    return False


def pending(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer``'s first step would build or load the kernel: it takes the
    kernel, and this process has neither loaded it nor failed to build it."""
    status = _fused.status()
    if status["loaded"] or status["error"] is not None:
        return False
    return takes_kernel(optimizer)


def prepare() -> bool:
    """Build (or load) the kernel now; False where it cannot be built (the steps then take the
    foreach path, as ``_fused.load`` says in its warning)."""
    return _fused.load() is not None
