"""The trainer: learns for real, is deterministic, resumes exactly, cancels, detects divergence."""

from __future__ import annotations

import math

import pytest
import torch

from bamsprod.core.config import RunConfig
from bamsprod.core.train import EpochMetrics, eval_after, train


def _cfg(**kw) -> RunConfig:
    base = dict(
        model="mlp", dataset="digits", epochs=3, batch_size=64, model_args={"width": 64, "depth": 1}
    )
    base.update(kw)
    return RunConfig(**base)


# Wall times are what legitimately differs between two identical runs.
TIMES = ("seconds", "eval_seconds", "train_seconds")


def _strip(history: list[EpochMetrics]) -> list[dict]:
    def untimed(d: dict) -> dict:
        return {k: [untimed(p) for p in v] if k == "evals" else v
                for k, v in d.items() if k not in TIMES}

    return [untimed(m.to_dict()) for m in history]


def _training(history: list[EpochMetrics]) -> list[dict]:
    """What training computed, without the wall times and the evaluations between epochs."""
    return [{k: v for k, v in d.items() if k != "evals"} for d in _strip(history)]


def test_bamsprod_learns_digits_to_90_percent():
    cfg = _cfg(epochs=12, model_args={"width": 256, "depth": 2}, lr=3e-3)
    result = train(cfg)
    assert result.state == "succeeded"
    assert result.epochs_done == 12
    best = max(m.test_acc for m in result.history)
    assert best >= 0.90, [round(m.test_acc, 3) for m in result.history]
    # The binary layers are measured every epoch.
    last = result.history[-1]
    assert len(last.quant_error_layers) == 2
    assert 0.0 < last.quant_error < 1.0
    assert 0.0 <= last.flip_rate <= 1.0
    assert last.lr == pytest.approx(3e-3)


def test_metrics_are_deterministic_per_seed():
    a = train(_cfg(seed=3))
    b = train(_cfg(seed=3))
    c = train(_cfg(seed=4))
    assert _strip(a.history) == _strip(b.history)
    assert _strip(a.history) != _strip(c.history)


@pytest.mark.parametrize("optimizer", ["bamsprod", "bop", "adam", "amsbound"])
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, optimizer):
    cfg = _cfg(epochs=4, optimizer=optimizer, scheduler="cosine")
    full = train(cfg)

    class Crash(Exception):
        pass

    seen: list[int] = []

    def crash_on_epoch_3(m: EpochMetrics) -> None:
        if m.epoch == 3:
            raise Crash  # the worker dies after epoch 3 finished but before its checkpoint
        seen.append(m.epoch)

    with pytest.raises(Crash):
        train(cfg, on_epoch=crash_on_epoch_3, checkpoint_dir=tmp_path)
    assert seen == [1, 2]
    resumed_epochs: list[EpochMetrics] = []
    resumed = train(cfg, on_epoch=resumed_epochs.append, checkpoint_dir=tmp_path)
    assert [m.epoch for m in resumed_epochs] == [3, 4]  # epoch 3 is repeated, none skipped
    assert resumed.state == "succeeded" and resumed.epochs_done == 4
    assert _strip(resumed.history) == _strip(full.history)


def test_evaluation_points_are_evenly_spaced_and_the_last_ends_the_epoch():
    assert eval_after(10, 4) == [2, 5, 7, 10]
    assert eval_after(10, 1) == [10]
    assert eval_after(3, 4) == [1, 2, 3]  # fewer batches than evaluations: one per batch
    assert eval_after(1, 64) == [1]


def test_k_evaluations_per_epoch_store_steps_fractions_and_training_seconds():
    # digits: 1437 examples, 10% held out -> 1293 train; batches of 64 -> 20 + a last of 13.
    once = train(_cfg(epochs=3, seed=2))
    four = train(_cfg(epochs=3, seed=2, evals_per_epoch=4))
    assert _training(four.history) == _training(once.history)  # evaluating changes no training
    batches, marks = 21, [5, 10, 15, 21]
    total = 0.0
    for m in four.history:
        assert [p.step for p in m.evals] == [(m.epoch - 1) * batches + b for b in marks]
        assert [p.epoch for p in m.evals] == pytest.approx(
            [m.epoch - 1 + b / batches for b in marks])
        assert m.evals[-1].epoch == m.epoch  # the epoch's end, a whole number
        # Training seconds run on across epochs, paused while evaluating: the last point's
        # are the epochs' training seconds summed.
        times = [p.train_seconds for p in m.evals]
        assert total < times[0] and times == sorted(times)
        total += m.seconds
        assert times[-1] == pytest.approx(total, rel=1e-9)
        # The epoch's val metrics are its last point, evaluated once.
        assert (m.val_loss, m.val_acc) == (m.evals[-1].val_loss, m.evals[-1].val_acc)
        assert all(0.0 <= p.val_acc <= 1.0 and p.eval_seconds > 0 for p in m.evals)
        assert m.eval_seconds > sum(p.eval_seconds for p in m.evals)  # and the test split
    assert [len(m.evals) for m in once.history] == [1, 1, 1]
    assert [p.val_acc for m in once.history for p in m.evals] == [
        m.val_acc for m in four.history]


