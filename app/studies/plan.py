"""The reproduction plans: what ``bamsprod reproduce`` submits, as data (no HTTP, no torch).

A plan is tasks (model x data set x epoch budget) x optimizer searches x seeds, plus a BAMSProd
sensitivity map. Every optimizer is tuned through the service's tuned-sweep strategy
(``docs/tuning.md``): one ``strategy: tune`` sweep per task and optimizer, so each optimizer
gets its own learning-rate range and, for Bop, its own ``gamma`` values (a hyperparameter name
the other optimizers share). Stage 1 searches on the validation split; stage 2 runs the best
setting on every seed. The map is a grid sweep over BAMSProd's ``kappa`` x ``gamma`` at its
default learning rate, so it is queued at once instead of waiting for tuning.

- ``paper``: full MNIST and Fashion-MNIST, ``mlp`` 512x2, ``binarynet`` and ``resnet18`` at
  full width, six optimizers, 3 seeds; sized for about 10 minutes of one H100/H200-class GPU
  (``app.studies.cost``), with what was cut to fit in ``Plan.cuts``.
- ``quick``: the same structure at toy size (tiny subsets and widths, 1-2 epochs, two learning
  rates, 2 seeds so paired intervals exist) for a few minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bamsprod.core.search_space import lr_grid
from bamsprod.core.spec import DATASETS, DEFAULT_LR

PAPER_SPEEDUP = 1.2
PAPER_GAIN_POINTS = 3.7
TAG = "reproduce"
PLAN_NAMES = ("paper", "quick")
# The order of rows in every table and chart.
OPTIMIZER_ORDER = ("bamsprod", "adam", "amsgrad", "adabound", "amsbound", "bop", "sgd")
CRITERION = "best_val_acc"


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

    def base_config(self) -> dict[str, Any]:
        """The run config fields the task fixes (no optimizer, lr, seed or name)."""
        return {
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

    def examples(self) -> tuple[int, int]:
        """(train, test) examples one epoch sees (the train side includes the validation
        split, which is evaluated every epoch)."""
        meta = DATASETS[self.dataset]
        train = min(self.train_subset or meta["train"], meta["train"])
        test = min(self.test_subset or meta["test"], meta["test"])
        return train, test


@dataclass(frozen=True)
class Search:
    """Stage 1 of one optimizer: a log-spaced learning-rate range (``n_lr`` rates, the plan's)
    and, optionally, more values of its own hyperparameters; the rest keep the spec defaults."""

    optimizer: str
    lr_min: float
    lr_max: float
    hparams: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    source: str = ""

    def grid(self, n_lr: int) -> list[float]:
        """The learning rates stage 1 tries (as ``app.tuning`` spaces them)."""
        return list(dict.fromkeys(lr_grid(self.lr_min, self.lr_max, n_lr)))

    def n_settings(self, n_lr: int) -> int:
        """Stage-1 runs: rates x the values of each searched hyperparameter."""
        n = len(self.grid(n_lr))
        for values in self.hparams.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class SensitivityMap:
    """BAMSProd over kappa x gamma on one task, at a fixed learning rate, ``seeds`` each."""

    task: str
    kappas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    gammas: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    seeds: tuple[int, ...] = (0,)
    lr: float = DEFAULT_LR["bamsprod"]

    @property
    def n_cells(self) -> int:
        return len(self.kappas) * len(self.gammas)


@dataclass(frozen=True)
class Plan:
    name: str
    purpose: str
    tasks: tuple[Task, ...]
    searches: tuple[Search, ...]
    n_lr: int
    seeds: tuple[int, ...]
    sensitivity: SensitivityMap | None
    cuts: tuple[str, ...] = ()

    def task(self, key: str) -> Task:
        return next(t for t in self.tasks if t.key == key)

    def tuned_runs(self, search: Search) -> tuple[int, int]:
        """(stage-1 runs, stage-2 runs) of one optimizer on one task."""
        return search.n_settings(self.n_lr), len(self.seeds)

    @property
    def n_runs(self) -> int:
        per_task = sum(sum(self.tuned_runs(s)) for s in self.searches)
        m = self.sensitivity
        return len(self.tasks) * per_task + (m.n_cells * len(m.seeds) if m else 0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_runs"] = self.n_runs
        for s, d in zip(self.searches, out["searches"], strict=True):
            d["grid"] = s.grid(self.n_lr)
        return out


# ------------------------------------------------------------------------ the searches

# A decade centred on a default, so three log-spaced rates are default / 3.162, default, x 3.162.
_ADAPTIVE = (10**-3.5, 10**-2.5)
SEARCHES: tuple[Search, ...] = (
    Search("bamsprod", *_ADAPTIVE, source="a decade around its default 1e-3 (Adam's); gamma 1e-3 "
           "and kappa 1 stay at the spec defaults (the kappa x gamma map varies them)"),
    Search("adam", *_ADAPTIVE, source="a decade around Kingma & Ba's 1e-3 (Adam on the latent "
           "weights is the BinaryNet recipe)"),
    Search("amsgrad", *_ADAPTIVE, source="as Adam (Reddi et al. 2018 keep Adam's settings)"),
    Search("adabound", *_ADAPTIVE, source="a decade around Luo et al. 2019's 1e-3; final_lr 0.1, "
           "gamma 1e-3 at their defaults"),
    Search("bop", 10**-2.5, 10**-1.5, {"gamma": (1e-4, 1e-3)},
           source="larq's Bop recipe (Helwegen et al. 2019): Bop for the binary weights with "
           "threshold 1e-8, Adam for the real ones; searched: that Adam's lr (a decade around "
           "larq's 0.01) and gamma in {1e-4 (the recipe), 1e-3 (short budgets)}"),
    Search("sgd", 1e-2, 1e-1, source="momentum 0.9, lr over the usual 0.01-0.1"),
)


# --------------------------------------------------------------------------------- plans

PAPER_TASKS: tuple[Task, ...] = (
    Task("mlp-mnist", "mlp 512x2 on MNIST", "mlp", "mnist", {"width": 512, "depth": 2},
         epochs=3, stage1_epochs=2),
    Task("mlp-fashion", "mlp 512x2 on Fashion-MNIST", "mlp", "fashion-mnist",
         {"width": 512, "depth": 2}, epochs=4, stage1_epochs=2),
    Task("binarynet-fashion", "binarynet on Fashion-MNIST", "binarynet", "fashion-mnist",
         {"width_mult": 1.0}, epochs=3, stage1_epochs=1),
    Task("resnet18-fashion", "resnet18 on Fashion-MNIST", "resnet18", "fashion-mnist",
         {"width_mult": 1.0}, epochs=2, stage1_epochs=1),
)
PAPER_CUTS = (
    "Epochs: 3 (mlp, MNIST), 4 (mlp, Fashion-MNIST), 3 (binarynet), 2 (resnet18) instead of "
    "the paper's hundreds; the report checks whether Adam's validation accuracy has plateaued.",
    "Stage 1: 3 learning rates per optimizer (6 settings for Bop), 2 epochs per trial on the "
    "mlps and 1 on binarynet and resnet18, where successive halving cannot cut anything.",
    "binarynet and resnet18 run on Fashion-MNIST only (MNIST is near-saturated for them; the "
    "mlp covers it); no CIFAR-10 or ImageNet, which the paper uses.",
    "The kappa x gamma map: one seed, on mlp 512x2 / Fashion-MNIST (the cheapest task that is "
    "not saturated), at BAMSProd's default lr 1e-3 so it queues at once.",
    "AMSBound is left out (AdaBound stands for the bound family); add it to SEARCHES to run it.",
)

QUICK_TASKS: tuple[Task, ...] = (
    Task("mlp-mnist", "mlp 64x2 on MNIST (2k examples)", "mlp", "mnist",
         {"width": 64, "depth": 2}, epochs=2, stage1_epochs=1, train_subset=2000,
         test_subset=1000),
    Task("mlp-fashion", "mlp 64x2 on Fashion-MNIST (2k examples)", "mlp", "fashion-mnist",
         {"width": 64, "depth": 2}, epochs=2, stage1_epochs=1, train_subset=2000,
         test_subset=1000),
    Task("binarynet-fashion", "binarynet (width_mult 1/16) on Fashion-MNIST (500 examples)",
         "binarynet", "fashion-mnist", {"width_mult": 0.0625}, epochs=2, stage1_epochs=1,
         train_subset=500, test_subset=500),
    Task("resnet18-fashion", "resnet18 (width_mult 1/16) on Fashion-MNIST (500 examples)",
         "resnet18", "fashion-mnist", {"width_mult": 0.0625}, epochs=2, stage1_epochs=1,
         train_subset=500, test_subset=500),
)


def make_plan(name: str = "paper", seeds: int | None = None, epochs: int | None = None) -> Plan:
    """The ``paper`` or ``quick`` plan; ``seeds`` (stage 2 and at most as many for the map) and
    ``epochs`` (every task's budget; stage 1 is capped at it) override the plan's."""
    if name == "paper":
        plan = Plan(
            "paper",
            "the paper's measures at a GPU budget of about 10 minutes, every optimizer tuned",
            PAPER_TASKS, SEARCHES, n_lr=3, seeds=(0, 1, 2),
            sensitivity=SensitivityMap("mlp-fashion"), cuts=PAPER_CUTS,
        )
    elif name == "quick":
        plan = Plan(
            "quick",
            "the whole path end to end on a CPU in minutes; its numbers measure nothing",
            QUICK_TASKS, SEARCHES, n_lr=2, seeds=(0, 1),
            sensitivity=SensitivityMap("mlp-fashion"),
            cuts=("Toy widths, 500-2,000 examples, 1 epoch per trial and 2 in stage 2, two "
                  "learning rates per optimizer (the ends of each range), 2 seeds.",),
        )
    else:
        raise ValueError(f"unknown plan {name!r}; known: {', '.join(PLAN_NAMES)}")
    if seeds is not None:
        if seeds < 1:
            raise ValueError("seeds must be >= 1")
        m = plan.sensitivity
        plan = replace(plan, seeds=tuple(range(seeds)),
                       sensitivity=m and replace(m, seeds=m.seeds[:seeds]))
    if epochs is not None:
        if epochs < 1:
            raise ValueError("epochs must be >= 1")
        plan = replace(plan, tasks=tuple(
            replace(t, epochs=epochs, stage1_epochs=min(t.stage1_epochs, epochs))
            for t in plan.tasks))
    return plan


# -------------------------------------------------------------------------- sweep bodies


def tuned_body(plan: Plan, task: Task, search: Search, tags: Sequence[str]) -> dict[str, Any]:
    """``POST /api/sweeps`` body tuning one optimizer on one task (stage 1 on seed 0)."""
    return {
        "name": f"reproduce {task.key} {search.optimizer}",
        "strategy": "tune",
        "seeds": list(plan.seeds),
        "base": {**task.base_config(), "seed": 0, "tags": [*tags, task.key]},
        "tune": {
            "optimizers": [search.optimizer],
            "lr_min": search.lr_min,
            "lr_max": search.lr_max,
            "n_lr": plan.n_lr,
            "sampler": "grid",
            "hparams": {k: list(v) for k, v in search.hparams.items()},
            "stage1_epochs": task.stage1_epochs,
            "criterion": CRITERION,
        },
    }


def map_body(plan: Plan, tags: Sequence[str]) -> dict[str, Any]:
    """``POST /api/sweeps`` body of the kappa x gamma grid (BAMSProd, fixed lr)."""
    m = plan.sensitivity
    assert m is not None
    task = plan.task(m.task)
    return {
        "name": f"reproduce {task.key} bamsprod kappa x gamma",
        "base": {**task.base_config(), "optimizer": "bamsprod", "lr": m.lr,
                 "tags": [*tags, task.key, "kappa-gamma"]},
        "grid": {"hparams.kappa": list(m.kappas), "hparams.gamma": list(m.gammas)},
        "seeds": list(m.seeds),
    }


def sweep_bodies(plan: Plan, tags: Sequence[str] = (TAG,)) -> list[dict[str, Any]]:
    """Every sweep of the plan, as ``{"task", "optimizer" (None for the map), "body"}``; the
    most expensive tasks first, so their stage 2 is not the last thing a packed GPU waits on."""
    out: list[dict[str, Any]] = []
    for task in reversed(plan.tasks):
        for search in plan.searches:
            out.append({"task": task.key, "optimizer": search.optimizer,
                        "body": tuned_body(plan, task, search, tags)})
    if plan.sensitivity is not None:
        out.append({"task": plan.sensitivity.task, "optimizer": None,
                    "body": map_body(plan, tags)})
    return out


def compare_params(run_ids: Sequence[int], baseline: str | None = None,
                   target: float | None = None, x: str = "epoch", group_by: str = "optimizer",
                   include: str | None = None) -> dict[str, Any]:
    """Query parameters for ``GET /api/compare`` over ``run_ids``."""
    given = {"baseline": baseline, "target": target, "include": include}
    return {"runs": ",".join(str(i) for i in run_ids), "group_by": group_by, "x": x,
            **{k: v for k, v in given.items() if v is not None}}
