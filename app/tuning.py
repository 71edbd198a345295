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
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bamsprod.app import optuna_store, store, sweeps
from bamsprod.app.compare import fmt_value
from bamsprod.app.field_errors import InvalidField
from bamsprod.app.schemas import SweepCreate
from bamsprod.app.tables import EpochMetric, Run, Sweep, TuneStage, TuneTrial, utcnow
from bamsprod.core.search_space import lr_grid
from bamsprod.core.spec import OPTIMIZERS, TERMINAL_STATES, RunConfig, escape_text


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
    request, or the stored spec. A bad one is an ``InvalidField`` at the base."""
    base, sweep_name = (body.base, body.name) if isinstance(body, SweepCreate) else (
        body["base"], body["name"])
    point = escape_text(" ".join(f"{k}={fmt_value(v)}" for k, v in params.items()))
    return sweeps.config_at(base, sweep_name, {"optimizer": optimizer, **params, **fields},
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
    spec = tune.model_dump()
    for key, values in tune.hparams.items():
        if not values:
            raise InvalidField(("tune", "hparams", key), f"{key!r} needs at least one value")
        if not any(key in OPTIMIZERS[o] for o in tune.optimizers):
            raise InvalidField(("tune", "hparams", key),
                               f"no optimizer of this sweep has hparam {key!r}", key)
    optimizers = list(dict.fromkeys(tune.optimizers))
    spaces = {o: _hparam_space(spec, o) for o in optimizers}
    count = sum(_n_rates(spec) * sweeps.size(spaces[o]) + len(seeds) for o in optimizers)
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
            for params in sweeps.points(space):
                full = _check_point(body, optimizer, params, tune.stage1_epochs)
        fulls.append(full)
    return count, fulls


def plan_stage1(body: SweepCreate, seeds: list[int | None], database_url: str
                ) -> tuple[dict[str, Any], list[Trial]]:
    """Create one Optuna study per optimizer and ask its trials; returns the sweep's spec (with
    the study prefix and stage-2 seeds) and the stage-1 runs to create."""
    assert body.tune is not None
    spec = body.model_dump(mode="json")
    base_seed = int(body.base.get("seed", 0) or 0)
    tune = {**spec["tune"], "study": uuid.uuid4().hex[:12],
            "seeds": [base_seed if s is None else s for s in seeds]}
    spec["tune"] = tune
    trials: list[Trial] = []
    for optimizer in dict.fromkeys(body.tune.optimizers):
        study = optuna_store.create_study(database_url, tune, optimizer, seed=base_seed)
        space = _hparam_space(tune, optimizer)
        grid = list(dict.fromkeys(lr_grid(tune["lr_min"], tune["lr_max"], tune["n_lr"])))
        for i, combo in enumerate(itertools.product(range(_n_rates(tune)), *space.values())):
            fixed = dict(zip(space, combo[1:], strict=True))
            if tune["sampler"] == "grid":
                fixed["lr"] = grid[combo[0]]
            if fixed:
                study.enqueue_trial(fixed)
            trial = study.ask()
            if tune["sampler"] == "grid":
                params = {"lr": trial.suggest_categorical("lr", grid)}
            else:
                params = {"lr": trial.suggest_float("lr", tune["lr_min"], tune["lr_max"],
                                                    log=True)}
            for key, values in space.items():
                params[key] = trial.suggest_categorical(key, values)
            config = _config(body, optimizer, params, f"stage1 #{i}",
                             epochs=tune["stage1_epochs"], seed=base_seed)
            trials.append(Trial(optimizer, trial.number, config))
    return spec, trials


def link_stage1(trials: list[Trial]):  # type: ignore[no-untyped-def]
    """``store.create_sweep``'s ``before_commit``: one ``tune_trial`` row per stage-1 run."""

    def add(session: Session, sweep: Sweep, runs: list[Run]) -> None:
        for trial, run in zip(trials, runs, strict=True):
            session.add(TuneTrial(run_id=run.id, sweep_id=sweep.id, optimizer=trial.optimizer,
                                  stage=1, trial_number=trial.number))

    return add