def test_no_validation_split_means_no_evaluation_points():
    result = train(_cfg(epochs=1, val_split=0.0))
    m = result.history[0]
    assert m.evals == [] and m.val_acc is None and m.eval_seconds > 0  # the test split still
    tiny = train(_cfg(epochs=1, train_subset=8, batch_size=4, val_split=0.01, evals_per_epoch=2))
    assert tiny.history[0].evals == []  # 1% of 8 examples rounds to no validation example


def test_resume_keeps_the_training_seconds_of_earlier_epochs(tmp_path):
    cfg = _cfg(epochs=3, evals_per_epoch=2)

    class Crash(Exception):
        pass

    first: list[EpochMetrics] = []

    def crash_on_epoch_3(m: EpochMetrics) -> None:
        if m.epoch == 3:
            raise Crash
        first.append(m)

    with pytest.raises(Crash):
        train(cfg, on_epoch=crash_on_epoch_3, checkpoint_dir=tmp_path)
    resumed = train(cfg, checkpoint_dir=tmp_path)
    assert [m.seconds for m in resumed.history[:2]] == [m.seconds for m in first]
    before = first[0].seconds + first[1].seconds
    third = resumed.history[2]
    assert before < third.evals[0].train_seconds < third.evals[1].train_seconds
    assert third.evals[1].train_seconds == pytest.approx(before + third.seconds, rel=1e-9)
    assert resumed.history[1].evals[-1].train_seconds == pytest.approx(before, rel=1e-9)


def test_checkpoint_of_another_seed_is_not_resumed(tmp_path):
    train(_cfg(epochs=2, seed=1), checkpoint_dir=tmp_path)
    epochs: list[int] = []
    train(
        _cfg(epochs=2, seed=2), checkpoint_dir=tmp_path, on_epoch=lambda m: epochs.append(m.epoch)
    )
    assert epochs == [1, 2]


def test_cancel_is_checked_between_batches():
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5  # after five batches of epoch 1

    epochs: list[int] = []
    result = train(
        _cfg(epochs=3), should_stop=stop, on_epoch=lambda m: epochs.append(m.epoch), poll_seconds=0
    )
    assert result.state == "cancelled"
    assert result.epochs_done == 0 and epochs == []


def test_cancel_is_polled_by_wall_time_and_once_per_epoch():
    # With a poll interval longer than the run, should_stop is asked after loading the data,
    # after building the model and once per epoch, before its first batch: the batch loop does
    # not call it (nor wait on the device for it) per batch, nor per evaluation point.
    calls: list[int] = []
    result = train(_cfg(epochs=3, evals_per_epoch=4),
                   should_stop=lambda: calls.append(1) or False, poll_seconds=3600)
    assert result.state == "succeeded" and len(calls) == 2 + 3
    assert result.optimizer_path == "fused"  # BAMSProd's CPU default, recorded with the run


def test_nan_loss_ends_run_diverged_and_keeps_earlier_epochs():
    # lr * weight_decay = 10 makes each SGD step multiply the real weights by -9: they overflow
    # to inf within an epoch or two and the loss becomes NaN.
    cfg = _cfg(epochs=10, optimizer="sgd", lr=10.0, hparams={"momentum": 0.0, "weight_decay": 1.0})
    result = train(cfg)
    assert result.state == "diverged"
    assert result.diverged_epoch is not None and result.diverged_epoch >= 1
    assert result.epochs_done == result.diverged_epoch - 1
    assert "loss became" in (result.error or "")
    assert all(math.isfinite(m.train_loss) for m in result.history)


def test_a_last_batch_of_one_example_is_skipped_not_fatal():
    # digits has 1437 training examples: batch size 2 leaves one over, which BatchNorm rejects.
    result = train(_cfg(epochs=1, batch_size=2, train_subset=9))
    assert result.state == "succeeded"
    assert 0.0 <= result.history[0].train_acc <= 1.0


