"""Which device a run trains on: decided here once, for the trainer and the worker alike."""

from __future__ import annotations

import torch

from bamsprod.core.config import DEVICE_TEXT_MAX

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
    """What a run stores as its device once trained: the device (a GPU with its card's name)
    and the optimizer path that ran (``cpu · fused``, ``cuda (NVIDIA H100 80GB HBM3) ·
    compiled``), so its numbers can be reproduced on the same hardware and path."""
    if not optimizer_path:
        return None
    text = f"{device} · {optimizer_path}"
    if device.startswith("cuda") and torch.cuda.is_available():
        card = torch.cuda.get_device_name(torch.device(device))
        room = DEVICE_TEXT_MAX - len(text) - 3  # " ()"
        if room >= 8:
            card = card if len(card) <= room else card[: room - 1] + "…"
            text = f"{device} ({card}) · {optimizer_path}"
    return text[:DEVICE_TEXT_MAX]
