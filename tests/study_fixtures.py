"""Hand-made runs, compare answers and study reports for the study tests (no service).

Two shapes of compare answer: :func:`hand_made_compare` goes through ``app.compare`` as it
is (per-run times read from each run's epochs), and :func:`answer` writes an answer by hand in
the shape with per-run ``to_target`` / ``to_target_seconds`` / ``reached_at_first_eval`` (times
interpolated between evaluations)."""

from __future__ import annotations

from typing import Any

from bamsprod.app import compare as cmp
from bamsprod.app.studies import stats as rs
from bamsprod.app.studies.cost import study_cost
from bamsprod.app.studies.studyfile import load_study

ENV = {"device_name": "Test CPU", "threads": 1, "torch": "2.13.0+cpu", "python": "3.11.7",
       "bamsprod": "0.1"}


def hand_run(rid: int, opt: str, seed: int, accs: list[float], secs: float = 1.0,
             hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"optimizer": opt, "model": "mlp", "dataset": "mnist", "seed": seed, "lr": 1e-3,
              "hparams": hparams or {}}
    metrics = [{"epoch": e, "test_acc": a, "val_acc": a, "train_acc": a, "quant_error": 0.3,
                "seconds": secs} for e, a in enumerate(accs, 1)]
    return {"id": rid, "name": f"{opt} {seed}", "state": "succeeded", "seed": seed,
            "config": config, "config_hash": f"{opt}{sorted((hparams or {}).items())}",
            "metrics": metrics, "environment": dict(ENV), "device": "cpu"}


# Adam reaches its best 0.90 at epoch 4 on every seed (target 0.891). BAMSProd reaches the
# target at epochs 2, 4 and 3 (speed-ups 2, 1, 4/3) at 1.5 s per epoch (Adam 1 s: seconds
# ratios 4/3, 2/3, 8/9), and ends 5, 3 and 4 points above Bop.
ADAM = [0.70, 0.80, 0.85, 0.90]
BAMS = {0: [0.80, 0.895, 0.90, 0.91], 1: [0.70, 0.80, 0.85, 0.90], 2: [0.75, 0.85, 0.895, 0.905]}
BOP_FINAL = {0: 0.86, 1: 0.87, 2: 0.865}


def hand_made_runs() -> list[dict[str, Any]]:
    runs = []
    for seed in range(3):
        runs.append(hand_run(len(runs) + 1, "bamsprod", seed, BAMS[seed], secs=1.5))
        runs.append(hand_run(len(runs) + 1, "adam", seed, ADAM))
        runs.append(hand_run(len(runs) + 1, "bop", seed, [0.6, 0.7, 0.8, BOP_FINAL[seed]]))
        runs.append(hand_run(len(runs) + 1, "sgd", seed, [0.5, 0.6, 0.7, 0.8]))
    return runs


PER_RUN_TIMES = ("to_target", "to_target_seconds", "reached_at_first_eval", "to_target_from",
                 "evals")


def hand_made_compare(runs: list[dict[str, Any]] | None = None, target: float | None = None,
                      baseline: str | None = "adam") -> dict[str, Any]:
    """``app.compare`` over the hand-made runs, baseline Adam, each run's series included, as
    an answer without per-run times (a server before evaluation points): the study reads each
    run's epochs, so the hand computations below are in whole epochs."""
    got = cmp.compare(runs or hand_made_runs(), group_by=["optimizer"], baseline=baseline,
                      target=target)
    for entry in got["runs"]:
        for key in PER_RUN_TIMES:
            entry.pop(key, None)
    return got


def hand_made_records() -> list[dict[str, Any]]:
    runs = hand_made_runs()
    return rs.run_records(hand_made_compare(runs), {r["id"]: r for r in runs})


