"""What a study costs before it runs: runs, epochs, GPU and CPU seconds and wall time.

The model is deliberately simple and every number in it is stated here:

- one epoch of a task costs ``EPOCH_SECONDS[device][model config]`` (measured on the whole
  data set: 60,000 training examples including the validation split, 10,000 test, one
  evaluation an epoch) scaled by the examples the task sees (train + test) over 70,000;
- each evaluation beyond the first in an epoch adds one pass over the validation split at
  ``EVAL_PASS_COST`` of a training pass per example (a forward pass only, against forward,
  backward and the optimizer step);
- a config without a measurement of its own takes its model's full-width one (an upper bound
  on a GPU, where small models are launch-bound, and a crude one on a CPU);
- each run adds ``RUN_OVERHEAD`` seconds (data to the device, model and optimizer built,
  claim and writes), and each GPU worker process pays ``GPU_PROCESS_START`` once (CUDA context
  and the first compile of the optimizer step, cached on disk afterwards);
- stage 1 is counted at full length: successive halving can only make it cheaper;
- GPU wall time is the run seconds over the runs sharing the card (the study's ``workers``
  for a GPU study, else ``GPU_PACK``; the reference epoch times are per run with four runs
  packed); CPU wall time is the run seconds over the worker processes (the study's
  ``workers`` for a CPU study, else 1), each process at ``CPU_PARALLEL_EFFICIENCY`` when
  there are several.
"""

from __future__ import annotations

import json
from typing import Any

from bamsprod.app.studies.plan import Study, Task
from bamsprod.core.config import resolve_model_args

FULL_EXAMPLES = 70_000
GPU_PACK = 4
GPU_PROCESS_START = 30.0
# cpu: the data set decoded and moved, model and optimizer built, claim and writes (a run's
# first epoch starts about 2 s after its claim on the 2-core machine).
RUN_OVERHEAD = {"gpu": 3.0, "cpu": 2.0}
EVAL_PASS_COST = 1 / 3
# Two worker processes of one thread each on this project's 2-core machine: an mlp 512x2
# Fashion-MNIST epoch with 4 evaluations took 7.9 s in each (6.9 s training, 1.0 s evaluating;
# 2026-12-06) against 5.97 s alone, 76% per process (a 12-run sweep gave 80%,
# benchmarks/results/scale.json).
CPU_PARALLEL_EFFICIENCY = 0.76


def config_key(model: str, model_args: dict[str, Any]) -> str:
    """``mlp {"depth": 2, "width": 512}``: the model with every argument resolved."""
    return f"{model} {json.dumps(resolve_model_args(model, model_args), sort_keys=True)}"


def _ref(model: str, **args: Any) -> str:
    return config_key(model, args)


# Seconds per epoch of one run on the whole data set (MNIST or Fashion-MNIST, batch 128).
# gpu: measured on an H200 with four runs sharing the card (mlp 2-3 s, the middle taken).
# cpu: this project's 2-core machine, one torch thread, BAMSProd. mlp 512x2: 5.5 s, one epoch
# on the full Fashion-MNIST with the machine quiet (2026-12; an earlier 10.5 s came from
# subsets on a busy machine); the rest measured on a subset (2,000-4,000 examples; 512 for the
# full-width conv nets) on a shared machine and scaled to 70,000.
EPOCH_SECONDS: dict[str, dict[str, float]] = {
    "gpu": {
        _ref("mlp", width=512, depth=2): 2.5,
        _ref("binarynet", width_mult=1.0): 5.7,
        _ref("resnet18", width_mult=1.0): 11.0,
    },
    "cpu": {
        _ref("mlp", width=512, depth=2): 5.5,
        _ref("mlp", width=64, depth=2): 0.93,
        _ref("binarynet", width_mult=1.0): 2600.0,
        _ref("binarynet", width_mult=0.0625): 28.0,
        _ref("resnet18", width_mult=1.0): 2420.0,
        _ref("resnet18", width_mult=0.0625): 49.0,
    },
}
FULL_WIDTH = {"mlp": _ref("mlp", width=512, depth=2),
              "binarynet": _ref("binarynet", width_mult=1.0),
              "resnet18": _ref("resnet18", width_mult=1.0)}


