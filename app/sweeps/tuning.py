"""Tuned sweeps, "tune, then seed".

Stage 1, per optimizer: one Optuna trial (one run) per learning rate (``n_lr`` log-spaced
rates, or log-uniform draws) × each ``hparams`` value the optimizer has, on the base seed for
``stage1_epochs``. The worker reports each epoch's val_acc to the trial and stops a loser when
the successive-halving pruner says so (state ``pruned``).

Stage 2, per optimizer, once each of its stage-1 runs has ended: the run with the best
``criterion`` (``best_val_acc``: the highest val_acc over its epochs; ``last_val_acc``: at its
last epoch), read from validation metrics only, gives the setting; it runs on every seed of the
sweep at the base's epochs. A ``tune_stage`` row, keyed on (sweep, optimizer), is inserted in
the same transaction as the stage-2 runs, so two workers finishing at once create it once.

This module holds the rules; the rows and the scores they read are ``app.store.tuning``'s, and
the Optuna studies ``app.sweeps.optuna_storage``'s. ``app.sweeps.plan`` builds stage 1 from it.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from bamsprod.app import store
from bamsprod.app.compare import fmt_value
from bamsprod.app.field_errors import InvalidField
from bamsprod.app.schemas import SweepCreate
from bamsprod.app.store.tables import Run, Sweep
from bamsprod.app.sweeps import grid, optuna_storage
from bamsprod.core.config import OPTIMIZERS, RunConfig, escape_text
from bamsprod.core.search_space import lr_grid


@dataclass
class Trial:
    """One stage-1 run to create: its optimizer, Optuna trial number and config."""

    optimizer: str
    number: int
    config: RunConfig


def _n_rates(tune: dict[str, Any]) -> int:
    """Stage-1 learning rates per setting of the other hyperparameters (a grid's repeats once)."""
    if tune["sampler"] == "grid":
        return len(set(lr_grid(tune["lr_min"], tune["lr_max"], tune["n_lr"])))
    return int(tune["n_lr"])


def _hparam_space(tune: dict[str, Any], optimizer: str) -> dict[str, list[Any]]:
    known = OPTIMIZERS[optimizer]
    return {f"hparams.{k}": list(dict.fromkeys(v)) for k, v in tune["hparams"].items()
            if k in known}


def _config(body: SweepCreate | dict[str, Any], optimizer: str, params: dict[str, Any],
            label: str, **fields: Any) -> RunConfig:
    """The run config of ``params`` (lr, hparams.<name>) on the sweep's base; ``body``: the
    request, or the stored definition. A bad one is an ``InvalidField`` at the base."""
    base, sweep_name = (body.base, body.name) if isinstance(body, SweepCreate) else (
        body["base"], body["name"])
    point = escape_text(" ".join(f"{k}={fmt_value(v)}" for k, v in params.items()))
    return grid.config_at(base, sweep_name, {"optimizer": optimizer, **params, **fields},
                          (optimizer, point, label), note=f" (for {optimizer})")


def _check_point(body: SweepCreate, optimizer: str, params: dict[str, Any],
                 stage1_epochs: int) -> RunConfig:
    """The full-budget config of one point (and its stage-1 twin, checked too)."""
    full = _config(body, optimizer, params, "")
    _config(body, optimizer, params, "", epochs=stage1_epochs)
    return full


def check(body: SweepCreate, seeds: list[int | None], limit: int | None = None
          ) -> tuple[int, list[RunConfig]]:
    """Validate a tuned sweep (every field error is an ``InvalidField``); returns its run count
    (stage 1 and stage 2 together) and one full-budget config per optimizer.

    The count comes first, from the list lengths (as a grid's does): over ``limit`` runs, only
    one point per optimizer is validated, so a request naming millions of combinations costs
    no more than one naming a few (the caller refuses it by the count)."""
    tune = body.tune
    if tune is None:
        raise InvalidField(("tune",), "strategy tune needs a tune object")
    if body.grid:
        raise InvalidField(("grid",), "a tuned sweep searches through tune; leave grid empty")
    if tune.lr_min > tune.lr_max:
        raise InvalidField(("tune", "lr_max"), "lr_max must be >= lr_min", tune.lr_max)
    definition = tune.model_dump()
    for key, values in tune.hparams.items():
        if not values:
            raise InvalidField(("tune", "hparams", key), f"{key!r} needs at least one value")
        if not any(key in OPTIMIZERS[o] for o in tune.optimizers):
            raise InvalidField(("tune", "hparams", key),
                               f"no optimizer of this sweep has hparam {key!r}", key)
    optimizers = list(dict.fromkeys(tune.optimizers))
    spaces = {o: _hparam_space(definition, o) for o in optimizers}
    count = sum(_n_rates(definition) * grid.size(spaces[o]) + len(seeds) for o in optimizers)
    every_point = limit is None or count <= limit
    fulls = []
    for optimizer in optimizers:
        space = {"lr": [tune.lr_min, tune.lr_max], **spaces[optimizer]}
        first = {k: v[0] for k, v in space.items()}
        full = _check_point(body, optimizer, first, tune.stage1_epochs)
        if not full.val_split:
            raise InvalidField(("base", "val_split"),
                               "tuning reads validation metrics: val_split must be > 0", 0)
        if tune.stage1_epochs > full.epochs:
            raise InvalidField(("tune", "stage1_epochs"),
                               f"stage 1 must be no longer than the full budget ({full.epochs})",
                               tune.stage1_epochs)
        if every_point:
            for params in grid.points(space):
                full = _check_point(body, optimizer, params, tune.stage1_epochs)
        fulls.append(full)
    return count, fulls


def plan_stage1(body: SweepCreate, seeds: list[int | None], database_url: str
                ) -> tuple[dict[str, Any], list[Trial]]:
    """Create one Optuna study per optimizer and ask its trials; returns the sweep's definition
    (with the study prefix and stage-2 seeds) and the stage-1 runs to create."""
    assert body.tune is not None
    definition = body.model_dump(mode="json")
    base_seed = int(body.base.get("seed", 0) or 0)
    tune = {**definition["tune"], "study": uuid.uuid4().hex[:12],
            "seeds": [base_seed if s is None else s for s in seeds]}
    definition["tune"] = tune
    trials: list[Trial] = []
    for optimizer in dict.fromkeys(body.tune.optimizers):
        study = optuna_storage.create_study(database_url, tune, optimizer, seed=base_seed)
        space = _hparam_space(tune, optimizer)
        rates = list(dict.fromkeys(lr_grid(tune["lr_min"], tune["lr_max"], tune["n_lr"])))
        for i, combo in enumerate(itertools.product(range(_n_rates(tune)), *space.values())):
            fixed = dict(zip(space, combo[1:], strict=True))
            if tune["sampler"] == "grid":
                fixed["lr"] = rates[combo[0]]
            if fixed:
                study.enqueue_trial(fixed)
            trial = study.ask()
            if tune["sampler"] == "grid":
                params = {"lr": trial.suggest_categorical("lr", rates)}
            else:
                params = {"lr": trial.suggest_float("lr", tune["lr_min"], tune["lr_max"],
                                                    log=True)}
            for key, values in space.items():
                params[key] = trial.suggest_categorical(key, values)
            config = _config(body, optimizer, params, f"stage1 #{i}",
                             epochs=tune["stage1_epochs"], seed=base_seed)
            trials.append(Trial(optimizer, trial.number, config))
    return definition, trials


def stage1_rows(trials: list[Trial]) -> list[store.Stage1Trial]:
    """The ``tune_trial`` rows of ``trials``, as ``store.create_sweep`` takes them."""
    return [store.Stage1Trial(t.optimizer, t.number) for t in trials]


# ----------------------------------------------------------------------- the stage-1 decision


def _chosen(config: RunConfig, tune: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"lr": config.lr}
    for key in _hparam_space(tune, config.optimizer):
        out[key] = config.hparams[key.split(".", 1)[1]]
    return out


def pick_best(runs: list[Run], scores: dict[int, float]) -> tuple[Run, float] | None:
    """The stage-1 argmax of ``scores`` (by the sweep's criterion) among succeeded runs
    (pruned ones if none succeeded); ties go to the earlier run. A run without a score (no
    val_acc) never wins; a diverged, failed or cancelled one never takes part."""
    for states in (("succeeded",), ("pruned",)):
        got = {int(r.id): scores[int(r.id)] for r in runs  # type: ignore[arg-type]
               if r.state in states and int(r.id) in scores}  # type: ignore[arg-type]
        if got:
            best = max(got, key=lambda i: (got[i], -i))
            return next(r for r in runs if r.id == best), got[best]
    return None


@dataclass
class Stage2:
    """One optimizer's stage-1 decision and the stage-2 runs it makes (none when no run
    qualified: ``best_run_id`` None)."""

    configs: list[RunConfig]
    best_run_id: int | None = None
    value: float | None = None
    chosen: dict[str, Any] | None = None


def decide(definition: dict[str, Any], optimizer: str, runs: list[Run],
           scores: dict[int, float]) -> Stage2:
    """Stage 2 of ``optimizer`` from its ended stage-1 ``runs`` and their ``scores``: the best
    run's setting on every seed of the sweep (``definition``: the sweep's stored definition)."""
    tune = definition["tune"]
    picked = pick_best(runs, scores)
    if picked is None:
        return Stage2([])
    best, value = picked
    chosen = _chosen(RunConfig.model_validate(best.config), tune)
    configs = [_config(definition, optimizer, chosen, f"seed={seed}", seed=seed)
               for seed in tune["seeds"]]
    return Stage2(configs, int(best.id), value, chosen)  # type: ignore[arg-type]


def start_stage2(session: Session, sweep_id: int, optimizer: str) -> list[int]:
    """Create ``optimizer``'s stage 2 once all its stage-1 runs have ended; returns the new
    run ids (empty when stage 1 is still going, or stage 2 exists already). Idempotent: the
    read, the decision and the insert share one transaction, and the stage's key lets only
    one creator through."""
    ended = store.ended_stage1(session, sweep_id, optimizer)
    if ended is None:
        return []
    stage2 = decide(ended.definition, optimizer, ended.runs, ended.scores)
    return store.create_stage2(session, sweep_id, optimizer, stage2.configs,
                               stage2.best_run_id, stage2.value, stage2.chosen)


def tuned_optimizers(definition: dict[str, Any]) -> list[str]:
    """The optimizers a sweep's stored definition tunes, once each (none for a grid sweep)."""
    tune = definition.get("tune") if definition.get("strategy") == "tune" else None
    return list(dict.fromkeys((tune or {}).get("optimizers", [])))


def close_stages(session: Session, sweep: Sweep) -> None:
    """Decide every undecided stage of a tuned sweep as "none" (no best run), so that no stage
    2 starts: a cancelled sweep stays cancelled. A no-op for a grid sweep."""
    store.close_stages(session, int(sweep.id), tuned_optimizers(sweep.definition))  # type: ignore[arg-type]


def forget(database_url: str, definition: dict[str, Any]) -> None:
    """Delete the Optuna studies of a deleted tuned sweep, named in its stored ``definition``."""
    tune = definition.get("tune") if definition.get("strategy") == "tune" else None
    if tune and tune.get("study"):
        for optimizer in dict.fromkeys(tune["optimizers"]):
            optuna_storage.delete_study(database_url, tune, optimizer)


# ------------------------------------------------------------------------------- the summary


def summary(session: Session, sweep: Sweep) -> list[dict[str, Any]] | None:
    """Per optimizer: what stage 1 searched, what it chose and the stage-2 runs (None for a
    sweep that is not tuned)."""
    tune = sweep.definition.get("tune") if sweep.definition.get("strategy") == "tune" else None
    if not tune:
        return None
    out = []
    for optimizer in dict.fromkeys(tune["optimizers"]):
        rows = store.stage_rows(session, int(sweep.id), optimizer)  # type: ignore[arg-type]
        stage1, decided, stage2 = rows.stage1, rows.decided, rows.stage2
        searched: dict[str, list[Any]] = {}
        for run in stage1:
            for key, value in _chosen(RunConfig.model_validate(run.config), tune).items():
                searched.setdefault(key, [])
                if value not in searched[key]:
                    searched[key].append(value)
        out.append({
            "optimizer": optimizer,
            "criterion": tune["criterion"],
            "searched": {k: sorted(v) for k, v in searched.items()},
            "stage1_run_ids": [r.id for r in stage1],
            "chosen": decided.chosen if decided and decided.best_run_id else None,
            "value": decided.value if decided else None,
            "best_run_id": decided.best_run_id if decided else None,
            "stage2_run_ids": [r.id for r in stage2],
            "run_states": {int(r.id): r.state for r in [*stage1, *stage2]},  # type: ignore[arg-type]
        })
    return out
