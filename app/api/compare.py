"""GET /api/compare: runs overlaid, seeds pooled into groups, measured against a baseline.

The hot path reads the runs' columns (``store.compare_run_rows``) and their epochs as columns
(``app.compare.load``), aggregates in Python (``app.compare``) and serialises the plain
result with pydantic-core. Aggregating in SQL instead (a CTE, GROUP BY group and epoch, and a
join back for the deviations) was measured at 200 runs x 100 epochs: no faster than fetching
the columns and aggregating here, on SQLite or PostgreSQL (~120-140 ms either way, under load),
so the database does the narrow reads and Python the statistics.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic_core
from fastapi import APIRouter, Query, Request, Response

from bamsprod.app import compare as cmp
from bamsprod.app import store
from bamsprod.app.api.deps import (
    AUTH_ERRORS,
    MAX_ID,
    READ,
    QueryText,
    SessionDep,
    invalid_fields,
    unprocessable,
    wants_csv,
)
from bamsprod.app.api.etag import ResponseCache, etag, if_none_match
from bamsprod.app.api.metrics import to_csv
from bamsprod.app.compare import load
from bamsprod.app.schemas import CompareResult, ErrorDetail
from bamsprod.core.config import MODELS, OPTIMIZERS, RunConfig
from bamsprod.core.metric_schema import TARGET_METRICS

router = APIRouter(tags=["compare"], dependencies=READ, responses=AUTH_ERRORS)

MAX_COMPARE_RUNS = 1000


def nested_fields() -> dict[str, set[str]]:
    """Nested group_by fields: every optimizer's hyperparameters and every model's arguments
    (the registry's, installed plugins included)."""
    return {
        "hparams": {name for table in OPTIMIZERS.values() for name in table},
        "model_args": {name for table in MODELS.values() for name in table},
    }


def _cache(request: Request) -> ResponseCache:
    """This process's cache of finished comparisons (one per app)."""
    state = request.app.state
    if not hasattr(state, "compare_cache"):
        state.compare_cache = ResponseCache(state.settings.compare_cache_bytes)
    return state.compare_cache


def _parse_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        ok = part.isascii() and part.isdigit() and len(part) <= 10
        if not ok or not 1 <= int(part) <= MAX_ID:
            unprocessable(("query", "runs"), f"run ids are integers 1..{MAX_ID}; got {part!r}",
                          text)
        ids.append(int(part))
    if len(ids) > MAX_COMPARE_RUNS:
        unprocessable(("query", "runs"), f"at most {MAX_COMPARE_RUNS} runs", len(ids))
    return list(dict.fromkeys(ids))


def _parse_group_by(text: str | None) -> list[str] | None:
    if not text:
        return None
    fields = [f.strip() for f in text.split(",") if f.strip()]
    nested = nested_fields()
    for f in fields:
        head, _, rest = f.partition(".")
        known = nested.get(head, set()) if rest else RunConfig.model_fields
        if f.count(".") > 1 or (rest and head not in nested) or (rest or head) not in known:
            unprocessable(("query", "group_by"), f"unknown config field {f!r}", text)
    return fields or None


@router.get(
    "/compare",
    response_model=CompareResult,
    responses={
        200: {"content": {"text/csv": {}}},
        304: {"description": "finished comparison unchanged since the ETag given"},
        404: {"model": ErrorDetail, "description": "a run or the sweep does not exist"},
    },
)
def compare_runs(
    session: SessionDep,
    request: Request,
    runs: Annotated[
        str | None, Query(max_length=20_000, description="comma-separated run ids")
    ] = None,
    sweep: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="every run of this sweep")
    ] = None,
    stage: Annotated[
        int | None,
        Query(ge=1, le=2, description="a tuned sweep's runs: 2 (the default) its seeded runs, "
              "1 its tuning trials"),
    ] = None,
    group_by: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="comma-separated config fields, e.g. optimizer,hparams.kappa",
        ),
    ] = None,
    baseline: Annotated[
        QueryText, Query(max_length=1000, description="group key or optimizer name")
    ] = None,
    target: Annotated[float | None, Query(gt=0, le=1, description="target accuracy")] = None,
    metric: Literal[*TARGET_METRICS] = "test_acc",  # type: ignore[valid-type]
    x: Literal["epoch", "time"] = "epoch",
    format: Literal["json", "csv"] | None = None,
    table: Annotated[
        Literal["series", "summary", "runs"], Query(description="which table CSV returns")
    ] = "series",
    include: Annotated[
        Literal["runs"] | None, Query(description="runs: each run's own series as well")
    ] = None,
) -> Response:
    """Per-group mean/std/n per epoch (columnar), and per group: best and final accuracy,
    epochs to target, speed-up and final accuracy difference against the baseline group; each
    run's series only with ``include=runs``. A tuned sweep compares its stage-2 runs
    (``stage=1``: its tuning trials). Once every run has finished the answer carries an
    ETag (``If-None-Match`` gives 304) and is served from a per-process cache."""
    if runs is None and sweep is None:
        unprocessable(("query", "runs"), "give runs=<ids> or sweep=<id>")
    given = _parse_ids(runs) if runs else []
    fields = _parse_group_by(group_by)
    with invalid_fields("query"):
        ids = load.run_ids(session, given, sweep, stage)
    rows = store.compare_run_rows(session, ids)
    csv = wants_csv(request, format)
    with_runs = include == "runs" or (csv and table == "runs")
    tag = etag(rows, request, csv)
    headers = {"ETag": tag, "Cache-Control": "no-cache"} if tag else {}
    if tag and tag in if_none_match(request):
        return Response(status_code=304, headers=headers)
    cache = _cache(request)
    if tag and (hit := cache.get(tag)) is not None:
        return Response(hit[0], media_type=hit[1], headers=headers)
    try:
        result = cmp.compare(
            # Evaluation points time a val_acc target, and come with each run's series.
            load.with_epochs(session, rows, evals=metric == "val_acc" or with_runs),
            group_by=fields,
            baseline=baseline,
            target=target,
            metric=metric,
            x=x,
            include_runs=with_runs,
        )
    except ValueError as exc:
        unprocessable(("query", "baseline"), str(exc), baseline)
    if csv:
        make = {"series": cmp.series_rows, "summary": cmp.summary_rows, "runs": cmp.runs_rows}
        data = make[table](result)
        body, media = to_csv(data, list(data[0]) if data else ["group"]).encode(), "text/csv"
    else:
        body, media = pydantic_core.to_json(result, inf_nan_mode="null"), "application/json"
    if tag:
        cache.put(tag, (body, media))
    return Response(body, media_type=media, headers=headers)
