"""``CaseOptimizer``: several optimizers over disjoint parameters, acting as one (after larq's).

Bop steps only binary weights; the rest of a binary network (BatchNorm, the real first and last
layers) goes to another optimizer, Adam in Bop's paper. ``CaseOptimizer(Bop(binary), Adam(rest))``
joins them into one ``torch.optim.Optimizer`` whose ``param_groups`` are the sub-optimizers' own
group dicts, so LR schedulers, ``zero_grad`` and ``state_dict`` work on the pair. Nothing in it is
specific to Bop: any optimizers over disjoint parameters can be joined.

Reference: larq's ``larq.optimizers.CaseOptimizer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

__all__ = ["CaseOptimizer"]


class CaseOptimizer(Optimizer):
    """Several optimizers over disjoint parameters, acting as one (after larq's CaseOptimizer).

    ``param_groups`` is the concatenation of the sub-optimizers' group lists: the same dict
    objects, so an LR scheduler built on the CaseOptimizer moves every sub-optimizer. ``step``
    calls the closure once, then steps every sub-optimizer. ``state_dict()`` has the standard
    torch layout (parameter ids numbered across all groups in order) and ``load_state_dict``
    splits it back to the sub-optimizers.

    Example::

        opt = CaseOptimizer(Bop(binary_params), torch.optim.Adam(other_params, lr=0.01))
    """

    def __init__(self, *optimizers: Optimizer) -> None:
        if not optimizers:
            raise ValueError("CaseOptimizer needs at least one optimizer")
        seen: set[int] = set()
        for opt in optimizers:
            if not isinstance(opt, Optimizer):
                raise TypeError(f"expected torch.optim.Optimizer, got {type(opt).__name__}")
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError("a parameter appears in more than one optimizer")
                    seen.add(id(p))
        self.optimizers = list(optimizers)
        self._ready = False
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self._relink()
        self._ready = True

    def _relink(self) -> None:
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]

    @property  # type: ignore[override]
    def state(self) -> dict[Tensor, Any]:
        """A merged, read-only view of the sub-optimizers' per-parameter state."""
        merged: dict[Tensor, Any] = {}
        for opt in self.optimizers:
            merged.update(opt.state)
        return merged

    @state.setter
    def state(self, value: Any) -> None:
        # Optimizer.__init__ assigns an empty dict; the real state lives in the sub-optimizers.
        if value:
            raise AttributeError("CaseOptimizer.state is read-only; use load_state_dict")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_ready", False):
            raise TypeError(
                "CaseOptimizer cannot route a new group; add it to one of .optimizers instead"
            )
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "optimizers": self.optimizers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._relink()
        self._ready = True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Evaluate ``closure`` once (if given), then step every sub-optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        groups: list[dict[str, Any]] = []
        state: dict[int, Any] = {}
        offset = 0
        for opt in self.optimizers:
            sd = opt.state_dict()
            count = sum(len(g["params"]) for g in sd["param_groups"])
            for g in sd["param_groups"]:
                groups.append({**g, "params": [i + offset for i in g["params"]]})
            state.update({i + offset: s for i, s in sd["state"].items()})
            offset += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        start = 0
        for opt in self.optimizers:
            n_groups = len(opt.param_groups)
            sub_groups = saved[start : start + n_groups]
            ids = [i for g in sub_groups for i in g["params"]]
            local = {i: j for j, i in enumerate(ids)}
            sub = {
                "state": {local[i]: s for i, s in state_dict["state"].items() if i in local},
                "param_groups": [
                    {**g, "params": [local[i] for i in g["params"]]} for g in sub_groups
                ],
            }
            opt.load_state_dict(sub)
            start += n_groups
        self._relink()

    def __repr__(self) -> str:
        inner = ",\n".join("  " + repr(opt).replace("\n", "\n  ") for opt in self.optimizers)
        return f"CaseOptimizer(\n{inner}\n)"
