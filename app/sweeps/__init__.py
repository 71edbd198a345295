"""Sweeps and tuning: a base config × a grid × seeds, or "tune, then seed" with Optuna.

- ``grid``: a grid sweep's checks and expansion to validated run configs, the count and the
  server's limits (``config_at`` builds one run config for either strategy);
- ``tuning``: a tuned sweep's rules: its checks, stage 1 (one Optuna trial per run), the
  stage-1 decision read from validation metrics only, and stage 2 on every seed;
- ``optuna_storage``: Optuna's storage beside our database, the studies, trial reports;
- ``plan``: ``plan_sweep``, one request of either strategy planned for the route.

Every database read and write of sweeps and tuning is ``app.store``'s (``store.sweeps``,
``store.tuning``); the worker's side of a tuned sweep is ``worker.tuned``.
"""

from bamsprod.app.sweeps.grid import (
    GRID_FIELDS,
    NESTED,
    check_count,
    check_limits,
    config_at,
    count,
    expand,
    points,
    seeds,
    size,
)
from bamsprod.app.sweeps.plan import SweepPlan, plan_sweep

__all__ = ["GRID_FIELDS", "NESTED", "SweepPlan", "check_count", "check_limits", "config_at",
           "count", "expand", "plan_sweep", "points", "seeds", "size"]
