"""A study as data (no HTTP, no torch): tasks x optimizers x tuning x seeds, a target, claims,
and an optional kappa x gamma map; and the ``POST /api/sweeps`` bodies that run it.

A study comes from a TOML file (:mod:`app.studies.studyfile`, ``docs/studies.md``); the shipped
ones are ``app/studies/files/*.toml``. Each optimizer of each task is one sweep:

- **tuned** (two or more settings, unless the file says ``tuned = false``): a tuned sweep
  (``docs/tuning.md``): stage 1 tries every setting on seed 0 for the task's
  ``stage1_epochs`` on the validation split, stage 2 runs the best one on every seed;
- **fixed** (one setting): a grid sweep of that setting over the seeds.

The map is a grid sweep over the map optimizer's ``kappa`` x ``gamma`` at a fixed learning rate,
so it queues at once instead of waiting for tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bamsprod.app.studies.claims import Claim
from bamsprod.core.config import DATASETS
from bamsprod.core.search_space import lr_grid

TAG = "study"
# The order of rows in every table and chart (others follow in the study's order).
OPTIMIZER_ORDER = ("bamsprod", "adam", "amsgrad", "adabound", "amsbound", "bop", "sgd")
CRITERION = "best_val_acc"
DEFAULT_FRACTION = 0.99


@dataclass(frozen=True)
class Task:
    """One model x data set x budget; every optimizer and seed runs it unchanged."""

    key: str
    title: str
    model: str
    dataset: str
    model_args: dict[str, Any]
    epochs: int  # stage 2 (and the map): the budget the claims are measured at
    stage1_epochs: int  # each stage-1 trial
    train_subset: int | None = None  # None: the whole training set
    test_subset: int | None = None
    batch_size: int = 128
    val_split: float = 0.1
    evals_per_epoch: int = 1
    target: float | None = None  # an absolute target; None: the study's target rule

    def base_config(self) -> dict[str, Any]:
        """The run config fields the task fixes (no optimizer, lr, seed or name).
        ``evals_per_epoch`` is sent only when it is not 1, so a server without the field
        still takes the others."""
        base = {
            "model": self.model,
            "model_args": dict(self.model_args),
            "dataset": self.dataset,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "val_split": self.val_split,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "scheduler": "none",
            "device": "auto",
        }
        if self.evals_per_epoch != 1:
            base["evals_per_epoch"] = self.evals_per_epoch
        return base

    def examples(self) -> tuple[int, int]:
        """(train, test) examples one epoch sees (the train side includes the validation
        split, which is evaluated every epoch). A data set that does not state its sizes counts
        as MNIST-sized (60,000 / 10,000)."""
        meta = DATASETS.get(self.dataset) or {}
        full_train, full_test = meta.get("train") or 60_000, meta.get("test") or 10_000
        train = min(self.train_subset or full_train, full_train)
        test = min(self.test_subset or full_test, full_test)
        return train, test


@dataclass(frozen=True)
class Search:
    """One optimizer of the study: its learning rates (``lr_range``: given as a log range
    ``(min, max)``, the rates being ``lr_grid(min, max, len(lrs))``), the values of its searched
    hyperparameters, the ones it fixes, and whether it is tuned."""

    optimizer: str
    lrs: tuple[float, ...]
    hparams: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # searched: 2+ values
    fixed: dict[str, Any] = field(default_factory=dict)
    tuned: bool = True
    lr_range: tuple[float, float] | None = None
    source: str = ""

    def grid(self) -> list[float]:
        """The learning rates stage 1 tries (or the one fixed rate)."""
        return list(self.lrs)

    def n_settings(self) -> int:
        """Stage-1 runs: rates x the values of each searched hyperparameter."""
        return len(self.lrs) * math.prod(len(v) for v in self.hparams.values())

    def tune_range(self) -> tuple[float, float, int]:
        """``(lr_min, lr_max, n_lr)`` of a tuned sweep whose grid is exactly :meth:`grid`."""
        lo, hi = self.lr_range or (min(self.lrs), max(self.lrs))
        return lo, hi, len(self.lrs)


@dataclass(frozen=True)
class SensitivityMap:
    """The map optimizer over kappa x gamma on one task, at a fixed learning rate."""

    task: str
    kappas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    gammas: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    seeds: tuple[int, ...] = (0,)
    lr: float = 1e-3
    optimizer: str = "bamsprod"

    @property
    def n_cells(self) -> int:
        return len(self.kappas) * len(self.gammas)


@dataclass(frozen=True)
class Target:
    """How each task's target is set: ``fraction`` x the best per-evaluation mean ``metric`` of
    the ``baseline`` optimizer's stage-2 runs within the budget (unless the task gives one)."""

    metric: str = "test_acc"
    baseline: str = "adam"
    fraction: float = DEFAULT_FRACTION


