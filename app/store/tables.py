"""SQL tables (SQLModel): what the service stores.

``Run``, ``EpochMetric`` (unique on run + epoch; one column per metric of
``core.metric_schema.METRICS``), ``EvalPoint`` (the validation evaluations within epochs,
keyed by run + step), ``Sweep``, and for tuned sweeps ``TuneTrial`` and ``TuneStage``. The
schema is created by the Alembic migrations in ``app/migrations``; a test checks that they
match these tables. Routes return the models of ``app.schemas``, never rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import create_model
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from bamsprod.core.config import DEVICE_TEXT_MAX
from bamsprod.core.metric_schema import field_definitions

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# For a nullable JSON column: Python None is SQL NULL, not the JSON text 'null'.
NullableJSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on both back ends (SQLite stores naive UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
    )


# --------------------------------------------------------------------------------------- tables


class Sweep(SQLModel, table=True):
    """A grid of runs submitted together."""

    __tablename__ = "sweep"
    __table_args__ = {"sqlite_autoincrement": True}  # a deleted id is never reused

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=200)
    definition: dict[str, Any] = Field(  # the body it was created from, as stored
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )
    n_runs: int = 0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class Run(SQLModel, table=True):
    """One training run: its config, lifecycle and summary of its epochs."""

    __tablename__ = "run"
    # The queue's order (queued_ahead, requeue_candidates): state, then queued_at; and a deleted
    # id is never reused (SQLite AUTOINCREMENT).
    __table_args__ = (
        sa.Index("ix_run_state_queued_at", "state", "queued_at"),
        sa.Index("ux_run_idempotency_key", "idempotency_key", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=200)
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONType, nullable=False))
    state: str = Field(default="queued", max_length=16, index=True)
    config: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )
    schema_version: int = 1
    config_hash: str = Field(max_length=64, index=True)
    seed: int = 0
    optimizer: str = Field(max_length=32, index=True)
    model: str = Field(max_length=32, index=True)
    dataset: str = Field(max_length=32, index=True)
    epochs: int
    sweep_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("sweep.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )
    queued_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts(index=True)
    heartbeat_at: datetime | None = _ts()
    worker_host: str | None = Field(default=None, max_length=255)
    device: str | None = Field(default=None, max_length=DEVICE_TEXT_MAX)
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    cancel_requested: bool = False
    attempts: int = 0
    retries: int = 0
    # Summary of the epochs so far (kept in step with EpochMetric by store.record_epoch).
    epochs_done: int = 0
    last_epoch: int | None = None
    last_test_acc: float | None = None
    last_train_loss: float | None = None
    best_test_acc: float | None = Field(default=None, index=True)
    best_epoch: int | None = None
    final_quant_error: float | None = None
    diverged_epoch: int | None = None
    # The plugins the run uses (core.plugins.plugins_used): [{"kind", "name", "dist",
    # "version"}], as the submitting process had them; empty for built-ins only. A worker
    # trains the run only with the same versions.
    plugins: list[dict[str, str]] = Field(
        default_factory=list,
        sa_column=sa.Column(JSONType, nullable=False, server_default=sa.text("'[]'")),
    )
    # Where it trained (``core.environment``): torch, python, bamsprod, device_name, threads.
    environment: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(NullableJSON, nullable=True)
    )
    # A client's Idempotency-Key for the submit that created the run (a retry returns it).
    idempotency_key: str | None = Field(default=None, max_length=64)
    # Drawn at every claim: only the worker holding the current lease may beat, write epochs
    # or finish the run (a worker that lost it stops).
    lease: str | None = Field(default=None, max_length=32)
    # What a running run does before its first epoch (``core.train.PHASES``): loading data,
    # building the optimizer kernel; None while it trains and once it ended.
    phase: str | None = Field(default=None, max_length=64)
    # Archived: left out of the runs table unless asked for; nothing is deleted.
    archived: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )


class _EpochKey(SQLModel):
    """An epoch row's own key, before its metric columns."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), nullable=False)
    )
    epoch: int


# One nullable float column per metric of ``core.metric_schema.METRICS``, in its order.
_EpochMetricColumns = create_model(
    "_EpochMetricColumns", __base__=_EpochKey, __module__=__name__, **field_definitions()
)


class EpochMetric(_EpochMetricColumns, table=True):
    """One epoch of one run; ``(run_id, epoch)`` is unique and indexed for 'epochs after N'.

    Its key (``id``, ``run_id``, ``epoch``), one nullable float column per metric of
    ``core.metric_schema.METRICS`` (``train_loss``, ..., ``eval_seconds``), then the ones
    below."""

    __tablename__ = "epoch_metric"
    __table_args__ = (sa.Index("ux_epoch_metric_run_epoch", "run_id", "epoch", unique=True),)

    quant_error_layers: dict[str, float | None] = Field(
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


class EvalPoint(SQLModel, table=True):
    """One evaluation of a run's validation split: after ``step`` optimizer steps (the key with
    the run), at fractional ``epoch``, after ``train_seconds`` of training (evaluation
    excluded); ``eval_seconds`` is what the evaluation took."""

    __tablename__ = "eval_point"

    run_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
        )
    )
    step: int = Field(primary_key=True)
    epoch: float
    train_seconds: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    eval_seconds: float | None = None


class TuneTrial(SQLModel, table=True):
    """A run of a tuned sweep: its optimizer, stage (1: search, 2: seeds) and Optuna trial."""

    __tablename__ = "tune_trial"

    run_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), primary_key=True
        )
    )
    sweep_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("sweep.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    optimizer: str = Field(max_length=32)
    stage: int
    trial_number: int | None = None


class TuneStage(SQLModel, table=True):
    """One optimizer's stage-1 decision; its primary key makes stage 2 happen at most once."""

    __tablename__ = "tune_stage"

    sweep_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("sweep.id", ondelete="CASCADE"), primary_key=True
        )
    )
    optimizer: str = Field(max_length=32, primary_key=True)
    best_run_id: int | None = None
    value: float | None = None
    chosen: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )


metadata = SQLModel.metadata
