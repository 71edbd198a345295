"""The trainer: one run config in, one callback per epoch out.

    result = train(config, on_epoch=save_row, should_stop=cancelled, checkpoint_dir=path)

Contract (the worker and the CLI rely on it):
- ``on_epoch(EpochMetrics)`` is called after each finished epoch, before that epoch's
  checkpoint is written; so a crash between the two repeats the epoch, never skips it, and the
  repeated epoch has identical metrics (training is deterministic per config + seed + epoch).
- Each epoch evaluates the validation split ``config.evals_per_epoch`` times, at batch
  boundaries evenly spaced over it (``eval_after``), the last at its end; the metrics carry them
  as ``evals`` (:class:`EvalPoint`: step, fractional epoch, training seconds so far, val loss
  and accuracy, the seconds it took), and the last one is the epoch's ``val_loss``/``val_acc``.
  Without validation examples (``val_split`` 0) an epoch has no points and no val metrics.
  Evaluating changes no training state (no_grad, eval mode, no random numbers).
- Time is training time: an epoch's ``seconds`` are its batches' (waiting for the device before
  each reading), ``eval_seconds`` its evaluations' (test and validation), untimed as training,
  as AlgoPerf leaves evaluation untimed; a point's ``train_seconds`` sum the run's training
  seconds so far, resumed epochs included (the checkpoint's history holds them).
- ``on_phase(text)`` says what the run does before its first epoch: ``LOADING_DATA``, then
  ``BUILDING_KERNEL`` when the optimizer's kernel is built (or loaded) here, before any epoch's
  clock starts (``core.optim._fused.prepare``, which a cancel interrupts), and ``None`` once
  training starts.
- ``should_stop()`` is polled after loading the data, after building the model, before each
  epoch's first batch and then between batches at most every ``poll_seconds`` of wall time (it
  must not touch the device, so the batch loop never waits for the GPU between evaluation
  points); when it returns True the run ends ``cancelled``.
- ``config.compile`` other than ``"off"`` runs the model and the optimizer step through
  ``torch.compile`` in that mode (``reduce-overhead``: CUDA graphs too, with the optimizer made
  ``capturable``). ``TrainResult.optimizer_path`` names the optimizer implementation that ran.
- With ``checkpoint_dir`` a checkpoint is written after every epoch and training resumes from
  the newest one; resumed runs reproduce the uninterrupted run's metrics exactly.
- A NaN/inf training loss ends the run ``diverged`` at that epoch; earlier epochs stand.
- Bad data (missing/corrupt data set) raises ``core.data.DatasetError``.

``train`` is an outline of named steps: ``_prepare`` (with ``_build_kernel``), ``_resume``, then
per epoch
``_train_batches`` (with ``_eval_point`` among them), ``_measure``, ``on_epoch``, ``_checkpoint``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bamsprod.core.config import RunConfig
from bamsprod.core.data import load_dataset
from bamsprod.core.data.split import validation_split
from bamsprod.core.device import describe, pick_device
from bamsprod.core.metric_schema import METRICS
from bamsprod.core.metrics import FlipCounter, quantization_error
from bamsprod.core.nn import binary_weights, build_model
from bamsprod.core.optim import _fused
from bamsprod.core.optim import build as build_optimizer

__all__ = ["BUILDING_KERNEL", "LOADING_DATA", "EpochMetrics", "EvalPoint", "TrainResult",
           "eval_after", "train"]

# What a run does before its first epoch (``on_phase``; the dashboard shows it).
LOADING_DATA = "loading data"
BUILDING_KERNEL = "building the optimizer kernel"

logger = logging.getLogger(__name__)


@dataclass
class EvalPoint:
    """One evaluation of the validation split, at a batch boundary.

    ``epoch`` is fractional (1.25: a quarter into epoch 2; the epoch's last point is the whole
    number), ``step`` the optimizer steps taken so far, ``train_seconds`` the run's training
    seconds so far (evaluation excluded, summed over epochs and across resumes) and
    ``eval_seconds`` what this evaluation took."""

    step: int
    epoch: float
    train_seconds: float
    val_loss: float | None
    val_acc: float | None
    eval_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _to_dict(self: Any) -> dict[str, Any]:
    return asdict(self)


# The metric fields come from the schema: adding a metric there adds its field here.
EpochMetrics = make_dataclass(
    "EpochMetrics",
    [
        ("epoch", int),
        *[(m.name, float | None, field(default=None)) for m in METRICS],
        ("quant_error_layers", dict[str, float], field(default_factory=dict)),
        ("evals", list[EvalPoint], field(default_factory=list)),
    ],
    namespace={"to_dict": _to_dict},
)
EpochMetrics.__module__ = __name__  # make_dataclass's own ``module=`` needs Python 3.12
EpochMetrics.__doc__ = """One epoch's measurements: ``epoch``; one field per metric of
``core.metric_schema.METRICS`` (accuracies are fractions in [0, 1]; ``val_*`` stay None when the
run holds out no validation split); ``quant_error_layers``; and the epoch's ``evals``
(:class:`EvalPoint`, in step order; the last one is the epoch's own val metrics)."""


def _epoch_metrics(state: dict[str, Any]) -> EpochMetrics:
    """An ``EpochMetrics`` from its ``to_dict()`` (a checkpoint's history; older checkpoints
    lack the newer fields, which keep their defaults)."""
    known = {f.name for f in fields(EpochMetrics)}
    state = {k: v for k, v in state.items() if k in known}
    state["evals"] = [EvalPoint(**p) for p in state.get("evals", [])]
    return EpochMetrics(**state)


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


def _sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU, which runs eagerly)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eval_after(batches: int, per_epoch: int) -> list[int]:
    """The batch counts after which an epoch evaluates: ``per_epoch`` boundaries evenly spaced
    over its ``batches``, the last at its end; fewer when it has fewer batches than that."""
    return sorted({j * batches // per_epoch for j in range(1, per_epoch + 1)} - {0})


class _StopPoll:
    """``should_stop`` as the trainer asks it: at once (``now``), or between batches at most
    every ``poll_seconds`` of wall time, first before an epoch's first batch."""

    def __init__(self, should_stop: Callable[[], bool] | None, poll_seconds: float) -> None:
        self.ask, self.every, self.next = should_stop, poll_seconds, 0.0

    def now(self) -> bool:
        return self.ask is not None and self.ask()

    def epoch_start(self) -> None:
        self.next = 0.0

    def between_batches(self) -> bool:
        if self.ask is None or (t := time.monotonic()) < self.next:
            return False
        self.next = t + self.every
        return self.ask()


class _Clock:
    """An epoch's training seconds: running over its batches, paused while it evaluates.
    ``pause`` waits for the device first, so the batches queued before it count as training."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.started = device, 0.0, time.perf_counter()

    def pause(self) -> float:
        _sync(self.device)
        self.seconds += time.perf_counter() - self.started
        return self.seconds

    def resume(self) -> None:
        self.started = time.perf_counter()


@dataclass
class _Run:
    """What one run trains with, built once by :func:`_prepare`; ``history`` grows by epoch."""

    config: RunConfig
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    forward: Callable[[torch.Tensor], torch.Tensor]
    step: Callable[[], Any]
    latent: dict[str, torch.Tensor]
    flips: FlipCounter
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    batches: int  # per epoch
    seen: int  # examples per epoch (a last batch of one is dropped)
    eval_after: list[int]  # batch counts of the epoch's evaluation points
    config_hash: str
    history: list[EpochMetrics] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        """Training seconds of the epochs done (evaluation excluded), resumed ones included."""
        return sum(h.seconds or 0.0 for h in self.history)


@dataclass
class _Batches:
    """An epoch's batches, trained: what they measured and the evaluation points among them."""

    lr: float
    train_loss: float = math.nan
    train_acc: float = math.nan
    seconds: float = 0.0
    evals: list[EvalPoint] = field(default_factory=list)


def train(
    config: RunConfig,
    *,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | str | None = None,
    device: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    poll_seconds: float = STOP_POLL_SECONDS,
    on_phase: Callable[[str | None], None] | None = None,
) -> TrainResult:
    """Train ``config``; see the module docstring for the contract. The outline: prepare,
    resume, then each epoch: train its batches (evaluating among them), measure, report, save."""
    dev = pick_device(device or config.device)
    stop = _StopPoll(should_stop, poll_seconds)
    phase = on_phase or (lambda _: None)
    run = _prepare(config, dev, stop, phase)
    if run is None:
        return TrainResult("cancelled", 0, str(dev))
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start = _resume(run, ckpt)
    phase(None)  # training starts: every epoch's clock runs from here on
    result = TrainResult("succeeded", start - 1, str(dev), history=run.history)
    for epoch in range(start, config.epochs + 1):
        done = _train_batches(run, epoch, stop, on_batch)
        result.optimizer_path = optimizer_path(run.optimizer, config.compile)
        if done is None:
            result.state = "cancelled"
            return result
        if not math.isfinite(done.train_loss):
            return _diverged(result, epoch, done.train_loss)
        metrics = _measure(run, epoch, done)
        if on_epoch is not None:
            on_epoch(metrics)
        run.history.append(metrics)
        result.epochs_done = epoch
        if ckpt is not None:
            _save_checkpoint(ckpt, _checkpoint(run, epoch))
    return result


def _prepare(config: RunConfig, dev: torch.device, stop: _StopPoll,
             phase: Callable[[str | None], None]) -> _Run | None:
    """Data, model, optimizer (its kernel built) and scheduler on ``dev``; None when stopped
    meanwhile (asked after the data loaded and after the model was built)."""
    phase(LOADING_DATA)
    data = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
    )
    if stop.now():  # cancelled while the data loaded: don't build the model
        return None
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.shape, data.classes, **config.model_args).to(dev)
    # CUDA graphs need the optimizer's step counts on the device.
    capturable = config.compile == "reduce-overhead" and dev.type == "cuda"
    optimizer = build_optimizer(
        config.optimizer, model, lr=config.lr, capturable=capturable, **config.hparams
    )
    if not _build_kernel(optimizer, phase, stop) or stop.now():
        return None
    latent = binary_weights(model)
    flips = FlipCounter()
    flips.update(latent)  # the initial weights are the first epoch's baseline
    train_x, train_y, val_x, val_y = validation_split(data.train_x, data.train_y, config.val_split)
    n = len(train_x)
    if n < 2:  # a data set smaller than its declared size: no batch to train on
        raise ValueError(f"{config.dataset} leaves {n} training example(s) after val_split "
                         f"{config.val_split}; a batch needs 2")
    # A last batch of one example would break BatchNorm's batch statistics: drop it that epoch.
    batches = n // config.batch_size + (1 if n % config.batch_size > 1 else 0)
    forward, step = _compiled(config, model, optimizer)
    return _Run(
        config=config,
        device=dev,
        model=model,
        optimizer=optimizer,
        scheduler=_scheduler(config, optimizer),
        forward=forward,
        step=step,
        latent=latent,
        flips=flips,
        train=(train_x.to(dev), train_y.to(dev)),
        val=(val_x.to(dev), val_y.to(dev)),
        test=(data.test_x.to(dev), data.test_y.to(dev)),
        batches=batches,
        seen=min(n, batches * config.batch_size),
        eval_after=eval_after(batches, config.evals_per_epoch) if len(val_x) else [],
        config_hash=config.config_hash(),
    )


