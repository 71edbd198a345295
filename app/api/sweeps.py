"""Sweeps: a base config × a grid of values per field × seeds, expanded to runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response, status

from bamsprod.app import store, tuning
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
from bamsprod.app.schemas import (
    ErrorDetail,
    SweepCancelled,
    SweepCreate,
    SweepDetail,
    SweepList,
    SweepPublic,
    SweepSubmitted,
)
from bamsprod.app.security import require_sweep_access
from bamsprod.app.sweeps import check_count, check_limits, count, expand, seeds

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
    (see ``app.tuning``); the workers queue stage 2 when it ends."""
    limit = settings.max_sweep_runs
    with invalid_fields("body"):
        if body.strategy == "tune":
            n, configs = tuning.check(body, seeds(body), limit)
        else:
            n = count(body)
            configs = expand(body) if n <= limit else []
        if dry_run:
            response.status_code = status.HTTP_200_OK
            return SweepSubmitted(count=n, max_runs=limit, dry_run=True)
        check_count(body, n, limit)
        check_limits(body, configs, settings.max_epochs, settings.max_param_bytes,
                     settings.max_activation_bytes, settings.data_roots)
        if body.strategy == "tune":  # before any Optuna study exists: every check is done
            spec, trials = tuning.plan_stage1(body, seeds(body), settings.database_url)
            configs, link = [t.config for t in trials], tuning.link_stage1(trials)
        else:
            spec, link = body.model_dump(mode="json"), None
    sweep, runs = store.create_sweep(session, body.name, spec, configs, before_commit=link)
    session.close()  # no connection held while the broker takes the messages (it may hang)
    # One message per run, after the answer is sent: the runs are committed ``queued`` in one
    # transaction already, and the reconciler re-queues any whose message never left.
    background.add_task(_enqueue_all, request, [int(r.id) for r in runs])  # type: ignore[arg-type]
    return SweepSubmitted(
        count=n,
        max_runs=limit,
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
    spec = store.get_sweep(session, sweep_id).spec
    remove_checkpoints(settings, store.delete_sweep(session, sweep_id))
    tuning.forget(settings.database_url, spec)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
