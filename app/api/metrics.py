"""Per-epoch metrics of one run, JSON or CSV, incremental with ``?after=<epoch>``."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app import store
from app.api.deps import SessionDep, wants_csv
from app.models import METRIC_FIELDS, EpochMetricPublic, MetricList

router = APIRouter(prefix="/runs", tags=["metrics"])

CSV_COLUMNS = ("run_id", "epoch", *METRIC_FIELDS, "quant_error_layers", "created_at")


def to_csv(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    """CSV text with a header; dict/list cells as JSON, None as empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(json.dumps(v) if isinstance(v, dict | list) else "" if v is None else v)
        writer.writerow(cells)
    return buf.getvalue()


@router.get(
    "/{run_id}/metrics",
    response_model=MetricList,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_metrics(
    run_id: int,
    session: SessionDep,
    request: Request,
    after: Annotated[int | None, Query(ge=-1, description="only epochs after this one")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> MetricList | Response:
    """The run's epochs in order; ``after=N`` gives only newer ones (live charts)."""
    store.require_run(session, run_id)
    rows = store.get_metrics(session, run_id, after, limit)
    items = [EpochMetricPublic.model_validate(m) for m in rows]
    if wants_csv(request, format):
        data = [m.model_dump(mode="json") for m in items]
        return Response(
            to_csv(data, CSV_COLUMNS),
            media_type="text/csv",
            headers={"Content-Disposition": f'inline; filename="run-{run_id}-metrics.csv"'},
        )
    return MetricList(run_id=run_id, items=items)