def _build_kernel(optimizer: torch.optim.Optimizer, phase: Callable[[str | None], None],
                  stop: _StopPoll) -> bool:
    """Build (or load) the C++ kernel now, when the optimizer's first step would (seconds to a
    minute): outside every epoch's clock, so that an epoch's ``seconds`` stay training time,
    and said (``BUILDING_KERNEL``). A cancel acts during the build; False when it did."""
    if not _fused.needed_by(optimizer) or _fused.settled():
        return True
    phase(BUILDING_KERNEL)
    return _fused.prepare(should_stop=stop.ask) != "cancelled"


def _resume(run: _Run, ckpt: Path | None) -> int:
    """Load the newest checkpoint of this config and seed, if any; the first epoch to train."""
    if ckpt is None:
        return 1
    state = _load_checkpoint(ckpt, run.config_hash, run.config.seed)
    if state is None:
        return 1
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None and state.get("scheduler") is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    run.flips.load_state_dict({k: v.to(run.device) for k, v in state["flips"].items()})
    run.history[:] = [_epoch_metrics(h) for h in state["history"]]
    return int(state["epoch"]) + 1


def _train_batches(
    run: _Run, epoch: int, stop: _StopPoll, on_batch: Callable[[int, int], None] | None
) -> _Batches | None:
    """Train one epoch's batches, evaluating the validation split at its evaluation points
    before the last (the last one is :func:`_measure`'s); None when stopped. Between two points
    nothing waits for the device: the loss and accuracy are summed on it."""
    cfg, dev = run.config, run.device
    clock = _Clock(dev)
    run.model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(len(run.train[0]), generator=gen).to(dev)
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    done = _Batches(lr=float(run.optimizer.param_groups[0]["lr"]))
    stop.epoch_start()
    for b in range(run.batches):
        if stop.between_batches():
            return None
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = run.train[0][idx], run.train[1][idx]
        out = run.forward(x)
        loss = F.cross_entropy(out, y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.step()  # build() clips latent weights to [-1, 1] (BinaryConnect)
        loss_sum += loss.detach().double() * len(idx)
        correct += (out.detach().argmax(1) == y).sum()
        if on_batch is not None:
            on_batch(b + 1, run.batches)
        if b + 1 in run.eval_after and b + 1 < run.batches:
            done.evals.append(_eval_point(run, epoch, b + 1, clock.pause()))
            run.model.train()
            clock.resume()
    done.train_loss = float(loss_sum) / run.seen  # the epoch's one wait for the device
    done.train_acc = int(correct) / run.seen
    done.seconds = clock.pause()
    return done


def _eval_point(run: _Run, epoch: int, batch: int, epoch_seconds: float) -> EvalPoint:
    """Evaluate the validation split after ``batch`` batches of ``epoch``, which trained for
    ``epoch_seconds`` so far; the model is left in eval mode."""
    t0 = time.perf_counter()
    val_loss, val_acc = evaluate(run.model, *run.val)
    return EvalPoint(
        step=(epoch - 1) * run.batches + batch,
        epoch=epoch - 1 + batch / run.batches,
        train_seconds=run.train_seconds + epoch_seconds,
        val_loss=val_loss,
        val_acc=val_acc,
        eval_seconds=time.perf_counter() - t0,
    )


def _measure(run: _Run, epoch: int, done: _Batches) -> EpochMetrics:
    """The epoch's ``EpochMetrics``: test, then validation (the epoch's last evaluation point),
    untimed as training; then the scheduler's step, quantization errors and flips."""
    t0 = time.perf_counter()
    test_loss, test_acc = evaluate(run.model, *run.test)
    test_seconds = time.perf_counter() - t0
    evals = list(done.evals)
    if run.eval_after:
        evals.append(_eval_point(run, epoch, run.batches, done.seconds))
    if run.scheduler is not None:
        run.scheduler.step()
    layers = {name: quantization_error(w) for name, w in run.latent.items()}
    return EpochMetrics(
        epoch=epoch,
        train_loss=done.train_loss,
        train_acc=done.train_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        val_loss=evals[-1].val_loss if run.eval_after else None,
        val_acc=evals[-1].val_acc if run.eval_after else None,
        quant_error=sum(layers.values()) / len(layers) if layers else 0.0,
        quant_error_layers=layers,
        flip_rate=run.flips.update(run.latent) or 0.0,
        lr=done.lr,
        seconds=done.seconds,
        eval_seconds=test_seconds + sum(p.eval_seconds for p in evals),
        evals=evals,
    )


def _diverged(result: TrainResult, epoch: int, loss: float) -> TrainResult:
    result.state = "diverged"
    result.diverged_epoch = epoch
    result.error = f"training loss became {loss} in epoch {epoch}"
    return result


def _checkpoint(run: _Run, epoch: int) -> dict[str, Any]:
    """Everything a resume needs after ``epoch``: the history carries the training seconds."""
    return {
        "epoch": epoch,
        "config_hash": run.config_hash,
        "seed": run.config.seed,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "flips": run.flips.state_dict(),
        "history": [h.to_dict() for h in run.history],
    }
