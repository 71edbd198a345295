"""Sweeps: a base config × a grid of values per field × seeds, expanded to runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response, status

from bamsprod.app import store
from bamsprod.app.api.deps import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CONFLICT,
    MAX_ID,
    READ,
    WRITE,
    SessionDep,
    SettingsDep,
    enqueue,
    invalid_fields,
    json_response,
    remove_checkpoints,
)
from bamsprod.app.api.security import require_sweep_access
from bamsprod.app.schemas import (
    ErrorDetail,
    SweepCancelled,
    SweepCreate,
    SweepDetail,
    SweepList,
    SweepPublic,
    SweepSubmitted,
)
from bamsprod.app.sweeps import tuning
from bamsprod.app.sweeps.plan import plan_sweep

router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=AUTH_ERRORS)


def _enqueue_all(request: Request, run_ids: list[int]) -> None:
    for run_id in run_ids:
        enqueue(request, run_id)


@router.post(
    "",
    response_model=SweepSubmitted,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "dry run: the count only", "model": SweepSubmitted},
               **BODY_ERRORS},
    dependencies=[Depends(require_sweep_access)],
)
def submit_sweep(
    body: SweepCreate,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    dry_run: Annotated[bool, Query(description="only count (and check) the runs")] = False,
) -> SweepSubmitted:
    """Expand the grid × seeds into runs, record them ``queued`` in one transaction (one bulk
    insert) and queue them all once the answer has gone. ``strategy: tune`` queues stage 1
    (see ``app.sweeps.tuning``); the workers queue stage 2 when it ends."""
    with invalid_fields("body"):
        plan = plan_sweep(body, settings, dry_run=dry_run)
    if plan.dry_run:
        response.status_code = status.HTTP_200_OK
        return SweepSubmitted(count=plan.count, max_runs=plan.max_runs, dry_run=True)
    sweep, runs = store.create_sweep(session, body.name, plan.definition, plan.configs, plan.trials)
    session.close()  # no connection held while the broker takes the messages (it may hang)
    # One message per run, after the answer is sent: the runs are committed ``queued`` in one
    # transaction already, and the reconciler re-queues any whose message never left.
    background.add_task(_enqueue_all, request, [int(r.id) for r in runs])  # type: ignore[arg-type]
    return SweepSubmitted(
        count=plan.count,
        max_runs=plan.max_runs,
        dry_run=False,
        sweep=SweepPublic.model_validate(sweep),
        run_ids=[r.id for r in runs],  # type: ignore[misc]
    )


@router.get("", response_model=SweepList, dependencies=READ)
def list_sweeps(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    sweeps, total = store.list_sweeps(session, limit=limit, offset=offset)
    items = [SweepPublic.model_validate(s).model_dump() for s in sweeps]
    return json_response(SweepList, {"items": items, "total": total, "limit": limit,
                                     "offset": offset})


SweepId = Annotated[int, Path(ge=1, le=MAX_ID, description="sweep id")]
SWEEP_NOT_FOUND = {404: {"model": ErrorDetail, "description": "no such sweep"}}


@router.get("/{sweep_id}", response_model=SweepDetail, dependencies=READ,
            responses=SWEEP_NOT_FOUND)
def get_sweep(sweep_id: SweepId, session: SessionDep) -> Response:
    sweep = store.get_sweep(session, sweep_id)
    run_ids = [r.id for r in store.runs_of_sweep(session, sweep_id)]
    detail = {
        **SweepPublic.model_validate(sweep).model_dump(),
        "states": store.sweep_state_counts(session, sweep_id),
        "run_ids": run_ids,
        "tuning": tuning.summary(session, sweep),
    }
    return json_response(SweepDetail, detail)


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepCancelled,
    dependencies=WRITE,
    responses=SWEEP_NOT_FOUND,
)
def cancel_sweep(sweep_id: SweepId, session: SessionDep, settings: SettingsDep) -> Response:
    """Cancel every queued or running run of the sweep in one request (as ``POST
    /api/runs/{id}/cancel`` does one run); a tuned sweep starts no stage 2 after it."""
    ended, flagged = store.cancel_sweep(session, sweep_id, stale_before=settings.stale_before())
    tuning.close_stages(session, store.get_sweep(session, sweep_id))
    return json_response(SweepCancelled, {"sweep_id": sweep_id, "cancelled": ended,
                                          "cancel_requested": flagged})


@router.delete(
    "/{sweep_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=WRITE,
    responses={**SWEEP_NOT_FOUND, **CONFLICT},
)
def delete_sweep(sweep_id: SweepId, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a sweep with its runs, their epochs and checkpoints (409 while any of its runs
    is queued or running: cancel them first)."""
    definition = store.get_sweep(session, sweep_id).definition
    remove_checkpoints(settings, store.delete_sweep(session, sweep_id))
    tuning.forget(settings.database_url, definition)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
