"""Runs: submit, list, read, cancel, retry, delete."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status

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
from bamsprod.app.data_roots import data_dir_refusal
from bamsprod.app.schemas import RUN_SORT_COLUMNS, RunList, RunPublic
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import RUN_STATES, RunConfig
from bamsprod.core.model_size import size_field, too_large, too_much_activation

router = APIRouter(prefix="/runs", tags=["runs"], responses=AUTH_ERRORS)
MAX_OFFSET = 10_000_000

SortColumn = Literal[RUN_SORT_COLUMNS]  # type: ignore[valid-type]


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    dependencies=WRITE,
    responses={**BODY_ERRORS, 200: {"model": RunPublic, "description": "a retry with the "
                                    "same Idempotency-Key: the run it created"}},
)
def submit_run(
    config: RunConfig,
    settings: SettingsDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(
        description="1-64 printable ASCII characters: a retry with the same key returns the "
        "run the first try created (200) instead of creating another")] = None,
) -> Response:
    """Record a run as ``queued`` and queue it. The body is the run config.

    The database session is closed before the run is handed to the broker, and that hand-over
    waits at most ``enqueue_timeout_seconds``: a hung broker holds neither a connection nor the
    client. A run the broker did not take stays ``queued`` and is sent by the reconciler."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        unprocessable(("header", "idempotency-key"),
                      "must be 1 to 64 printable ASCII characters without spaces")
    if config.epochs > settings.max_epochs:
        unprocessable(("body", "epochs"), f"at most {settings.max_epochs} epochs on this server",
                      config.epochs)
    if (why := too_large(config, settings.max_param_bytes)) is not None:
        loc, value = size_field(config)
        unprocessable(("body", *loc), why, value)
    if (why := too_much_activation(config, settings.max_activation_bytes)) is not None:
        unprocessable(("body", "batch_size"), why, config.batch_size)
    if (why := data_dir_refusal(config.data_dir, settings.data_roots)) is not None:
        unprocessable(("body", "data_dir"), why, config.data_dir)
    with session_scope(settings.database_url) as session:
        try:
            run, created = store.create_run_once(session, config, idempotency_key)
        except store.IdempotencyMismatch as exc:
            unprocessable(("header", "idempotency-key"), str(exc))
        public = RunPublic.model_validate(run)
    if created or public.state == "queued":  # a retry re-sends: the first send may be lost
        enqueue(request, public.id)
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response = json_response(RunPublic, public, code)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


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
    session.close()  # the connection goes back before the broker is asked (it may hang)
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
