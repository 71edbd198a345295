"""The API's request and response bodies (SQLModel, no tables).

Routes return these, never table rows (``app.store.tables``); the metric fields come from
``core.metric_schema``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import ConfigDict, create_model, field_validator
from sqlmodel import Field, SQLModel

from bamsprod.core.config import RUN_STATES, OptimizerName, RunConfig, SafeText
from bamsprod.core.metric_schema import METRIC_NAMES, field_definitions

METRIC_FIELDS = METRIC_NAMES  # core.metric_schema declares them; EpochMetricPublic has them
# Columns GET /api/runs may sort on.
RUN_SORT_COLUMNS = (
    "id",
    "name",
    "state",
    "optimizer",
    "model",
    "dataset",
    "seed",
    "epochs",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
    "attempts",
    "epochs_done",
    "last_epoch",
    "last_test_acc",
    "last_train_loss",
    "best_test_acc",
    "best_epoch",
    "final_quant_error",
    "diverged_epoch",
)

RunCreate = RunConfig  # POST /api/runs takes the run config itself.


class PluginUse(SQLModel):
    """A plugin a run uses: which of its parts (``kind``: optimizer, model or dataset), the
    entry's name, and the distribution and version that provided it on the API."""

    kind: str
    name: str
    dist: str
    version: str


class PluginStatus(PluginUse):
    """An entry of the registry (``bamsprod plugins``): usable, or broken with its error."""

    target: str = Field(description="the entry point's object, module:attr")
    builtin: bool
    ok: bool
    error: str | None = None
class SourceVersion(SQLModel):
    version: str
    commit: str | None = Field(default=None, description="the source checkout's git commit")


class RunEnvironment(SQLModel):
    """Where a run trained, recorded by the worker as it started: compare seconds only between
    runs that share one."""

    model_config = ConfigDict(extra="allow")

    torch: str
    python: str
    bamsprod: SourceVersion
    device_name: str = Field(description="the CPU's model, or the GPU card's name")
    threads: int = Field(description="torch's intra-op threads")


class RunPublic(SQLModel):
    """A run as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    tags: list[str]
    state: str = Field(
        description=f"one of {', '.join(RUN_STATES)} (pruned: a tuning trial stopped early)"
    )
    config: dict[str, Any]
    schema_version: int
    config_hash: str
    seed: int
    optimizer: str
    model: str
    dataset: str
    epochs: int
    sweep_id: int | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker_host: str | None
    device: str | None
    error: str | None
    cancel_requested: bool
    attempts: int
    retries: int
    epochs_done: int
    last_epoch: int | None
    last_test_acc: float | None
    last_train_loss: float | None
    best_test_acc: float | None
    best_epoch: int | None
    final_quant_error: float | None
    diverged_epoch: int | None
    plugins: list[PluginUse] = Field(
        default_factory=list,
        description="the plugins the run uses, by distribution and version (built-ins: none)",
    )
    environment: RunEnvironment | None = Field(
        default=None, description="where it trained (null until a worker starts it)"
    )
    phase: str | None = Field(
        default=None,
        description="what a running run does before its first epoch (loading data, building "
        "the optimizer kernel); null while it trains",
    )
    archived: bool = Field(default=False, description="left out of GET /api/runs unless "
                           "archived=true; nothing is deleted")
    queued_ahead: int | None = Field(
        default=None,
        description="queued runs a worker takes before this one (GET /api/runs/{id}, "
        "while it is queued; null otherwise)",
    )


class RunList(SQLModel):
    items: list[RunPublic]
    total: int
    limit: int
    offset: int


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


class _EpochKey(SQLModel):
    """An epoch's own key, before its metrics."""

    run_id: int
    epoch: int


# One field per metric of ``core.metric_schema.METRICS``, in its order, with the metric's
# description: present in every epoch (required), null where the epoch lacks it.
_EpochMetricValues = create_model(
    "_EpochMetricValues",
    __base__=_EpochKey,
    __module__=__name__,
    **field_definitions(lambda m: Field(description=m.description)),
)


# Its fields: run_id, epoch, the metrics (train_loss, ..., eval_seconds), then the ones below.
class EpochMetricPublic(_EpochMetricValues):
    """One epoch's metrics; accuracies are fractions in [0, 1]; non-finite values are null."""

    model_config = ConfigDict(from_attributes=True)

    quant_error_layers: dict[str, float | None]
    created_at: datetime

    @field_validator(*METRIC_FIELDS)
    @classmethod
    def _finite_only(cls, v: float | None) -> float | None:
        return _finite(v)


