"""The per-epoch metrics, declared once: everything else derives from :data:`METRICS`.

From this tuple come the trainer's ``EpochMetrics`` fields (``core.train``), the SQL table's
metric columns (``app.store.tables.EpochMetric``), the API's epoch schema
(``app.schemas.EpochMetricPublic``: ``/api/runs/{id}/metrics``, its CSV, the live events), the
compare series, the CLI's epoch table and the run page's charts (:func:`chart_specs`).

Adding a metric is one line in :data:`METRICS`, plus its value in the trainer (where
``core.train._measure`` builds an epoch's record) and an Alembic migration that adds its column
(``app/migrations/versions``; a test holds the migrations to the tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHARTS",
    "METRICS",
    "METRIC_NAMES",
    "TARGET_METRICS",
    "Metric",
    "chart_specs",
    "field_definitions",
    "format_value",
]


@dataclass(frozen=True)
class Metric:
    """One per-epoch metric: how it is named, printed and drawn."""

    name: str
    label: str
    fmt: str  # format spec for the CLI's epoch table
    chart: str | None = None  # key of :data:`CHARTS` it is drawn in on the run page
    trace: str | None = None  # its trace's name in that chart
    target: bool = False  # an accuracy a convergence target can be set on
    cli: bool = True  # a column of the CLI's epoch table
    description: str | None = None  # what the API's schema says of it, beyond its name


METRICS: tuple[Metric, ...] = (
    Metric("train_loss", "train loss", ".4f", "loss", "train"),
    Metric("train_acc", "train acc", ".4f", "acc", "train", target=True),
    Metric("val_loss", "val loss", ".4f", "loss", "val", cli=False),
    Metric("val_acc", "val acc", ".4f", "acc", "val", target=True),
    Metric("test_loss", "test loss", ".4f", "loss", "test"),
    Metric("test_acc", "test acc", ".4f", "acc", "test", target=True),
    Metric("quant_error", "quant error", ".4f", "qerr", "mean"),
    Metric("flip_rate", "flip rate", ".5f", "flip", "flip rate"),
    Metric("lr", "lr", ".2e"),
    Metric("seconds", "seconds", ".1f", description="training seconds, evaluation excluded (an "
           "epoch stored before eval_seconds existed includes it)"),
    Metric("eval_seconds", "eval seconds", ".1f",
           description="seconds spent evaluating (test and validation splits)"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
TARGET_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.target)

# The run page's charts by id suffix (``chart-<key>``), in page order; Plotly layout bits the
# dashboard applies as given.
CHARTS: dict[str, dict[str, Any]] = {
    "loss": {"title": "Loss", "y": "loss"},
    "acc": {"title": "Accuracy", "y": "accuracy", "yaxis": {"tickformat": ".0%"}},
    "qerr": {
        "title": "Quantization error",
        "y": "e(w), relative sq. error",
        "yaxis": {"type": "log"},
        "layers": True,  # one extra trace per binary layer (quant_error_layers)
    },
    "flip": {
        "title": "Sign-flip rate",
        "y": "fraction flipped",
        "yaxis": {"rangemode": "tozero"},
    },
}


def field_definitions(
    default: Callable[[Metric], Any] = lambda metric: None,
) -> dict[str, tuple[Any, Any]]:
    """``{name: (float | None, default(metric))}`` for every metric, in the order of
    :data:`METRICS`: the field definitions pydantic's ``create_model`` takes. Every metric is
    a float, and None where an epoch lacks it (no validation split, a non-finite value, a row
    stored before the metric existed)."""
    return {m.name: (float | None, default(m)) for m in METRICS}


def chart_specs() -> list[dict[str, Any]]:
    """The run page's charts as JSON: id, title, axis, and ``traces`` as ``[metric, name]``
    pairs in the order of :data:`METRICS` (train, val, test)."""
    specs = []
    for key, chart in CHARTS.items():
        traces = [[m.name, m.trace] for m in METRICS if m.chart == key]
        specs.append({"id": f"chart-{key}", **chart, "traces": traces})
    return specs


def format_value(metric: Metric, value: float | None) -> str:
    """``value`` as the CLI prints it; ``–`` for a missing one."""
    return "–" if value is None else format(value, metric.fmt)