@pytest.mark.slow
def test_compiled_train_step_trains_resumes_and_says_so(tmp_path):
    # compile="default": the model and the optimizer step run through torch.compile (Inductor's
    # C++ on this CPU); checkpoints keep the plain module's keys, so a resume (compiled or not)
    # loads them, and the run records how its optimizer ran.
    cfg = _cfg(epochs=2, compile="default")
    first = train(cfg.model_copy(update={"epochs": 1}), checkpoint_dir=tmp_path)
    assert first.state == "succeeded"
    assert first.optimizer_path == "compiled-step(default):single_tensor"
    resumed = train(cfg.model_copy(update={"compile": "off"}), checkpoint_dir=tmp_path)
    assert [m.epoch for m in resumed.history] == [1, 2]
    assert resumed.history[-1].test_acc > 0.5
    assert resumed.optimizer_path == "fused"


def test_one_function_picks_the_device_and_names_what_trained() -> None:
    import torch

    from bamsprod.core.device import describe, pick_device

    assert pick_device("cpu").type == "cpu" and pick_device(None) == pick_device("auto")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
    assert describe("cpu", "fused") == "cpu · fused" and describe("cpu", "") is None


def test_a_gpu_runs_device_text_names_the_card_and_fits_its_column() -> None:
    from unittest import mock

    from bamsprod.core.config import DEVICE_TEXT_MAX
    from bamsprod.core.device import describe

    assert describe("cpu", "fused") == "cpu · fused"
    assert describe("cpu", "") is None
    long = "NVIDIA GeForce RTX 4090 Laptop GPU, a name longer than the column has room for"
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.get_device_name", return_value="NVIDIA H100 80GB HBM3"):
        assert describe("cuda", "compiled") == "cuda (NVIDIA H100 80GB HBM3) · compiled"
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.get_device_name", return_value=long):
        for path in ("compiled", "compiled-step(reduce-overhead):single_tensor"):
            text = describe("cuda:0", path)
            assert len(text) <= DEVICE_TEXT_MAX and text.endswith(f" · {path}")
            assert text.startswith("cuda:0 (NVIDIA")


class _Payload:
    """Unpickling this runs code: what a crafted checkpoint file would hold."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch PWNED-BY-CHECKPOINT",))


def test_a_crafted_checkpoint_runs_no_code_and_the_run_starts_afresh(tmp_path, monkeypatch):
    from bamsprod.core.train import CHECKPOINT

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(epochs=2)
    state = {"epoch": 1, "config_hash": cfg.config_hash(), "seed": cfg.seed, "x": _Payload()}
    (tmp_path / "ckpt").mkdir()
    torch.save(state, tmp_path / "ckpt" / CHECKPOINT)
    epochs: list[int] = []
    result = train(cfg, checkpoint_dir=tmp_path / "ckpt", on_epoch=lambda m: epochs.append(m.epoch))
    assert not (tmp_path / "PWNED-BY-CHECKPOINT").exists()
    assert epochs == [1, 2] and result.state == "succeeded"  # refused, trained from epoch 1


def test_the_kernel_is_built_before_the_first_epoch_and_said(monkeypatch):
    """A run whose first step would build the optimizer's kernel builds it before epoch 1's
    clock starts, and says so (``on_phase``); the build (made a second longer than it is here,
    where it may be cached) is in no epoch's seconds."""
    import time

    from bamsprod.core.optim import _fused
    from bamsprod.core.train import BUILDING_KERNEL, LOADING_DATA

    built = []
    real = _fused.prepare
    monkeypatch.setattr(_fused, "settled", lambda: bool(built))
    # The real build (or load from the cache), made a second longer: a cold build's stand-in.
    monkeypatch.setattr(_fused, "prepare",
                        lambda should_stop=None: built.append(time.sleep(1.0)) or real(should_stop))
    phases: list[str | None] = []
    result = train(_cfg(optimizer="bamsprod", epochs=2), on_phase=phases.append)
    assert result.state == "succeeded" and built == [None]
    assert phases == [LOADING_DATA, BUILDING_KERNEL, None]
    assert all(m.seconds < 1.0 for m in result.history), [m.seconds for m in result.history]
    phases.clear()
    train(_cfg(optimizer="adam", epochs=1), on_phase=phases.append)
    assert phases == [LOADING_DATA, None]  # no kernel: nothing to build


def test_bamsprod_on_the_cpu_takes_the_kernel_and_adam_does_not():
    from bamsprod.core.nn import build_model
    from bamsprod.core.optim import BAMSProd, _fused, build

    model = build_model("mlp", (1, 8, 8), 10, width=16, depth=1)
    assert _fused.needed_by(build("bamsprod", model, lr=1e-3))
    assert not _fused.needed_by(BAMSProd(model.parameters(), lr=1e-3, foreach=True))
    assert not _fused.needed_by(build("adam", model, lr=1e-3))
