"""One named hyperparameter (or model argument): its default, type, inclusive range and help.

The built-in optimizers and models declare their tables of :class:`HParam` in
``core.plugins.builtin``; a plugin's table is read from its constructor's signature
(``core.plugins.signature``). ``core.config`` validates a run's ``hparams`` and ``model_args``
against these tables. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["HParam"]


@dataclass(frozen=True)
class HParam:
    """One named hyperparameter: its default, type and inclusive range.

    ``log``: the value is searched and shown on a log scale (it needs ``lo > 0``).
    """

    default: float | int | bool
    lo: float | None = None
    hi: float | None = None
    help: str = ""
    log: bool = False

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, name: str, value: Any) -> float | int | bool:
        """Coerce ``value`` to this parameter's type or raise ``ValueError`` naming ``name``."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{name} must be an integer, got {value!r}")
            value = int(value)
        elif isinstance(value, int) and abs(value) > 2**53:
            raise ValueError(f"{name} is out of range, got {value!r}")
        else:
            value = float(value)
        if self.lo is not None and value < self.lo:
            raise ValueError(f"{name} must be >= {self.lo}, got {value!r}")
        if self.hi is not None and value > self.hi:
            raise ValueError(f"{name} must be <= {self.hi}, got {value!r}")
        return value