@dataclass(frozen=True)
class Study:
    name: str
    purpose: str
    tasks: tuple[Task, ...]
    searches: tuple[Search, ...]
    seeds: tuple[int, ...]
    target: Target
    claims: tuple[Claim, ...] = ()
    sensitivity: SensitivityMap | None = None
    cuts: tuple[str, ...] = ()
    device: str = "cpu"  # what the study is sized for: its cost headline
    workers: int = 1  # worker processes (CPU), or runs sharing one card (GPU)
    threads: int = 1  # torch threads per worker process
    source: str = ""  # the file it came from

    def task(self, key: str) -> Task:
        return next(t for t in self.tasks if t.key == key)

    def search(self, optimizer: str) -> Search:
        return next(s for s in self.searches if s.optimizer == optimizer)

    def tuned_runs(self, search: Search) -> tuple[int, int]:
        """(stage-1 runs, stage-2 runs) of one optimizer on one task."""
        return (search.n_settings() if search.tuned else 0), len(self.seeds)

    @property
    def n_runs(self) -> int:
        per_task = sum(sum(self.tuned_runs(s)) for s in self.searches)
        m = self.sensitivity
        return len(self.tasks) * per_task + (m.n_cells * len(m.seeds) if m else 0)

    def baselines(self) -> dict[str, list[str]]:
        """The baselines each kind of measure is taken against: ``speed`` (the target's
        baseline and every speed-up claim's) and ``gain`` (every accuracy claim's)."""
        speed = [self.target.baseline] + [c.baseline for c in self.claims if c.kind == "speed"]
        gain = [c.baseline for c in self.claims if c.kind == "gain"]
        return {"speed": list(dict.fromkeys(speed)), "gain": list(dict.fromkeys(gain))}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_runs"] = self.n_runs
        out["claims"] = [c.to_dict() for c in self.claims]
        for s, d in zip(self.searches, out["searches"], strict=True):
            d["grid"] = s.grid()
        return out

    def override(self, seeds: int | None = None, epochs: int | None = None) -> Study:
        """``seeds`` (stage 2, and at most as many for the map) and ``epochs`` (every task's
        budget; stage 1 is capped at it) replaced."""
        study = self
        if seeds is not None:
            if seeds < 1:
                raise ValueError("seeds must be >= 1")
            m = study.sensitivity
            study = replace(study, seeds=tuple(range(seeds)),
                            sensitivity=m and replace(m, seeds=m.seeds[:seeds]))
        if epochs is not None:
            if epochs < 1:
                raise ValueError("epochs must be >= 1")
            study = replace(study, tasks=tuple(
                replace(t, epochs=epochs, stage1_epochs=min(t.stage1_epochs, epochs))
                for t in study.tasks))
        return study


