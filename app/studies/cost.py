"""What a reproduction plan costs before it runs: runs, epochs, GPU and CPU seconds.

The model is deliberately simple and every number in it is stated:

- one epoch of a task costs ``EPOCH_SECONDS[device][model config]`` (measured on the whole
  data set: 60,000 training examples including the validation split, 10,000 test) scaled by
  the examples the task sees (train + test) over 70,000;
- a config without a measurement of its own takes its model's full-width one (an upper bound
  on a GPU, where small models are launch-bound, and a crude one on a CPU);
- each run adds ``RUN_OVERHEAD`` seconds (data to the device, model and optimizer built,
  claim and writes), and each of the ``GPU_PACK`` GPU worker processes pays
  ``GPU_PROCESS_START`` once (CUDA context and the first compile of the optimizer step, cached
  on disk afterwards);
- stage 1 is counted at full length: successive halving can only make it cheaper;
- GPU wall time is the run seconds over ``GPU_PACK`` runs sharing the card (the reference
  epoch times are per run with four runs packed); CPU time is one worker with one torch thread
  (``bamsprod reproduce``'s embedded service), run after run.
"""

from __future__ import annotations

import json
from typing import Any

from bamsprod.app.studies.plan import Plan, Task
from bamsprod.core.spec import resolve_model_args

FULL_EXAMPLES = 70_000
GPU_PACK = 4
GPU_PROCESS_START = 30.0
RUN_OVERHEAD = {"gpu": 3.0, "cpu": 0.3}


def config_key(model: str, model_args: dict[str, Any]) -> str:
    """``mlp {"depth": 2, "width": 512}``: the model with every argument resolved."""
    return f"{model} {json.dumps(resolve_model_args(model, model_args), sort_keys=True)}"


def _ref(model: str, **args: Any) -> str:
    return config_key(model, args)


# Seconds per epoch of one run on the whole data set (MNIST or Fashion-MNIST, batch 128).
# gpu: measured on an H200 with four runs sharing the card (mlp 2-3 s, the middle taken).
# cpu: this project's 2-core shared machine, one torch thread, BAMSProd, measured on a subset
# (2,000-4,000 examples; 512 for the full-width conv nets) and scaled to 70,000.
EPOCH_SECONDS: dict[str, dict[str, float]] = {
    "gpu": {
        _ref("mlp", width=512, depth=2): 2.5,
        _ref("binarynet", width_mult=1.0): 5.7,
        _ref("resnet18", width_mult=1.0): 11.0,
    },
    "cpu": {
        _ref("mlp", width=512, depth=2): 10.5,
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
    """(seconds per epoch of one run of ``task`` on ``device``, measured for this config)."""
    table = EPOCH_SECONDS[device]
    key = config_key(task.model, task.model_args)
    exact = key in table
    full = table[key] if exact else table[FULL_WIDTH[task.model]]
    return full * sum(task.examples()) / FULL_EXAMPLES, exact


def _seconds(task: Task, device: str, runs: int, epochs: int) -> float:
    return runs * RUN_OVERHEAD[device] + epochs * epoch_seconds(task, device)[0]


def task_cost(plan: Plan, task: Task) -> dict[str, Any]:
    """Runs and epochs of one task's tuned sweeps (stage 1 at full length), and their seconds."""
    s1_runs = s2_runs = 0
    for search in plan.searches:
        a, b = plan.tuned_runs(search)
        s1_runs, s2_runs = s1_runs + a, s2_runs + b
    s1_epochs, s2_epochs = s1_runs * task.stage1_epochs, s2_runs * task.epochs
    runs, epochs = s1_runs + s2_runs, s1_epochs + s2_epochs
    return {
        "part": task.key, "what": task.title, "stage1_runs": s1_runs, "stage1_epochs": s1_epochs,
        "stage2_runs": s2_runs, "stage2_epochs": s2_epochs, "runs": runs, "epochs": epochs,
        **_device_seconds(task, runs, epochs),
    }


def map_cost(plan: Plan) -> dict[str, Any] | None:
    m = plan.sensitivity
    if m is None:
        return None
    task = plan.task(m.task)
    runs = m.n_cells * len(m.seeds)
    return {
        "part": "kappa x gamma", "what": f"BAMSProd map on {task.key}", "stage1_runs": 0,
        "stage1_epochs": 0, "stage2_runs": runs, "stage2_epochs": runs * task.epochs,
        "runs": runs, "epochs": runs * task.epochs,
        **_device_seconds(task, runs, runs * task.epochs),
    }


def _device_seconds(task: Task, runs: int, epochs: int) -> dict[str, Any]:
    return {
        "gpu_epoch_seconds": epoch_seconds(task, "gpu")[0],
        "gpu_measured": epoch_seconds(task, "gpu")[1],
        "gpu_run_seconds": _seconds(task, "gpu", runs, epochs),
        "cpu_epoch_seconds": epoch_seconds(task, "cpu")[0],
        "cpu_measured": epoch_seconds(task, "cpu")[1],
        "cpu_seconds": _seconds(task, "cpu", runs, epochs),
    }


def plan_cost(plan: Plan) -> dict[str, Any]:
    """Per part (each task, the map) and in total: runs, epochs, GPU run seconds and wall time
    with ``GPU_PACK`` runs per card, CPU seconds with one worker."""
    parts = [task_cost(plan, t) for t in plan.tasks]
    if (m := map_cost(plan)) is not None:
        parts.append(m)
    run_seconds = sum(p["gpu_run_seconds"] for p in parts) + GPU_PACK * GPU_PROCESS_START
    return {
        "parts": parts,
        "runs": sum(p["runs"] for p in parts),
        "epochs": sum(p["epochs"] for p in parts),
        "gpu_run_seconds": run_seconds,
        "gpu_pack": GPU_PACK,
        "gpu_wall_seconds": run_seconds / GPU_PACK,
        "cpu_seconds": sum(p["cpu_seconds"] for p in parts),
        "assumptions": {
            "gpu_pack": GPU_PACK, "gpu_process_start": GPU_PROCESS_START,
            "run_overhead": dict(RUN_OVERHEAD), "full_examples": FULL_EXAMPLES,
        },
    }