class MetricList(SQLModel):
    run_id: int
    items: list[EpochMetricPublic]


class EvalPointPublic(SQLModel):
    """One evaluation of the validation split; non-finite values are null."""

    run_id: int
    step: int = Field(description="optimizer steps taken before it")
    epoch: float = Field(description="fractional epoch: 1.25 is a quarter into epoch 2")
    train_seconds: float | None = Field(
        description="training seconds since the run started, evaluation excluded"
    )
    val_loss: float | None
    val_acc: float | None
    eval_seconds: float | None = Field(description="seconds this evaluation took")

    @field_validator("train_seconds", "val_loss", "val_acc", "eval_seconds")
    @classmethod
    def _finite_only(cls, v: float | None) -> float | None:
        return _finite(v)


class EvalPointList(SQLModel):
    run_id: int
    items: list[EvalPointPublic]
# A sweep's lists: values per grid key or tuned hparam, and keys. The run count is their
# product (checked against BAMSPROD_MAX_SWEEP_RUNS before any combination is built); these caps
# bound what one request may make the server read at all.
MAX_LIST_VALUES = 1000
MAX_GRID_KEYS = 64
MAX_TUNE_HPARAMS = 16
ValueList = Annotated[list[Any], Field(max_length=MAX_LIST_VALUES)]


class SweepCreate(SQLModel):
    """A grid sweep: ``base`` run config fields, lists of values per field, and seeds.

    Grid keys are run config fields or ``hparams.<name>`` / ``model_args.<name>``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: SafeText = Field(default="", max_length=200)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, ValueList] = Field(default_factory=dict, max_length=MAX_GRID_KEYS)
    seeds: list[Annotated[int, Ge(0), Le(2**31 - 1)]] | None = Field(
        default=None, min_length=1, max_length=1000
    )
    n_seeds: int | None = Field(default=None, ge=1, le=1000)
    strategy: Literal["grid", "tune"] = Field(
        default="grid", description="grid: every combination; tune: search, then seed"
    )
    tune: TuneSpec | None = Field(default=None, description="the search, when strategy is tune")


class TuneSpec(SQLModel):
    """Tune, then seed: stage 1 searches each optimizer's learning rate (log scale, and the
    ``hparams`` grid) on the base seed for ``stage1_epochs``, stopping losers early by
    successive halving on val_acc; stage 2 runs each optimizer's best setting by
    ``criterion`` (validation only) at the base's epochs on the sweep's seeds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    optimizers: list[OptimizerName] = Field(min_length=1, max_length=64)
    lr_min: float = Field(default=1e-4, gt=0, le=10, description="lowest learning rate searched")
    lr_max: float = Field(default=1e-1, gt=0, le=10, description="highest learning rate searched")
    n_lr: int = Field(default=4, ge=1, le=64, description="learning rates per optimizer")
    sampler: Literal["grid", "random"] = Field(
        default="grid", description="grid: n_lr log-spaced rates; random: n_lr log-uniform draws"
    )
    hparams: dict[
        str, Annotated[list[float | int | bool], Field(max_length=MAX_LIST_VALUES)]
    ] = Field(default_factory=dict, max_length=MAX_TUNE_HPARAMS,
              description="more values to search, for optimizers that have them")
    stage1_epochs: int = Field(default=2, ge=1, le=1000, description="epochs per stage-1 trial")
    criterion: Literal["best_val_acc", "last_val_acc"] = Field(
        default="best_val_acc", description="the best epoch's val_acc, or the last epoch's"
    )
    reduction_factor: int = Field(default=3, ge=2, le=10, description="successive halving eta")
    min_resource: int = Field(default=1, ge=1, le=1000, description="epochs before a first cut")