def answer(runs: list[dict[str, Any]], target: float = 0.9, budget: int = 4,
           metric: str = "val_acc") -> dict[str, Any]:
    """A compare answer in the shape with per-run times: ``runs`` are dicts with ``id``,
    ``optimizer``, ``seed``, ``to_target``, ``to_target_seconds``, ``first`` and ``finals``
    (test accuracy per epoch); ``seconds`` per epoch default to 1."""
    out = []
    for r in runs:
        n = len(r["finals"])
        out.append({
            "id": r["id"], "name": "", "state": "succeeded", "seed": r["seed"],
            "optimizer": r["optimizer"], "config_hash": r["optimizer"], "group": r["optimizer"],
            "to_target": r.get("to_target"), "to_target_seconds": r.get("to_target_seconds"),
            "reached_at_first_eval": r.get("first", False),
            "series": {"epoch": list(range(1, n + 1)), "x": list(range(1, n + 1)),
                       "test_acc": r["finals"], "val_acc": r["finals"],
                       "seconds": r.get("seconds", [1.0] * n)},
        })
    return {"metric": metric, "target": target, "budget": budget, "runs": out, "groups": []}


def hand_made_report(name: str = "quick") -> dict[str, Any]:
    """A report of one task (the hand-made runs) and a two-cell map, as ``study run`` saves
    it, before ``analyse``."""
    study = load_study(name)
    main = hand_made_compare()
    runs = {r["id"]: r for r in hand_made_runs()}
    tuning = [{"optimizer": o, "tuned": True, "criterion": "best_val_acc",
               "searched": {"lr": [1e-4, 1e-3]}, "stage1_run_ids": [91, 92],
               "chosen": {"lr": 1e-3}, "value": 0.9, "best_run_id": 92,
               "stage2_run_ids": [3, 4, 5], "sweep_id": 1,
               "stage1_states": {"succeeded": 1, "pruned": 1}}
              for o in ("bamsprod", "adam", "bop", "sgd")]
    tuning[-1]["searched"] = {"lr": [1e-3, 1e-2, 1e-1]}  # SGD's choice is the lowest rate
    return {
        "format": 3, "created": "2026-01-01T00:00:00Z", "wall_seconds": 125.0,
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "torch": "2.13.0+cpu"},
        "devices": ["cpu"], "worker_hosts": ["w@host"],
        "service": {"url": "http://x", "mode": "embedded"}, "note": "",
        "study": study.to_dict(), "cost": study_cost(study),
        "compute": {"runs": 20, "run_seconds": 90.0, "run_seconds_by_device": {"cpu": 90.0},
                    "epoch_seconds": 80.0},
        "tasks": [{"key": "mlp-mnist", "title": "mlp on MNIST", "states": {"succeeded": 12},
                   "tuning": tuning, "run_ids": list(runs), "stage2": {},
                   "metric": "test_acc", "target": main["target"], "budget": main["budget"],
                   "configs": {}, "runs": rs.run_records(main, runs),
                   "trials": {"bamsprod": [0.85, 0.9], "adam": [0.8, 0.9, 0.85],
                              "bop": [0.7, None], "sgd": [0.6, 0.65, 0.7]},
                   "compare": {"main": rs.slim_compare(main, keep_series=True)}}],
        "sensitivity": {"task": "mlp-mnist", "optimizer": "bamsprod", "sweep_id": 9,
                        "run_ids": [], "lr": 1e-3, "kappas": [1.0, 4.0], "gammas": [1e-3, 1e-2],
                        "seeds": [0, 1, 2], "target": main["target"],
                        "states": {"succeeded": 6}, "runs": hand_made_map_records(main)},
    }


def hand_made_map_records(main: dict[str, Any]) -> list[dict[str, Any]]:
    """Two cells at the hand-made task's target: (kappa 1, gamma 1e-3) reaches it at epoch 2 on
    every seed and ends 5 points above Bop; (kappa 4, gamma 1e-2) never reaches it."""
    runs = []
    for seed in range(3):
        runs.append(hand_run(100 + seed, "bamsprod", seed,
                             [0.8, 0.895, 0.9, BOP_FINAL[seed] + 0.05],
                             hparams={"kappa": 1.0, "gamma": 1e-3}))
        runs.append(hand_run(200 + seed, "bamsprod", seed, [0.5, 0.6, 0.7, 0.8],
                             hparams={"kappa": 4.0, "gamma": 1e-2}))
    got = hand_made_compare(runs, target=main["target"], baseline=None)
    return rs.run_records(got, {r["id"]: r for r in runs})
