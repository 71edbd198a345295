"""Overhead of the worker's training path over a bare PyTorch loop, side by side in one process.

The worker path is ``worker.tasks.execute_run`` on a SQLite store: claim, the trainer with every
metric (train/test loss and accuracy, per-layer quantization error, flip rate), a checkpoint
and the epoch's SQL write. The bare loop trains the same model on the same data with the same
optimizer and evaluates the test set once, as any training script would. Both run alternately
(``--repeats`` times each) and the medians are compared. Target: ratio <= 1.05.

    .venv/bin/python benchmarks/train_overhead.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.data import load_dataset
from core.nn import build_model
from core.optim import build
from core.spec import RunConfig
from core.train import evaluate


def bare_epoch(config: RunConfig) -> float:
    """One epoch of a plain loop (shuffle, forward, backward, step) plus one test evaluation."""
    data = load_dataset(config.dataset, train_subset=config.train_subset,
                        test_subset=config.test_subset)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.shape, data.classes, **config.model_args)
    opt = build(config.optimizer, model, lr=config.lr, **config.hparams)
    model.train()
    order = torch.randperm(len(data.train_x))
    for i in range(0, len(order), config.batch_size):
        idx = order[i : i + config.batch_size]
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    evaluate(model, data.test_x, data.test_y)
    return time.perf_counter() - t0


def worker_epoch(config: RunConfig, home: Path) -> float:
    """One epoch through the worker's task body on a SQLite store, including claim and writes."""
    from app import store
    from app.db import init_db, session_scope
    from app.settings import Settings
    from worker.tasks import execute_run

    settings = Settings(home=home)
    settings.ensure_dirs()
    init_db(settings.database_url)
    with session_scope(settings.database_url) as session:
        run_id = store.create_run(session, config).id
    t0 = time.perf_counter()
    state = execute_run(run_id, hostname="bench", settings=settings)
    elapsed = time.perf_counter() - t0
    assert state == "succeeded", state
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k-example subset, 2 repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    repeats = 2 if args.quick else args.repeats
    config = RunConfig(model="mlp", dataset="mnist", optimizer="bamsprod", epochs=1,
                       batch_size=128, seed=0, device="cpu",
                       train_subset=10_000 if args.quick else None)
    load_dataset(config.dataset)  # read and verify the files once, outside the timings
    bare, worker = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            bare.append(bare_epoch(config))
            worker.append(worker_epoch(config, Path(tmp) / f"home{r}"))
            print(f"repeat {r + 1}: bare {bare[-1]:.2f} s  worker {worker[-1]:.2f} s", flush=True)
    b, w = statistics.median(bare), statistics.median(worker)
    result = {
        "benchmark": "train_overhead",
        "config": config.model_dump(mode="json"),
        "bare_seconds": bare,
        "worker_seconds": worker,
        "ratio": w / b,
        "target": 1.05,
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
    }
    print(f"{'path':<10}{'median s':>10}")
    print(f"{'bare':<10}{b:>10.2f}")
    print(f"{'worker':<10}{w:>10.2f}")
    print(f"worker / bare = {w / b:.3f} (target <= 1.05)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
