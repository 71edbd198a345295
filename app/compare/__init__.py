"""Comparison math, pure Python (no database, no web): grouping, mean/std/n per epoch, and the
paper's two measures (docs/compare.md states the rules). ``app.compare.load`` reads a
comparison's runs from the database.

Inputs are plain dicts so the functions are easy to test on hand-made series:
a run is ``{"id", "name", "seed", "config" (RunConfig JSON), "config_hash", "metrics"}`` where
``metrics`` is a list of per-epoch dicts (``epoch``, ``test_acc``, ..., ``seconds``), or, on the
API's hot path, ``"columns"`` instead: one list per metric in epoch order (no per-row dicts);
and optionally ``"evals"``: its evaluation points as columns (``step``, ``epoch``,
``train_seconds``, ``val_acc``, ...).

- Groups default to "same config hash" (seeds pooled); ``group_by`` names config fields
  (``optimizer``, ``hparams.kappa``, ...).
- The budget is the smallest last epoch over groups, so every group is measured on the same
  number of epochs.
- Target (default): 99% of the best per-epoch mean accuracy the baseline group reaches within
  the budget. Time to target is per run, in epochs and in training seconds, interpolated
  between the two evaluations that straddle the target (``target``); speed-up is baseline /
  group, as a ratio of means and, where seeds pair up, mean ± std of per-seed ratios.
- Final accuracy difference vs baseline: per-seed differences when seeds pair up, otherwise
  the difference of means with the Welch standard error.

By concern: ``stats``, ``grouping``, ``series``, ``target``, ``measure`` (``compare``),
``tables`` (CSV).
"""

from bamsprod.app.compare.csv_rows import SUMMARY_COLUMNS, runs_rows, series_rows, summary_rows
from bamsprod.app.compare.grouping import (
    flatten,
    fmt_value,
    get_field,
    group_key,
    group_label,
    group_runs,
    pick_baseline,
    varying_fields,
)
from bamsprod.app.compare.measure import DEFAULT_TARGET_FRACTION, compare
from bamsprod.app.compare.series import (
    SERIES_METRICS,
    aggregate,
    best_value,
    columns_series,
    final_value,
    run_series,
)
from bamsprod.app.compare.stats import Stat, paired_or_welch, paired_ratios, stat
from bamsprod.app.compare.target import Reach, crossing, reach, run_reach

__all__ = [
    "DEFAULT_TARGET_FRACTION",
    "Reach",
    "SERIES_METRICS",
    "SUMMARY_COLUMNS",
    "Stat",
    "aggregate",
    "best_value",
    "columns_series",
    "compare",
    "crossing",
    "final_value",
    "flatten",
    "fmt_value",
    "get_field",
    "group_key",
    "group_label",
    "group_runs",
    "paired_or_welch",
    "paired_ratios",
    "pick_baseline",
    "reach",
    "run_reach",
    "run_series",
    "runs_rows",
    "series_rows",
    "stat",
    "summary_rows",
    "varying_fields",
]
