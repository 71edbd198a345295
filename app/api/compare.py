"""GET /api/compare: runs overlaid, seeds pooled into groups, measured against a baseline."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app import compare as cmp
from app import store
from app.api.deps import (
    AUTH_ERRORS,
    MAX_ID,
    READ,
    QueryText,
    SessionDep,
    unprocessable,
    wants_csv,
)
from app.api.metrics import to_csv
from app.models import CompareResult, EpochMetricPublic, ErrorDetail, RunPublic
from app.safejson import scrub
from core.metric_schema import TARGET_METRICS
from core.spec import MODELS, OPTIMIZERS, RunConfig

router = APIRouter(tags=["compare"], dependencies=READ, responses=AUTH_ERRORS)

MAX_COMPARE_RUNS = 1000
# Nested group_by fields: every optimizer's hyperparameters and every model's arguments.
NESTED = {
    "hparams": {name for table in OPTIMIZERS.values() for name in table},
    "model_args": {name for table in MODELS.values() for name in table},
}


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
    for f in fields:
        head, _, rest = f.partition(".")
        known = NESTED.get(head, set()) if rest else RunConfig.model_fields
        if f.count(".") > 1 or (rest and head not in NESTED) or (rest or head) not in known:
            unprocessable(("query", "group_by"), f"unknown config field {f!r}", text)
    return fields or None


@router.get(
    "/compare",
    response_model=CompareResult,
    responses={
        200: {"content": {"text/csv": {}}},
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
) -> CompareResult | Response:
    """Per-run series, per-group mean/std/n per epoch, and per group: best and final accuracy,
    epochs to target, speed-up and final accuracy difference against the baseline group."""
    if runs is None and sweep is None:
        unprocessable(("query", "runs"), "give runs=<ids> or sweep=<id>")
    ids = _parse_ids(runs) if runs else []
    fields = _parse_group_by(group_by)
    if sweep is not None:
        store.get_sweep(session, sweep)
        ids += [r.id for r in store.runs_of_sweep(session, sweep) if r.id not in ids]  # type: ignore[misc]
    rows = [store.require_run(session, i) for i in ids]
    metrics = store.metrics_for_runs(session, ids)
    inputs = []
    for run in rows:
        pub = RunPublic.model_validate(run)
        inputs.append(
            scrub({
                "id": pub.id,
                "name": pub.name,
                "state": pub.state,
                "seed": pub.seed,
                "config": pub.config,
                "config_hash": pub.config_hash,
                "metrics": [
                    EpochMetricPublic.model_validate(m).model_dump() for m in metrics[pub.id]
                ],
            })  # a row stored before today's validation must not break the page
        )
    try:
        result = cmp.compare(
            inputs, group_by=fields, baseline=baseline, target=target, metric=metric, x=x
        )
    except ValueError as exc:
        unprocessable(("query", "baseline"), str(exc), baseline)
    if wants_csv(request, format):
        make = {"series": cmp.series_rows, "summary": cmp.summary_rows, "runs": cmp.runs_rows}
        data = make[table](result)
        columns = list(data[0]) if data else ["group"]
        return Response(to_csv(data, columns), media_type="text/csv")
    return CompareResult.model_validate(result)
