"""Per-epoch metrics of one run, JSON or CSV, incremental with ``?after=<epoch>``; and its
evaluation points (the validation split evaluated within epochs), incremental with
``?after=<step>``."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from bamsprod.app import store
from bamsprod.app.api.deps import (
    AUTH_ERRORS,
    NOT_FOUND,
    READ,
    RunId,
    SessionDep,
    json_response,
    wants_csv,
)
from bamsprod.app.schemas import (
    METRIC_FIELDS,
    EpochMetricPublic,
    EvalPointList,
    EvalPointPublic,
    MetricList,
)

router = APIRouter(prefix="/runs", tags=["metrics"], dependencies=READ, responses=AUTH_ERRORS)
MAX_EPOCH = 1_000_000

CSV_COLUMNS = ("run_id", "epoch", *METRIC_FIELDS, "quant_error_layers", "created_at")
EVAL_CSV_COLUMNS = ("run_id", *store.EVAL_FIELDS)
MAX_STEP = 2**31 - 1


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
    responses={200: {"content": {"text/csv": {}}}, **NOT_FOUND},
)
def get_metrics(
    run_id: RunId,
    session: SessionDep,
    request: Request,
    after: Annotated[
        int | None, Query(ge=-1, le=MAX_EPOCH, description="only epochs after this one")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> Response:
    """The run's epochs in order; ``after=N`` gives only newer ones (live charts)."""
    store.require_run(session, run_id)
    rows = store.metric_rows(session, run_id, after, limit)
    if not wants_csv(request, format):
        return json_response(MetricList, {"run_id": run_id, "items": rows})
    data = [EpochMetricPublic.model_validate(m).model_dump(mode="json") for m in rows]
    return Response(
        to_csv(data, CSV_COLUMNS),
        media_type="text/csv",
        headers={"Content-Disposition": f'inline; filename="run-{run_id}-metrics.csv"'},
    )


@router.get(
    "/{run_id}/evals",
    response_model=EvalPointList,
    responses={200: {"content": {"text/csv": {}}}, **NOT_FOUND},
)
def get_evals(
    run_id: RunId,
    session: SessionDep,
    request: Request,
    after: Annotated[
        int | None, Query(ge=-1, le=MAX_STEP, description="only points after this step")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> Response:
    """The run's evaluation points in step order (``evals_per_epoch`` per epoch, the last of
    each at its end); ``after=N`` gives only those after step N."""
    store.require_run(session, run_id)
    rows = store.eval_rows(session, run_id, after, limit)
    if not wants_csv(request, format):
        return json_response(EvalPointList, {"run_id": run_id, "items": rows})
    data = [EvalPointPublic.model_validate(p).model_dump(mode="json") for p in rows]
    return Response(
        to_csv(data, EVAL_CSV_COLUMNS),
        media_type="text/csv",
        headers={"Content-Disposition": f'inline; filename="run-{run_id}-evals.csv"'},
    )
