"""The trainer: one run config in, one callback per epoch out.

    result = train(config, on_epoch=save_row, should_stop=cancelled, checkpoint_dir=path)

Contract (the worker and the CLI rely on it):
- ``on_epoch(EpochMetrics)`` is called after each finished epoch, before that epoch's
  checkpoint is written; so a crash between the two repeats the epoch, never skips it, and the
  repeated epoch has identical metrics (training is deterministic per config + seed + epoch).
- ``should_stop()`` is polled after loading the data, after building the model, before each
  epoch's first batch and then between batches at most every ``poll_seconds`` of wall time (it
  must not touch the device, so the batch loop never waits for the GPU); when it returns True
  the run ends ``cancelled``.
- ``config.compile`` other than ``"off"`` runs the model and the optimizer step through
  ``torch.compile`` in that mode (``reduce-overhead``: CUDA graphs too, with the optimizer made
  ``capturable``). ``TrainResult.optimizer_path`` names the optimizer implementation that ran.
- With ``checkpoint_dir`` a checkpoint is written after every epoch and training resumes from
  the newest one; resumed runs reproduce the uninterrupted run's metrics exactly.
- A NaN/inf training loss ends the run ``diverged`` at that epoch; earlier epochs stand.
- Bad data (missing/corrupt data set) raises ``core.data.DatasetError``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bamsprod.core.data import load_dataset
from bamsprod.core.data.split import validation_split
from bamsprod.core.device import describe, pick_device
from bamsprod.core.metrics import FlipCounter, quantization_error
from bamsprod.core.nn import binary_weights, build_model
from bamsprod.core.optim import _fused
from bamsprod.core.optim import build as build_optimizer
from bamsprod.core.spec import RunConfig

__all__ = ["EpochMetrics", "TrainResult", "train"]

logger = logging.getLogger(__name__)


@dataclass
class EpochMetrics:
    """One epoch's measurements; accuracies are fractions in [0, 1]."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    quant_error: float
    val_loss: float | None = None  # None when the run holds out no validation split
    val_acc: float | None = None
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
    optimizer_path: str = ""
    diverged_epoch: int | None = None
    error: str | None = None
    history: list[EpochMetrics] = field(default_factory=list)

    @property
    def trained_on(self) -> str | None:
        """The device and optimizer path that trained the run (``cpu · fused``)."""
        return describe(self.device, self.optimizer_path)


# How often, at most, the batch loop asks ``should_stop`` (it is also asked before each epoch).
STOP_POLL_SECONDS = 0.25


def optimizer_path(optimizer: torch.optim.Optimizer, compile_mode: str = "off") -> str:
    """The implementation an optimizer's steps took: ours report it (``paths()``), torch's are
    named by their ``fused``/``foreach`` flags (``torch:fused``, ``torch:foreach``, ...); inside
    a compiled train step, prefixed ``compiled-step(<mode>):``."""
    subs = getattr(optimizer, "optimizers", [optimizer])  # a CaseOptimizer's parts
    names = []
    for opt in subs:
        if hasattr(opt, "paths"):
            names.append(opt.paths())
            continue
        group = opt.param_groups[0]
        flag = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "default"
        names.append(f"torch:{flag}")
    path = "+".join(dict.fromkeys(names))
    return path if compile_mode == "off" else f"compiled-step({compile_mode}):{path}"


def _compiled(config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer):
    """``(forward, step)``: the model's call and ``optimizer.step``, compiled when asked."""
    if config.compile == "off":
        return model, optimizer.step
    forward = torch.compile(model, mode=config.compile)

    @torch.compile(mode=config.compile)
    def step() -> None:
        optimizer.step()

    return forward, step


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer):
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "step":
        step = max(1, config.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1)
    return None


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / CHECKPOINT)  # atomic: a kill mid-write leaves the old checkpoint


def _load_checkpoint(path: Path, config_hash: str, seed: int) -> dict[str, Any] | None:
    """The checkpoint in ``path`` if it is this run's, else None (start afresh).

    Loaded with ``weights_only=True``: tensors, numbers, strings and containers only, which is
    all a checkpoint holds (no class needs allowing), so a file crafted to run code when
    unpickled is refused, like a corrupt one, and the run starts from epoch 1."""
    file = path / CHECKPOINT
    if not file.exists():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        logger.warning("checkpoint %s cannot be loaded safely (%s); starting afresh", file,
                       str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return None
    if not isinstance(state, dict):
        return None
    if state.get("config_hash") != config_hash or state.get("seed") != seed:
        return None  # a checkpoint of some other config: start afresh
    return state


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024):
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").double()
        correct += (out.argmax(1) == y[i : i + batch]).sum()
    n = max(len(x), 1)
    return float(loss) / n, int(correct) / n


