"""Which device a run trains on: decided here once, for the trainer and the worker alike."""

from __future__ import annotations

import torch

__all__ = ["describe", "pick_device"]


def pick_device(requested: str | None = "auto") -> torch.device:
    """``cuda`` when asked for, or under ``auto`` when present; ``cpu`` otherwise. Asking for
    ``cuda`` where there is none is a ``RuntimeError`` (the worker fails the run once)."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available")
    return torch.device(requested)


def describe(device: str, optimizer_path: str) -> str | None:
    """What a run stores as its device once trained: the device and the optimizer path that
    ran (``cpu · fused``), so its numbers can be reproduced on the same path."""
    return f"{device} · {optimizer_path}" if optimizer_path else None
