"""Search spaces as plain numbers (no torch, no SQL): the log-spaced learning-rate grid that
tuned sweeps (``app.sweeps.tuning``) and study files (``app.studies``) share, so both name the same
rates for the same range."""

from __future__ import annotations

import math

__all__ = ["lr_grid"]


def lr_grid(lo: float, hi: float, n: int) -> list[float]:
    """``n`` learning rates evenly spaced on a log scale from ``lo`` to ``hi`` (4 digits)."""
    if n == 1:
        return [float(f"{math.sqrt(lo * hi):.4g}")]
    step = (math.log(hi) - math.log(lo)) / (n - 1)
    return [float(f"{math.exp(math.log(lo) + i * step):.4g}") for i in range(n)]
