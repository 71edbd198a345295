"""A comparison's inputs from the database: which runs (ids given, or a sweep's), and their
epochs and evaluation points as columns. A tuned sweep compares its stage-2 runs (the chosen
settings on every seed) unless stage 1 (its tuning trials, shorter and on one seed) is asked
for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlmodel import Session

from bamsprod.app import store
from bamsprod.app.compare.series import SERIES_METRICS
from bamsprod.app.field_errors import InvalidField
from bamsprod.app.safejson import scrub


def run_ids(session: Session, ids: Sequence[int], sweep: int | None = None,
            stage: int | None = None) -> list[int]:
    """``ids``, then the runs of ``sweep`` not among them; a tuned sweep's of ``stage`` (default
    2). ``stage`` for no sweep, or for a sweep that is not tuned, is an ``InvalidField``."""
    out = list(ids)
    if sweep is None:
        if stage is not None:
            raise InvalidField(("stage",), "stage picks runs of a tuned sweep: give sweep=<id>",
                               stage)
        return out
    tuned = store.get_sweep(session, sweep).definition.get("strategy") == "tune"
    if stage is not None and not tuned:
        raise InvalidField(("stage",), f"sweep {sweep} is not tuned: it has no stages", stage)
    given = set(out)
    picked = store.run_ids_of_sweep(session, sweep, (stage or 2) if tuned else None)
    return out + [i for i in picked if i not in given]


def with_epochs(session: Session, rows: Sequence[Mapping[str, Any]],
                evals: bool = True) -> list[dict[str, Any]]:
    """``store.compare_run_rows`` rows with their epochs as ``columns`` and, with ``evals``,
    their evaluation points as ``evals``; name and config scrubbed, so a row stored before
    today's validation cannot break the page."""
    ids = [r["id"] for r in rows]
    columns = store.metric_columns(session, ids, SERIES_METRICS)
    points = store.eval_columns(session, ids) if evals else {}
    return [{**r, "name": scrub(r["name"]), "config": scrub(r["config"]),
             "columns": columns[r["id"]], "evals": _some(points.get(r["id"]))} for r in rows]


def _some(points: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
    """A run's evaluation points, or None when it has none (stored before they existed)."""
    return points if points and points["step"] else None
