"""The validation split: a fixed, seed-independent slice of the training set held out.

Every run of a data set (and ``train_subset``) holds out the same examples, whatever its own
seed, so optimizers tuned on validation are compared on one split, and test accuracy is only
ever reported, never selected on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bamsprod.core.config import split_sizes

__all__ = ["SPLIT_SEED", "validation_split"]

# The split's own seed: fixed, so the split depends only on the data and the fraction.
SPLIT_SEED = 20_090_138


def validation_split(
    x: Tensor, y: Tensor, fraction: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(train_x, train_y, val_x, val_y)``: ``round(fraction * N)`` examples, drawn by a fixed
    permutation, held out of ``(x, y)``; the rest keep their order. ``fraction = 0``: no split."""
    n = len(x)
    _, n_val = split_sizes(n, fraction)
    if n_val == 0:
        return x, y, x[:0], y[:0]
    if n_val >= n:
        raise ValueError(f"val_split {fraction} leaves no training example of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    held = torch.zeros(n, dtype=torch.bool)
    held[perm[:n_val]] = True
    return x[~held], y[~held], x[held], y[held]