# ----------------------------------------------------------------------- the stage-1 decision


def scores(session: Session, run_ids: list[int], criterion: str) -> dict[int, float]:
    """Each run's validation score by ``criterion``; runs without val_acc are left out.
    Reads ``val_acc`` only: test metrics never take part in tuning."""
    m = EpochMetric
    if not run_ids:
        return {}
    if criterion == "best_val_acc":
        stmt = (select(m.run_id, sa.func.max(m.val_acc))
                .where(col(m.run_id).in_(run_ids), col(m.val_acc).is_not(None))
                .group_by(m.run_id))
    else:
        last = (select(m.run_id, sa.func.max(m.epoch).label("epoch"))
                .where(col(m.run_id).in_(run_ids), col(m.val_acc).is_not(None))
                .group_by(m.run_id).subquery())
        stmt = select(m.run_id, m.val_acc).join(
            last, sa.and_(m.run_id == last.c.run_id, m.epoch == last.c.epoch))
    return {int(r): float(v) for r, v in session.exec(stmt) if v is not None}


def _stage_runs(session: Session, sweep_id: int, optimizer: str, stage: int) -> list[Run]:
    stmt = (select(Run).join(TuneTrial, col(TuneTrial.run_id) == col(Run.id))
            .where(TuneTrial.sweep_id == sweep_id, TuneTrial.optimizer == optimizer,
                   TuneTrial.stage == stage)
            .order_by(col(Run.id)))
    return list(session.exec(stmt))


def _chosen(config: RunConfig, tune: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"lr": config.lr}
    for key in _hparam_space(tune, config.optimizer):
        out[key] = config.hparams[key.split(".", 1)[1]]
    return out


def pick_best(session: Session, runs: list[Run], criterion: str) -> tuple[Run, float] | None:
    """The stage-1 argmax by ``criterion`` among succeeded runs (pruned ones if none
    succeeded); ties go to the earlier run."""
    for states in (("succeeded",), ("pruned",)):
        pool = [r for r in runs if r.state in states]
        got = scores(session, [int(r.id) for r in pool], criterion)  # type: ignore[arg-type]
        if got:
            best = max(pool, key=lambda r: (got.get(int(r.id), -1.0), -int(r.id)))
            return best, got[int(best.id)]  # type: ignore[arg-type]
    return None


def start_stage2(session: Session, sweep_id: int, optimizer: str) -> list[int]:
    """Create ``optimizer``'s stage 2 once all its stage-1 runs have ended; returns the new
    run ids (empty when stage 1 is still going, or stage 2 exists already). Idempotent."""
    if session.get(TuneStage, (sweep_id, optimizer)) is not None:
        return []
    runs = _stage_runs(session, sweep_id, optimizer, 1)
    if not runs or any(r.state not in TERMINAL_STATES for r in runs):
        session.rollback()
        return []
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    spec, tune = sweep.spec, sweep.spec["tune"]
    picked = pick_best(session, runs, tune["criterion"])
    stage = TuneStage(sweep_id=sweep_id, optimizer=optimizer, created_at=utcnow())
    configs: list[RunConfig] = []
    if picked is not None:
        best, value = picked
        chosen = _chosen(RunConfig.model_validate(best.config), tune)
        stage.best_run_id, stage.value, stage.chosen = best.id, value, chosen
        configs = [_config(spec, optimizer, chosen, f"seed={seed}", seed=seed)
                   for seed in tune["seeds"]]
    try:
        session.add(stage)
        session.flush()  # the (sweep, optimizer) key: a second creator stops here
    except IntegrityError:
        session.rollback()
        return []
    now = utcnow()
    new = [store.new_run(c, sweep_id, now) for c in configs]
    session.add_all(new)
    session.flush()
    for run in new:
        session.add(TuneTrial(run_id=run.id, sweep_id=sweep_id, optimizer=optimizer, stage=2))
    session.execute(sa.update(Sweep).where(col(Sweep.id) == sweep_id)
                    .values(n_runs=Sweep.n_runs + len(new)))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return []
    return [int(r.id) for r in new]  # type: ignore[arg-type]


