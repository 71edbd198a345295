"""GET /api/convex: the binary convex counter-example, bounded (cached, one at a time)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from bamsprod.app.api.deps import AUTH_ERRORS, READ

router = APIRouter(tags=["dashboard"], dependencies=READ, responses=AUTH_ERRORS)

CONVEX_MAX_STEPS = 20_000

CONVEX_CACHE_SIZE = 32
CONVEX_RETRY_AFTER = 5


def _run_convex(steps: int, c: float) -> dict[str, Any]:
    from bamsprod.core.convex import run_convex  # torch: imported on use only

    traces = run_convex(steps=steps, c=c)
    return {
        "steps": steps,
        "c": c,
        "optimizers": {
            name: {
                "x": t.x,
                "avg_regret": t.avg_regret,
                "final_x": t.final_x,
                "final_regret": t.final_regret,
            }
            for name, t in traces.items()
        },
    }


class ConvexResults:
    """``/api/convex`` answers, bounded: each (steps, c) is computed once and kept (LRU, at most
    ``size``); one computation runs at a time (seconds of CPU), and while it does a request for
    other parameters is a 503 with Retry-After, and one for the same parameters waits for it."""

    def __init__(self, size: int = CONVEX_CACHE_SIZE) -> None:
        self.size = size
        self.done: OrderedDict[tuple[int, float], dict[str, Any]] = OrderedDict()
        self.running: dict[tuple[int, float], asyncio.Future[dict[str, Any]]] = {}

    async def get(self, steps: int, c: float) -> dict[str, Any]:
        key = (steps, c)
        if key in self.done:
            self.done.move_to_end(key)
            return self.done[key]
        future = self.running.get(key)
        if future is None:
            if self.running:
                raise HTTPException(
                    503,
                    "busy computing the convex example for other parameters; retry shortly",
                    headers={"Retry-After": str(CONVEX_RETRY_AFTER)},
                )
            future = asyncio.ensure_future(run_in_threadpool(_run_convex, steps, c))
            self.running[key] = future
            future.add_done_callback(lambda f: self._finished(key, f))
        # shield: a client that leaves does not cancel the computation others wait for
        return await asyncio.shield(future)

    def _finished(self, key: tuple[int, float], future: asyncio.Future[dict[str, Any]]) -> None:
        self.running.pop(key, None)
        if not future.cancelled() and future.exception() is None:
            self.done[key] = future.result()
            while len(self.done) > self.size:
                self.done.popitem(last=False)


@router.get("/convex", responses={503: {"description": "busy with other parameters: retry"}})
async def get_convex(
    request: Request,
    steps: Annotated[int, Query(ge=1, le=CONVEX_MAX_STEPS)] = 3000,
    c: Annotated[float, Query(gt=2, le=100, description="the rare gradient's size C")] = 3.0,
) -> dict[str, Any]:
    """Run the binary convex counter-example for each optimizer: x_t and average regret."""
    return await request.app.state.convex.get(steps, c)
