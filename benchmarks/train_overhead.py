"""Overhead of the worker's training path over a bare PyTorch loop, side by side in one process.

The worker path is ``worker.tasks.execute_run`` on a SQLite store: claim, the trainer with every
metric (train/test loss and accuracy, per-layer quantization error, flip rate), a checkpoint
and the epoch's SQL write. The bare loop trains the same model on the same data with the same
optimizer and evaluates the test set once, as any training script would. Both run alternately
(``--repeats`` times each) and the medians are compared. Target: ratio <= 1.05.

``--models mlp,binarynet,resnet18`` adds a second table: one epoch of the trainer
(``core.train.train``, Fashion-MNIST, batch 100) per model with BAMSProd and with Adam, side by
side, and their ratio (target <= 1.05), with ``--compile`` choosing the train step's
torch.compile mode. ``--pack 1,2,4`` adds a third: that many trainer processes (spawned, each
its own CUDA context, as ``bamsprod worker --concurrency N`` runs them) sharing the device, and
the epochs per second they reach together.

    .venv/bin/python benchmarks/train_overhead.py [--device cpu|cuda] [--quick] [--json out.json]
        [--models mlp,binarynet,resnet18] [--compile off|default|reduce-overhead] [--pack 1,2,4]
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

from bamsprod.core.config import RunConfig
from bamsprod.core.data import load_dataset
from bamsprod.core.nn import build_model
from bamsprod.core.optim import build
from bamsprod.core.train import evaluate, train


def bare_epoch(config: RunConfig) -> float:
    """One epoch of a plain loop (shuffle, forward, backward, step) plus one test evaluation."""
    data = load_dataset(config.dataset, train_subset=config.train_subset,
                        test_subset=config.test_subset)
    dev = torch.device("cpu" if config.device == "auto" else config.device)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.shape, data.classes, **config.model_args).to(dev)
    opt = build(config.optimizer, model, lr=config.lr, **config.hparams)
    train_x, train_y = data.train_x.to(dev), data.train_y.to(dev)
    model.train()
    order = torch.randperm(len(train_x)).to(dev)
    for i in range(0, len(order), config.batch_size):
        idx = order[i : i + config.batch_size]
        loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    evaluate(model, data.test_x.to(dev), data.test_y.to(dev))
    return time.perf_counter() - t0


def trainer_epoch(config: RunConfig) -> tuple[float, float, str]:
    """``(first epoch s, second epoch s, optimizer path)`` of ``core.train.train`` (2 epochs):
    the first holds the warm-up (compiling, CUDA graph capture), the second is the steady state."""
    result = train(config.model_copy(update={"epochs": 2}))
    # Training and evaluation, as the bare loop times them (an epoch's seconds are training).
    first, second = (m.seconds + m.eval_seconds for m in result.history)
    return first, second, result.optimizer_path


def optimizer_table(models: list[str], device: str, compile_mode: str, repeats: int,
                    subset: int | None) -> list[dict]:
    """BAMSProd's trainer epoch over Adam's, per model, timed alternately ``repeats`` times."""
    rows = []
    for model in models:
        args = {"width_mult": 1.0} if model == "binarynet" else {}
        times: dict[str, list[float]] = {"bamsprod": [], "adam": []}
        firsts: dict[str, float] = {}
        paths: dict[str, str] = {}
        for _ in range(repeats):
            for opt in times:
                config = RunConfig(model=model, model_args=args, dataset="fashion-mnist",
                                   optimizer=opt, batch_size=100, device=device,
                                   compile=compile_mode, train_subset=subset)
                first, second, paths[opt] = trainer_epoch(config)
                firsts.setdefault(opt, first)
                times[opt].append(second)
        b, a = statistics.median(times["bamsprod"]), statistics.median(times["adam"])
        rows.append({"model": model, "bamsprod_s": b, "adam_s": a, "ratio": b / a,
                     "first_epoch_s": firsts, "paths": paths, "compile": compile_mode})
        print(f"{model:<10} bamsprod {b:7.2f} s  adam {a:7.2f} s  ratio {b / a:5.2f}  "
              f"(first epochs {firsts['bamsprod']:.1f} / {firsts['adam']:.1f} s; "
              f"paths {paths['bamsprod']} / {paths['adam']})", flush=True)
    return rows


def _packed_run(device: str, subset: int | None, queue) -> None:  # type: ignore[no-untyped-def]
    config = RunConfig(model="mlp", dataset="fashion-mnist", optimizer="bamsprod", epochs=2,
                       batch_size=100, device=device, train_subset=subset)
    t0 = time.perf_counter()
    train(config)
    queue.put(time.perf_counter() - t0)


def packing_table(counts: list[int], device: str, subset: int | None) -> list[dict]:
    """Epochs per second of ``n`` spawned trainer processes sharing the device, per ``n``."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh CUDA context per process, never a forked one
    rows = []
    for n in counts:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_packed_run, args=(device, subset, queue)) for _ in range(n)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        walls = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        rows.append({"runs": n, "wall_s": wall, "run_s": walls, "epochs_per_s": 2 * n / wall})
        print(f"{n} runs at once: {wall:6.1f} s wall, {2 * n / wall:.2f} epochs/s "
              f"(each run {statistics.median(walls):.1f} s incl. start-up)", flush=True)
    return rows


def worker_epoch(config: RunConfig, home: Path) -> float:
    """One epoch through the worker's task body on a SQLite store, including claim and writes."""
    from bamsprod.app import store
    from bamsprod.app.settings import Settings
    from bamsprod.app.store.engine import init_db, session_scope
    from bamsprod.worker.tasks import execute_run

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
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default="", help="comma-separated: BAMSProd vs Adam epoch table")
    ap.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead"])
    ap.add_argument("--pack", default="", help="comma-separated run counts sharing the device")
    ap.add_argument("--skip-overhead", action="store_true", help="only the other tables")
    args = ap.parse_args()
    repeats = 2 if args.quick else args.repeats
    subset = 10_000 if args.quick else None
    result: dict = {"benchmark": "train_overhead", "device": args.device}
    if args.device == "cuda":
        result["card"] = torch.cuda.get_device_name()
    if args.models:
        print(f"trainer epoch, BAMSProd vs Adam, fashion-mnist, batch 100, {args.device}, "
              f"compile {args.compile} (median of {repeats}; the second of two epochs)")
        result["optimizers"] = optimizer_table(args.models.split(","), args.device, args.compile,
                                               repeats, subset)
    if args.pack:
        result["packing"] = packing_table([int(n) for n in args.pack.split(",")], args.device,
                                          subset)
    if args.skip_overhead:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    config = RunConfig(model="mlp", dataset="mnist", optimizer="bamsprod", epochs=1,
                       batch_size=128, seed=0, device=args.device, train_subset=subset)
    load_dataset(config.dataset)  # read and verify the files once, outside the timings
    bare, worker = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            bare.append(bare_epoch(config))
            worker.append(worker_epoch(config, Path(tmp) / f"home{r}"))
            print(f"repeat {r + 1}: bare {bare[-1]:.2f} s  worker {worker[-1]:.2f} s", flush=True)
    b, w = statistics.median(bare), statistics.median(worker)
    result |= {
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
