"""Runs: submit, list, read, cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status

from bamsprod.app import store
from bamsprod.app.api.deps import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CONFLICT,
    MAX_ID,
    NOT_FOUND,
    READ,
    WRITE,
    QueryText,
    RunId,
    SessionDep,
    SettingsDep,
    enqueue,
    json_response,
    remove_checkpoints,
    unprocessable,
)
from bamsprod.app.schemas import RUN_SORT_COLUMNS, RunList, RunPublic
from bamsprod.core.model_size import size_field, too_large
from bamsprod.core.spec import RUN_STATES, RunConfig

router = APIRouter(prefix="/runs", tags=["runs"], responses=AUTH_ERRORS)
MAX_OFFSET = 10_000_000

SortColumn = Literal[RUN_SORT_COLUMNS]  # type: ignore[valid-type]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    dependencies=WRITE,
    responses=BODY_ERRORS,
)
def submit_run(
    config: RunConfig, session: SessionDep, settings: SettingsDep, request: Request
) -> Response:
    """Record a run as ``queued`` and queue it. The body is the run config."""
    if config.epochs > settings.max_epochs:
        unprocessable(("body", "epochs"), f"at most {settings.max_epochs} epochs on this server",
                      config.epochs)
    if (why := too_large(config, settings.max_param_bytes)) is not None:
        loc, value = size_field(config)
        unprocessable(("body", *loc), why, value)
    run = store.create_run(session, config)
    enqueue(request, run.id)  # type: ignore[arg-type]
    return json_response(RunPublic, RunPublic.model_validate(run), status.HTTP_201_CREATED)


@router.get("", response_model=RunList, dependencies=READ, responses=NOT_FOUND)
def list_runs(
    session: SessionDep,
    state: Annotated[
        list[str] | None, Query(description="repeat or comma-separate: queued,running")
    ] = None,
    optimizer: Annotated[QueryText, Query(max_length=32)] = None,
    model: Annotated[QueryText, Query(max_length=32)] = None,
    dataset: Annotated[QueryText, Query(max_length=32)] = None,
    tag: Annotated[QueryText, Query(max_length=64)] = None,
    sweep: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    config_hash: Annotated[QueryText, Query(max_length=64)] = None,
    q: Annotated[QueryText, Query(max_length=200, description="name contains")] = None,
    sort: SortColumn = "id",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    after: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="keyset paging: the last run id of the previous page"),
    ] = None,
    archived: Annotated[
        bool, Query(description="true: the archived runs only; false (default): the others")
    ] = False,
) -> Response:
    """Runs matching every filter, a page at a time, with the total. ``after=<id>`` starts the
    page right after that run in the sort order, as fast deep down as on page 1 (404 if that
    run is gone)."""
    states = [s for item in state or [] for s in item.split(",") if s]
    for s in states:
        if s not in RUN_STATES:
            unprocessable(
                ("query", "state"), f"unknown state {s!r}; one of {', '.join(RUN_STATES)}", s
            )
    rows, total = store.list_run_rows(
        session,
        state=states or None,
        optimizer=optimizer,
        model=model,
        dataset=dataset,
        tag=tag,
        sweep_id=sweep,
        name_contains=q,
        config_hash=config_hash,
        archived=archived,
        sort=sort,
        order=order,
        limit=limit,
        offset=offset,
        after=after,
    )
    page = {"items": rows, "total": total, "limit": limit, "offset": offset}
    return json_response(RunList, page)


@router.get("/{run_id}", response_model=RunPublic, dependencies=READ, responses=NOT_FOUND)
def get_run(run_id: RunId, session: SessionDep) -> Response:
    """The run; while it is queued, ``queued_ahead`` says how many runs go before it."""
    row = store.run_row(session, run_id)
    return json_response(RunPublic, {**row, "queued_ahead": store.queued_ahead(session, row)})


@router.post(
    "/{run_id}/cancel",
    response_model=RunPublic,
    dependencies=WRITE,
    responses={**NOT_FOUND, **CONFLICT},
)
def cancel_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> Response:
    """A queued run, or a running one whose worker is gone (stale heartbeat), is cancelled at
    once; a live running one stops at its worker's next check."""
    run = store.request_cancel(session, run_id, stale_before=settings.stale_before())
    return json_response(RunPublic, RunPublic.model_validate(run))


@router.post(
    "/{run_id}/retry",
    response_model=RunPublic,
    dependencies=WRITE,
    responses={**NOT_FOUND, **CONFLICT},
)
def retry_run(run_id: RunId, session: SessionDep, request: Request) -> Response:
    """Queue a finished run again from scratch (409 unless it has finished)."""
    run = store.retry_run(session, run_id)
    enqueue(request, run_id)
    return json_response(RunPublic, RunPublic.model_validate(run))


@router.post(
    "/{run_id}/archive",
    response_model=RunPublic,
    dependencies=WRITE,
    responses=NOT_FOUND,
)
def archive_run(run_id: RunId, session: SessionDep) -> Response:
    """Archive a run: GET /api/runs leaves it out unless ``archived=true``; its epochs, its
    sweep and its comparisons keep it. Any state; undone by ``unarchive``."""
    return json_response(RunPublic, RunPublic.model_validate(store.set_archived(session, run_id,
                                                                                 True)))


@router.post(
    "/{run_id}/unarchive",
    response_model=RunPublic,
    dependencies=WRITE,
    responses=NOT_FOUND,
)
def unarchive_run(run_id: RunId, session: SessionDep) -> Response:
    """Bring an archived run back into the runs table."""
    return json_response(RunPublic, RunPublic.model_validate(store.set_archived(session, run_id,
                                                                                 False)))


@router.delete(
    "/{run_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=WRITE,
    responses={**NOT_FOUND, **CONFLICT},
)
def delete_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a run, its epochs and its checkpoint (409 while a live worker runs it: cancel it
    first)."""
    store.delete_run(session, run_id, stale_before=settings.stale_before())
    remove_checkpoints(settings, [run_id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