def train(
    config: RunConfig,
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | str | None = None,
    device: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    poll_seconds: float = STOP_POLL_SECONDS,
) -> TrainResult:
    """Train ``config``; see the module docstring for the contract."""
    dev = pick_device(device or config.device)

    def stopped() -> bool:
        return should_stop is not None and should_stop()

    data = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
    )
    if stopped():  # cancelled while the data loaded: don't build the model
        return TrainResult("cancelled", 0, str(dev))
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.shape, data.classes, **config.model_args).to(dev)
    # CUDA graphs need the optimizer's step counts on the device.
    capturable = config.compile == "reduce-overhead" and dev.type == "cuda"
    optimizer = build_optimizer(
        config.optimizer, model, lr=config.lr, capturable=capturable, **config.hparams
    )
    # The C++ kernel's first build (seconds to a minute) happens here, not inside the first
    # step, so a cancel acts during it.
    if _fused.needed_by(optimizer) and _fused.prepare(should_stop=stopped) == "cancelled":
        return TrainResult("cancelled", 0, str(dev))
    if stopped():
        return TrainResult("cancelled", 0, str(dev))
    scheduler = _scheduler(config, optimizer)
    latent = binary_weights(model)
    flips = FlipCounter()
    flips.update(latent)  # the initial weights are the first epoch's baseline

    train_x, train_y, val_x, val_y = validation_split(data.train_x, data.train_y, config.val_split)
    train_x, train_y = train_x.to(dev), train_y.to(dev)
    val_x, val_y = val_x.to(dev), val_y.to(dev)
    test_x, test_y = data.test_x.to(dev), data.test_y.to(dev)
    n = len(train_x)
    if n < 2:  # a data set smaller than its declared size: no batch to train on
        raise ValueError(f"{config.dataset} leaves {n} training example(s) after val_split "
                         f"{config.val_split}; a batch needs 2")
    # A last batch of one example would break BatchNorm's batch statistics: drop it that epoch.
    batches = n // config.batch_size + (1 if n % config.batch_size > 1 else 0)
    seen = min(n, batches * config.batch_size)

    chash = config.config_hash()
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: list[EpochMetrics] = []
    start = 1
    if (
        ckpt_dir is not None
        and (state := _load_checkpoint(ckpt_dir, chash, config.seed)) is not None
    ):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        flips.load_state_dict({k: v.to(dev) for k, v in state["flips"].items()})
        history = [EpochMetrics(**h) for h in state["history"]]
        start = state["epoch"] + 1

    forward, optimizer_step = _compiled(config, model, optimizer)
    result = TrainResult("succeeded", start - 1, str(dev), history=history)
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen).to(dev)
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        lr = float(optimizer.param_groups[0]["lr"])
        next_poll = 0.0  # ask before the epoch's first batch
        for b in range(batches):
            if should_stop is not None and (now := time.monotonic()) >= next_poll:
                next_poll = now + poll_seconds
                if should_stop():
                    result.state = "cancelled"
                    result.optimizer_path = optimizer_path(optimizer, config.compile)
                    return result
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = train_x[idx], train_y[idx]
            out = forward(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer_step()  # build() clips latent weights to [-1, 1] (BinaryConnect)
            loss_sum += loss.detach().double() * len(idx)
            correct += (out.detach().argmax(1) == y).sum()
            if on_batch is not None:
                on_batch(b + 1, batches)
        train_loss = float(loss_sum) / seen  # the epoch's one wait for the device
        result.optimizer_path = optimizer_path(optimizer, config.compile)
        if not math.isfinite(train_loss):
            result.state = "diverged"
            result.diverged_epoch = epoch
            result.error = f"training loss became {train_loss} in epoch {epoch}"
            return result
        test_loss, test_acc = evaluate(model, test_x, test_y)
        val_loss, val_acc = evaluate(model, val_x, val_y) if len(val_x) else (None, None)
        if scheduler is not None:
            scheduler.step()
        layers = {name: quantization_error(w) for name, w in latent.items()}
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=int(correct) / seen,
            test_loss=test_loss,
            test_acc=test_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            quant_error=sum(layers.values()) / len(layers) if layers else 0.0,
            quant_error_layers=layers,
            flip_rate=flips.update(latent) or 0.0,
            lr=lr,
            seconds=time.perf_counter() - t0,
        )
        if on_epoch is not None:
            on_epoch(metrics)
        history.append(metrics)
        result.epochs_done = epoch
        if ckpt_dir is not None:
            _save_checkpoint(
                ckpt_dir,
                {
                    "epoch": epoch,
                    "config_hash": chash,
                    "seed": config.seed,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "flips": flips.state_dict(),
                    "history": [h.to_dict() for h in history],
                },
            )
    return result
