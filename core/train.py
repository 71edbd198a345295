"""The trainer: one run config in, one callback per epoch out.

    result = train(config, on_epoch=save_row, should_stop=cancelled, checkpoint_dir=path)

Contract (the worker and the CLI rely on it):
- ``on_epoch(EpochMetrics)`` is called after each finished epoch, before that epoch's
  checkpoint is written; so a crash between the two repeats the epoch, never skips it, and the
  repeated epoch has identical metrics (training is deterministic per config + seed + epoch).
- ``should_stop()`` is polled between batches; when it returns True the run ends ``cancelled``.
- With ``checkpoint_dir`` a checkpoint is written after every epoch and training resumes from
  the newest one; resumed runs reproduce the uninterrupted run's metrics exactly.
- A NaN/inf training loss ends the run ``diverged`` at that epoch; earlier epochs stand.
- Bad data (missing/corrupt data set) raises ``core.data.DatasetError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.spec import RunConfig

__all__ = ["EpochMetrics", "TrainResult", "train"]


@dataclass
class EpochMetrics:
    """One epoch's measurements; accuracies are fractions in [0, 1]."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    quant_error: float
    quant_error_layers: dict[str, float] = field(default_factory=dict)
    flip_rate: float = 0.0
    lr: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    state: Literal["succeeded", "diverged", "cancelled"]
    epochs_done: int
    device: str
    diverged_epoch: int | None = None
    error: str | None = None
    history: list[EpochMetrics] = field(default_factory=list)


def train(
    config: RunConfig,
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | str | None = None,
    device: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``config``; see the module docstring for the contract."""
    raise NotImplementedError