def epoch_seconds(task: Task, device: str) -> tuple[float, bool]:
    """(seconds per epoch of one run of ``task`` on ``device``, measured for this config).
    A model without any reference (a plugin's) takes the full-width ``mlp``'s, flagged."""
    table = EPOCH_SECONDS[device]
    key = config_key(task.model, task.model_args)
    exact = key in table
    full = table[key] if exact else table[FULL_WIDTH.get(task.model, FULL_WIDTH["mlp"])]
    train, test = task.examples()
    evals = (task.evals_per_epoch - 1) * round(train * task.val_split) * EVAL_PASS_COST
    return full * (train + test + evals) / FULL_EXAMPLES, exact


def _seconds(task: Task, device: str, runs: int, epochs: int) -> float:
    return runs * RUN_OVERHEAD[device] + epochs * epoch_seconds(task, device)[0]


def task_cost(study: Study, task: Task) -> dict[str, Any]:
    """Runs and epochs of one task's sweeps (stage 1 at full length), and their seconds."""
    s1_runs = s2_runs = 0
    for search in study.searches:
        a, b = study.tuned_runs(search)
        s1_runs, s2_runs = s1_runs + a, s2_runs + b
    s1_epochs, s2_epochs = s1_runs * task.stage1_epochs, s2_runs * task.epochs
    runs, epochs = s1_runs + s2_runs, s1_epochs + s2_epochs
    return {
        "part": task.key, "what": task.title, "stage1_runs": s1_runs, "stage1_epochs": s1_epochs,
        "stage2_runs": s2_runs, "stage2_epochs": s2_epochs, "runs": runs, "epochs": epochs,
        **_device_seconds(task, runs, epochs),
    }


def map_cost(study: Study) -> dict[str, Any] | None:
    m = study.sensitivity
    if m is None:
        return None
    task = study.task(m.task)
    runs = m.n_cells * len(m.seeds)
    return {
        "part": "kappa x gamma", "what": f"{m.optimizer} map on {task.key}", "stage1_runs": 0,
        "stage1_epochs": 0, "stage2_runs": runs, "stage2_epochs": runs * task.epochs,
        "runs": runs, "epochs": runs * task.epochs,
        **_device_seconds(task, runs, runs * task.epochs),
    }


def _device_seconds(task: Task, runs: int, epochs: int) -> dict[str, Any]:
    gpu, gpu_exact = epoch_seconds(task, "gpu")
    cpu, cpu_exact = epoch_seconds(task, "cpu")
    return {
        "gpu_epoch_seconds": gpu, "gpu_measured": gpu_exact,
        "gpu_run_seconds": _seconds(task, "gpu", runs, epochs),
        "cpu_epoch_seconds": cpu, "cpu_measured": cpu_exact,
        "cpu_seconds": _seconds(task, "cpu", runs, epochs),
    }


def cpu_speed(workers: int) -> float:
    """How many single-process run-seconds ``workers`` processes get through per second."""
    return 1.0 if workers == 1 else workers * CPU_PARALLEL_EFFICIENCY


def study_cost(study: Study) -> dict[str, Any]:
    """Per part (each task, the map) and in total: runs, epochs, GPU run seconds and wall time
    with the runs sharing one card, CPU run seconds and wall time with the study's workers."""
    parts = [task_cost(study, t) for t in study.tasks]
    if (m := map_cost(study)) is not None:
        parts.append(m)
    pack = study.workers if study.device == "gpu" else GPU_PACK
    cpu_workers = study.workers if study.device == "cpu" else 1
    run_seconds = sum(p["gpu_run_seconds"] for p in parts) + pack * GPU_PROCESS_START
    cpu_seconds = sum(p["cpu_seconds"] for p in parts)
    return {
        "parts": parts,
        "runs": sum(p["runs"] for p in parts),
        "epochs": sum(p["epochs"] for p in parts),
        "device": study.device,
        "gpu_run_seconds": run_seconds,
        "gpu_pack": pack,
        "gpu_wall_seconds": run_seconds / pack,
        "cpu_seconds": cpu_seconds,
        "cpu_workers": cpu_workers,
        "cpu_threads": study.threads,
        "cpu_wall_seconds": cpu_seconds / cpu_speed(cpu_workers),
        "assumptions": {
            "gpu_pack": pack, "gpu_process_start": GPU_PROCESS_START,
            "run_overhead": dict(RUN_OVERHEAD), "full_examples": FULL_EXAMPLES,
            "eval_pass_cost": EVAL_PASS_COST,
            "cpu_parallel_efficiency": CPU_PARALLEL_EFFICIENCY,
        },
    }
