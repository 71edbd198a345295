"""Sweeps: a base config × a grid of values per field × seeds, expanded to runs."""

from __future__ import annotations

import copy
import itertools
import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response, status
from pydantic import ValidationError

from app import store, tuning
from app.api.deps import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CONFLICT,
    MAX_ID,
    READ,
    WRITE,
    SessionDep,
    SettingsDep,
    enqueue,
    json_response,
    remove_checkpoints,
    unprocessable,
)
from app.compare import fmt_value
from app.schemas import (
    ErrorDetail,
    SweepCreate,
    SweepDetail,
    SweepList,
    SweepPublic,
    SweepSubmitted,
)
from app.security import require_sweep_access
from core.model_size import SIZE_ARG, too_large
from core.spec import RunConfig, escape_text

router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=AUTH_ERRORS)

NESTED = ("hparams", "model_args")
GRID_FIELDS = tuple(f for f in RunConfig.model_fields if f not in ("schema_version", *NESTED))


def _check_grid(body: SweepCreate) -> None:
    for key, values in body.grid.items():
        head, _, rest = key.partition(".")
        ok = (head in NESTED and rest and "." not in rest) or (not rest and head in GRID_FIELDS)
        if not ok:
            unprocessable(
                ("body", "grid", key),
                f"unknown grid field {key!r}; use a run config field "
                "or hparams.<name> / model_args.<name>",
                key,
            )
        if not values:
            unprocessable(("body", "grid", key), f"grid field {key!r} needs at least one value")
    seeded = body.seeds is not None or body.n_seeds is not None
    if body.seeds is not None and body.n_seeds is not None:
        unprocessable(("body", "n_seeds"), "give seeds or n_seeds, not both", body.n_seeds)
    if seeded and "seed" in body.grid:
        unprocessable(("body", "grid", "seed"), "seeds are given; leave seed out of the grid")


def sweep_seeds(body: SweepCreate) -> list[int | None]:
    """The seeds each grid point runs with (None: the base/grid seed)."""
    if body.seeds is not None:
        return list(dict.fromkeys(body.seeds))
    if body.n_seeds is not None:
        start = body.base.get("seed", 0) or 0
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**31:
            unprocessable(("body", "base", "seed"), "seed must be an integer 0..2^31-1", start)
        return list(range(start, start + body.n_seeds))
    return [None]


def sweep_count(body: SweepCreate) -> int:
    """How many runs the sweep expands to (validates the grid's keys first)."""
    _check_grid(body)
    return math.prod(len(v) for v in body.grid.values()) * len(sweep_seeds(body))


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if rest:
        nested = config.get(head)
        config[head] = {**nested} if isinstance(nested, dict) else {}
        config[head][rest] = value
    else:
        config[head] = value