class SweepPublic(SQLModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    definition: dict[str, Any]
    n_runs: int
    created_at: datetime


class SweepList(SQLModel):
    items: list[SweepPublic]
    total: int
    limit: int
    offset: int


class SweepCancelled(SQLModel):
    """What ``POST /api/sweeps/{id}/cancel`` did: runs that ended ``cancelled`` now (queued,
    or their worker gone) and running ones whose workers were asked to stop."""

    sweep_id: int
    cancelled: int
    cancel_requested: int


class SweepDetail(SweepPublic):
    """A sweep with its runs' states counted."""

    states: dict[str, int]
    run_ids: list[int]
    tuning: list[TunedChoice] | None = Field(
        default=None, description="tuned sweeps: per optimizer, what was searched and chosen"
    )


class TunedChoice(SQLModel):
    """One optimizer of a tuned sweep: the values searched, and once stage 1 ended, the choice
    (by ``criterion`` on validation metrics) and the stage-2 runs."""

    optimizer: str
    criterion: str
    searched: dict[str, list[Any]]
    stage1_run_ids: list[int]
    chosen: dict[str, Any] | None = None
    value: float | None = None
    best_run_id: int | None = None
    stage2_run_ids: list[int] = Field(default_factory=list)
    run_states: dict[int, str] = Field(
        default_factory=dict,
        description="each stage-1 and stage-2 run's state by id (pruned: a trial stopped early)",
    )


class SweepSubmitted(SQLModel):
    """Answer to POST /api/sweeps: the run count, and unless a dry run, the sweep and run ids."""

    count: int
    max_runs: int
    dry_run: bool
    sweep: SweepPublic | None = None
    run_ids: list[int] = Field(default_factory=list)


class ErrorDetail(SQLModel):
    """An error answer (401, 404, 409, 413): what went wrong, in words."""

    detail: str


class HealthPart(SQLModel):
    ok: bool
    detail: str | None = None


class Health(SQLModel):
    """``status``: ok, degraded (no broker, or no worker alive: none announced itself lately,
    e.g. every worker is stopped) or down (no database). The parts are left out for callers
    without a token on a token-protected instance."""

    status: str
    database: HealthPart | None = None
    broker: HealthPart | None = None
    worker: HealthPart | None = None
    workers: list[str] | None = None
    workers_seen: int | None = None
    plugins: list[PluginStatus] | None = Field(
        default=None, description="the API's installed plugins, broken ones with their error"
    )


class StatPublic(SQLModel):
    """Mean, sample std (null for n < 2), n, and standard error."""

    mean: float | None
    std: float | None
    n: int
    se: float | None = None


class TargetStat(StatPublic):
    """Epochs (or seconds) to the target accuracy over the runs that reached it, interpolated
    between the evaluations that straddle it."""

    reached: int
    at_first_eval: int = Field(
        default=0, description="runs that reached it at their first evaluation: their true "
        "crossing may be earlier"
    )


class DiffStat(StatPublic):
    """Group minus baseline; ``paired`` when computed from per-seed differences."""

    paired: bool


class GroupSeries(SQLModel):
    """Per-epoch mean/std/n of every metric over a group's runs (columnar)."""

    epoch: list[int]
    x: list[float | None]
    n: list[int]
    mean: dict[str, list[float | None]]
    std: dict[str, list[float | None]]


class CompareGroup(SQLModel):
    key: str
    label: str
    config_hash: str | None
    fields: dict[str, Any]
    n: int
    run_ids: list[int]
    seeds: list[int | None]
    series: GroupSeries
    best: StatPublic
    final: StatPublic
    to_target: TargetStat
    to_target_seconds: TargetStat | None = None  # wall seconds: same-device runs only
    speedup: float | None
    speedup_seconds: float | None = None
    speedup_paired: StatPublic | None
    final_diff: DiffStat | None


class CompareRun(SQLModel):
    id: int
    name: str
    state: str | None
    seed: int | None
    optimizer: str | None
    config_hash: str
    group: str
    to_target: float | None = Field(
        default=None, description="epochs to the target (fractional, interpolated between "
        "the evaluations that straddle it; whatever x is); null if never reached"
    )
    to_target_seconds: float | None = Field(
        default=None, description="training seconds to the target, interpolated likewise"
    )
    reached_at_first_eval: bool = Field(
        default=False, description="reached at the run's first evaluation: the value is that "
        "evaluation's, and the true crossing may be earlier"
    )
    to_target_from: Literal["evals", "epochs"] = Field(
        default="epochs", description="evals: the run's evaluation points (val_acc); epochs: "
        "its epochs, one evaluation each"
    )
    series: dict[str, list[float | None]] | None = Field(
        default=None, description="the run's own series: only with include=runs"
    )
    evals: dict[str, list[float | None]] | None = Field(
        default=None, description="the run's evaluation points as columns (step, epoch, "
        "train_seconds, val_loss, val_acc, eval_seconds): only with include=runs"
    )


class CompareResult(SQLModel):
    """GET /api/compare: aligned runs, group statistics and the paper's two measures."""

    metric: str
    x: str
    group_by: list[str] | None
    fields: list[str]
    baseline: str | None
    target: float | None
    target_source: str | None
    budget: int | None
    runs: list[CompareRun]
    groups: list[CompareGroup]
