"""Helpers the optimizer tests share: a relative error and the quantization error in numpy."""

from __future__ import annotations

import numpy as np
import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (the tensor's scale)."""
    a, b = a.detach(), b.detach()
    scale = b.abs().max().clamp_min(1e-30)
    return float((a - b).abs().max() / scale)


def np_quant_error(w: np.ndarray) -> float:
    """e(w) (docs/algorithm.md), directly from its definition, in float64 numpy."""
    w = w.astype(np.float64)
    flat = w.reshape(1, -1) if w.ndim <= 1 else w.reshape(w.shape[0], -1)
    total = float((flat**2).sum())
    if total == 0:
        return 0.0
    a = np.abs(flat).mean(axis=1, keepdims=True)
    return float(((flat - a * np.where(flat >= 0, 1.0, -1.0)) ** 2).sum() / total)
