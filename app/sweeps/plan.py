"""One sweep request, planned: ``plan_sweep`` checks a body of either strategy against the
server's limits and returns what the route stores (the runs, the sweep's stored definition and,
for a tuned sweep, the stage-1 trial rows). No SQL and no web here: the route hands the plan to
``store.create_sweep``, which writes it in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bamsprod.app.schemas import SweepCreate
from bamsprod.app.settings import Settings
from bamsprod.app.store import Stage1Trial
from bamsprod.app.sweeps import grid, tuning
from bamsprod.core.config import RunConfig


@dataclass
class SweepPlan:
    """A checked sweep: ``count`` runs in all (a tuned sweep's stage 2 included); unless it is
    a dry run, the ``configs`` to insert now, the ``definition`` to store and, for a tuned sweep,
    one ``trials`` row per config."""

    count: int
    max_runs: int
    dry_run: bool = False
    configs: list[RunConfig] = field(default_factory=list)
    definition: dict[str, Any] = field(default_factory=dict)
    trials: list[Stage1Trial] = field(default_factory=list)


def plan_sweep(body: SweepCreate, settings: Settings, *, dry_run: bool = False) -> SweepPlan:
    """Check ``body`` (every field error is an ``InvalidField`` at its loc) and plan it.

    A dry run only counts (and checks what counting needs). Otherwise the count must be within
    ``settings.max_sweep_runs`` and every run within the server's epochs, sizes and data roots;
    only then does a tuned sweep create its Optuna studies and ask their stage-1 trials.
    """
    limit = settings.max_sweep_runs
    if body.strategy == "tune":
        n, configs = tuning.check(body, grid.seeds(body), limit)
    else:
        n = grid.count(body)
        configs = grid.expand(body) if n <= limit else []
    if dry_run:
        return SweepPlan(n, limit, dry_run=True)
    grid.check_count(body, n, limit)
    grid.check_limits(body, configs, settings.max_epochs, settings.max_param_bytes,
                      settings.max_activation_bytes, settings.data_roots)
    if body.strategy != "tune":
        return SweepPlan(n, limit, configs=configs, definition=body.model_dump(mode="json"))
    # Every check is done: only now may Optuna studies exist.
    definition, trials = tuning.plan_stage1(body, grid.seeds(body), settings.database_url)
    return SweepPlan(n, limit, configs=[t.config for t in trials], definition=definition,
                     trials=tuning.stage1_rows(trials))