def close_stages(session: Session, sweep: Sweep) -> None:
    """Decide every undecided stage of a tuned sweep as "none" (no best run), so that no stage
    2 starts: a cancelled sweep stays cancelled. A no-op for a grid sweep."""
    tune = sweep.spec.get("tune") if sweep.spec.get("strategy") == "tune" else None
    for optimizer in dict.fromkeys((tune or {}).get("optimizers", [])):
        if session.get(TuneStage, (sweep.id, optimizer)) is not None:
            continue
        try:
            session.add(TuneStage(sweep_id=sweep.id, optimizer=optimizer, created_at=utcnow()))
            session.commit()
        except IntegrityError:  # a worker decided it meanwhile
            session.rollback()


def stage1_trials(session: Session, sweep_id: int, optimizer: str
                  ) -> list[tuple[int, str, int]]:
    """(run id, state, trial number) of each stage-1 run of ``optimizer``."""
    stmt = (select(Run.id, Run.state, TuneTrial.trial_number)
            .join(TuneTrial, col(TuneTrial.run_id) == col(Run.id))
            .where(TuneTrial.sweep_id == sweep_id, TuneTrial.optimizer == optimizer,
                   TuneTrial.stage == 1, col(TuneTrial.trial_number).is_not(None)))
    return [(int(a), str(b), int(c)) for a, b, c in session.exec(stmt)]


def pending_stages(session: Session) -> list[tuple[int, str]]:
    """(sweep, optimizer) pairs whose stage 2 is not decided yet."""
    t, st = TuneTrial, TuneStage
    stmt = (select(t.sweep_id, t.optimizer).where(t.stage == 1).distinct()
            .outerjoin(st, sa.and_(st.sweep_id == t.sweep_id, st.optimizer == t.optimizer))
            .where(col(st.sweep_id).is_(None)))
    return [(int(a), str(b)) for a, b in session.exec(stmt)]


def forget(database_url: str, spec: dict[str, Any]) -> None:
    """Delete the Optuna studies of a deleted tuned sweep (``spec``: its stored spec)."""
    tune = spec.get("tune") if spec.get("strategy") == "tune" else None
    if tune and tune.get("study"):
        for optimizer in dict.fromkeys(tune["optimizers"]):
            optuna_store.delete_study(database_url, tune, optimizer)


def trial_of(session: Session, run_id: int) -> TuneTrial | None:
    return session.get(TuneTrial, run_id)


def sweep_tune(session: Session, sweep_id: int) -> dict[str, Any]:
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    return dict(sweep.spec["tune"])


def run_score(session: Session, run_id: int, criterion: str) -> float | None:
    return scores(session, [run_id], criterion).get(run_id)


# ------------------------------------------------------------------------------- the summary


def summary(session: Session, sweep: Sweep) -> list[dict[str, Any]] | None:
    """Per optimizer: what stage 1 searched, what it chose and the stage-2 runs (None for a
    sweep that is not tuned)."""
    tune = sweep.spec.get("tune") if sweep.spec.get("strategy") == "tune" else None
    if not tune:
        return None
    out = []
    for optimizer in dict.fromkeys(tune["optimizers"]):
        stage1 = _stage_runs(session, int(sweep.id), optimizer, 1)  # type: ignore[arg-type]
        searched: dict[str, list[Any]] = {}
        for run in stage1:
            for key, value in _chosen(RunConfig.model_validate(run.config), tune).items():
                searched.setdefault(key, [])
                if value not in searched[key]:
                    searched[key].append(value)
        decided = session.get(TuneStage, (sweep.id, optimizer))
        stage2 = _stage_runs(session, int(sweep.id), optimizer, 2)  # type: ignore[arg-type]
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