def _error_loc(exc: ValidationError, grid: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """Where a combination's error belongs: the grid key that set the field, else the base."""
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    field = str(loc[0]) if loc else ""
    msg = str(err.get("msg", "invalid value"))
    if field in grid:
        return ("body", "grid", field), msg
    if field in NESTED and len(loc) > 1 and f"{field}.{loc[1]}" in grid:
        return ("body", "grid", f"{field}.{loc[1]}"), msg
    if field in NESTED:
        for key in grid:
            head, _, name = key.partition(".")
            if head == field and re.search(rf"\b{re.escape(name)}\b", msg):
                return ("body", "grid", key), msg
    return ("body", "base", *loc), msg


def expand(body: SweepCreate) -> list[RunConfig]:
    """Every run of the sweep, validated; a bad combination is a 422 naming its field."""
    _check_grid(body)
    keys = list(body.grid)
    configs: list[RunConfig] = []
    for values in itertools.product(*(body.grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        for seed in sweep_seeds(body):
            data = copy.deepcopy(body.base)
            for k, v in point.items():
                _set(data, k, v)
            if seed is not None:
                data["seed"] = seed
            # Grid values may hold text a field will reject: the label must not fail first.
            label = escape_text(" ".join(f"{k}={fmt_value(v)}" for k, v in point.items()))
            base_name = str(body.base.get("name") or body.name)
            name = " ".join(p for p in (base_name, label, f"seed={data.get('seed', 0)}") if p)
            data["name"] = name[:200]
            try:
                configs.append(RunConfig.model_validate(data))
            except ValidationError as exc:
                loc, msg = _error_loc(exc, body.grid)
                where = ", ".join(f"{k}={fmt_value(v)}" for k, v in point.items())
                unprocessable(loc, f"{msg} (at {where})" if where else msg, None)
    return configs


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
    if body.strategy == "tune":
        return _submit_tuned(body, session, settings, request, response, background, dry_run)
    if body.tune is not None:
        unprocessable(("body", "tune"), "tune is for strategy tune")
    count = sweep_count(body)
    limit = settings.max_sweep_runs
    if dry_run:
        response.status_code = status.HTTP_200_OK
        if count <= limit:
            expand(body)
        return SweepSubmitted(count=count, max_runs=limit, dry_run=True)
    if count > limit:
        unprocessable(("body", "grid"), f"the sweep has {count} runs; the limit is {limit}", count)
    configs = expand(body)
    longest = max((c.epochs for c in configs), default=0)
    if longest > settings.max_epochs:
        loc = ("body", "grid", "epochs") if "epochs" in body.grid else ("body", "base", "epochs")
        unprocessable(loc, f"at most {settings.max_epochs} epochs on this server", longest)
    for config in configs:
        if (why := too_large(config, settings.max_param_bytes)) is not None:
            arg = SIZE_ARG[config.model]
            key = f"model_args.{arg}"
            loc = ("body", "grid", key) if key in body.grid else ("body", "base", "model_args", arg)
            unprocessable(loc, f"{why} (run {config.name!r})", config.model_args[arg])
    spec = body.model_dump(mode="json")
    sweep, runs = store.create_sweep(session, body.name, spec, configs)
    # One message per run, after the answer is sent: the runs are committed ``queued`` in one
    # transaction already, and the reconciler re-queues any whose message never left.
    background.add_task(_enqueue_all, request, [int(r.id) for r in runs])  # type: ignore[arg-type]
    return SweepSubmitted(
        count=count,
        max_runs=limit,
        dry_run=False,
        sweep=SweepPublic.model_validate(sweep),
        run_ids=[r.id for r in runs],  # type: ignore[misc]
    )


def _submit_tuned(body: SweepCreate, session: SessionDep, settings: SettingsDep,
                  request: Request, response: Response, background: BackgroundTasks,
                  dry_run: bool) -> SweepSubmitted:
    limit = settings.max_sweep_runs
    try:
        seeds = sweep_seeds(body)
        count, configs = tuning.check(body, seeds)
        if dry_run:
            response.status_code = status.HTTP_200_OK
            return SweepSubmitted(count=count, max_runs=limit, dry_run=True)
        if count > limit:
            unprocessable(("body", "tune", "n_lr"),
                          f"the sweep has {count} runs; the limit is {limit}", count)
        epochs = max(c.epochs for c in configs)
        if epochs > settings.max_epochs:
            unprocessable(("body", "base", "epochs"),
                          f"at most {settings.max_epochs} epochs on this server", epochs)
        for config in configs:  # before any Optuna study exists
            if (why := too_large(config, settings.max_param_bytes)) is not None:
                arg = SIZE_ARG[config.model]
                unprocessable(("body", "base", "model_args", arg), why, config.model_args[arg])
        spec, trials = tuning.plan_stage1(body, seeds, settings.database_url)
    except tuning.TuneError as exc:
        unprocessable(exc.loc, exc.msg, exc.value)
    sweep, runs = store.create_sweep(session, body.name, spec, [t.config for t in trials],
                                     before_commit=tuning.link_stage1(trials))
    background.add_task(_enqueue_all, request, [int(r.id) for r in runs])  # type: ignore[arg-type]
    return SweepSubmitted(count=count, max_runs=limit, dry_run=False,
                          sweep=SweepPublic.model_validate(sweep),
                          run_ids=[r.id for r in runs])  # type: ignore[misc]


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