def log_rates(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """The distinct rates of a log range, as tuned sweeps space them."""
    return tuple(dict.fromkeys(lr_grid(lo, hi, n)))


def ordered(names: Sequence[str]) -> list[str]:
    """Optimizer names in report order: the built-ins' order, then the rest as given."""
    return [o for o in OPTIMIZER_ORDER if o in names] + [o for o in names
                                                         if o not in OPTIMIZER_ORDER]


# -------------------------------------------------------------------------- sweep bodies


def _tags(tags: Sequence[str], task: Task) -> list[str]:
    return [*tags, task.key]


def tuned_body(study: Study, task: Task, search: Search, tags: Sequence[str]) -> dict[str, Any]:
    """``POST /api/sweeps`` body tuning one optimizer on one task (stage 1 on seed 0)."""
    lo, hi, n = search.tune_range()
    base = {**task.base_config(), "seed": 0, "tags": _tags(tags, task)}
    if search.fixed:
        base["hparams"] = dict(search.fixed)
    return {
        "name": f"{study.name} {task.key} {search.optimizer}",
        "strategy": "tune",
        "seeds": list(study.seeds),
        "base": base,
        "tune": {
            "optimizers": [search.optimizer],
            "lr_min": lo,
            "lr_max": hi,
            "n_lr": n,
            "sampler": "grid",
            "hparams": {k: list(v) for k, v in search.hparams.items()},
            "stage1_epochs": task.stage1_epochs,
            "criterion": CRITERION,
        },
    }


def fixed_body(study: Study, task: Task, search: Search, tags: Sequence[str]) -> dict[str, Any]:
    """``POST /api/sweeps`` body of an optimizer that is not tuned: its one setting, every seed."""
    hparams = {**search.fixed, **{k: v[0] for k, v in search.hparams.items()}}
    return {
        "name": f"{study.name} {task.key} {search.optimizer}",
        "base": {**task.base_config(), "optimizer": search.optimizer, "lr": search.lrs[0],
                 "hparams": hparams, "tags": _tags(tags, task)},
        "seeds": list(study.seeds),
    }


def map_body(study: Study, tags: Sequence[str]) -> dict[str, Any]:
    """``POST /api/sweeps`` body of the kappa x gamma grid (fixed lr)."""
    m = study.sensitivity
    assert m is not None
    task = study.task(m.task)
    return {
        "name": f"{study.name} {task.key} {m.optimizer} kappa x gamma",
        "base": {**task.base_config(), "optimizer": m.optimizer, "lr": m.lr,
                 "tags": [*_tags(tags, task), "kappa-gamma"]},
        "grid": {"hparams.kappa": list(m.kappas), "hparams.gamma": list(m.gammas)},
        "seeds": list(m.seeds),
    }


def sweep_bodies(study: Study, tags: Sequence[str] = (TAG,)) -> list[dict[str, Any]]:
    """Every sweep of the study, as ``{"task", "optimizer" (None for the map), "tuned",
    "body"}``; the most expensive tasks first, so their stage 2 is not the last thing a packed
    GPU waits on."""
    out: list[dict[str, Any]] = []
    for task in reversed(study.tasks):
        for search in study.searches:
            make = tuned_body if search.tuned else fixed_body
            out.append({"task": task.key, "optimizer": search.optimizer, "tuned": search.tuned,
                        "body": make(study, task, search, tags)})
    if study.sensitivity is not None:
        out.append({"task": study.sensitivity.task, "optimizer": None, "tuned": False,
                    "body": map_body(study, tags)})
    return out


def compare_params(run_ids: Sequence[int], baseline: str | None = None,
                   target: float | None = None, x: str = "epoch", group_by: str = "optimizer",
                   include: str | None = None, metric: str | None = None) -> dict[str, Any]:
    """Query parameters for ``GET /api/compare`` over ``run_ids``."""
    given = {"baseline": baseline, "target": target, "include": include, "metric": metric}
    return {"runs": ",".join(str(i) for i in run_ids), "group_by": group_by, "x": x,
            **{k: v for k, v in given.items() if v is not None}}
