"""GET /api/runs/{id}/events: Server-Sent Events, fed by ONE shared poller per process.

The ``Broadcaster`` keeps the subscribers of every run. While any exist, a single background
task reads, every ``sse_poll_seconds``, the state and new epochs of all subscribed runs in one
query (``store.poll_runs``) and fans the rows out to each subscriber's queue; with no
subscribers it issues no queries at all.

Stream: ``event: state`` (data: the run) first and on every change of state, cancel flag or
phase (what the run does before its first epoch);
``id: <epoch>`` + ``event: epoch`` (data: the epoch's metrics) per new epoch, then ``event: run``
(data: the run, with the summary columns the server computed with those epochs); a
``: keep-alive`` comment every ``sse_heartbeat_seconds``; the stream ends after the terminal
state event (or an ``event: deleted`` if the run disappears). Resume with
``Last-Event-ID: <epoch>`` or ``?after=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from bamsprod.app import store
from bamsprod.app.api.deps import AUTH_ERRORS, NOT_FOUND, RunId, SessionDep, unprocessable
from bamsprod.app.api.metrics import MAX_EPOCH
from bamsprod.app.api.security import issue_ticket, require_read, require_read_or_ticket
from bamsprod.app.safejson import dumps
from bamsprod.app.schemas import EpochMetricPublic, ErrorDetail, RunPublic
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import TERMINAL_STATES

log = logging.getLogger(__name__)
SSE_RETRY_AFTER = 5
router = APIRouter(prefix="/runs", tags=["events"], responses=AUTH_ERRORS)


def sse(data: Any, event: str | None = None, id: int | None = None) -> str:
    """One SSE message."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + dumps(data).decode())  # never NaN or a lone surrogate
    return "\n".join(lines) + "\n\n"


class Subscription:
    """One client's view of one run: its epoch cursor, last state seen and outbox."""

    def __init__(self, run_id: int, after: int | None) -> None:
        self.run_id = run_id
        self.cursor = after
        self.signature: tuple[str, bool, str | None] | None = None
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False

    def deliver(self, run: dict[str, Any] | None, epochs: list[dict[str, Any]]) -> None:
        """Queue what is new for this client: state (non-terminal first), epochs, final state."""
        if self.closed:
            return
        if run is None:
            self.queue.put_nowait(sse({"id": self.run_id}, event="deleted"))
            self._close()
            return
        signature = (run["state"], bool(run["cancel_requested"]), run.get("phase"))
        changed = signature != self.signature
        terminal = run["state"] in TERMINAL_STATES
        self.signature = signature
        if changed and not terminal:
            self.queue.put_nowait(sse(run, event="state"))
        fresh = False
        for m in epochs:
            if self.cursor is None or m["epoch"] > self.cursor:
                self.queue.put_nowait(sse(m, event="epoch", id=m["epoch"]))
                self.cursor = m["epoch"]
                fresh = True
        if fresh and not terminal:  # the summary that goes with them (the final state has it)
            self.queue.put_nowait(sse(run, event="run"))
        if terminal:
            self.queue.put_nowait(sse(run, event="state"))
            self._close()

    def _close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class Broadcaster:
    """The process's single SSE poller (see the module docstring)."""

    def __init__(self, database_url: str, poll_seconds: float) -> None:
        self.database_url = database_url
        self.poll_seconds = poll_seconds
        self.subscribers: dict[int, set[Subscription]] = {}
        self.ticks = 0  # polls done (one query each); tests compare it with queries issued
        self.open_streams = 0  # responses streaming or being set up (the cap's count)
        # Its own thread: health checks or requests stuck on a hung service never delay a poll.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bamsprod-sse")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="sse-poller")
        assert self._wake is not None
        self._wake.set()

    def subscribe(self, run_id: int, after: int | None) -> Subscription:
        sub = Subscription(run_id, after)
        self.subscribers.setdefault(run_id, set()).add(sub)
        self._ensure_running()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subscribers.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.run_id]

    @property
    def n_subscribers(self) -> int:
        return sum(len(s) for s in self.subscribers.values())

    def take_slot(self, cap: int) -> bool:
        """Count one more open stream if fewer than ``cap`` are open (streams being set up
        included): checked and counted in one step on the event loop, so the cap is exact."""
        if self.open_streams >= cap:
            return False
        self.open_streams += 1
        return True

    def free_slot(self) -> None:
        self.open_streams -= 1

    def query(self, cursors: dict[int, int | None]) -> dict[int, tuple[dict | None, list[dict]]]:
        """Each run (JSON-ready, None if gone) and its epochs after its cursor: one query."""
        with session_scope(self.database_url) as session:
            rows = store.poll_runs(session, cursors)
            return {
                rid: (
                    RunPublic.model_validate(run).model_dump(mode="json") if run else None,
                    [EpochMetricPublic.model_validate(m).model_dump(mode="json") for m in eps],
                )
                for rid, (run, eps) in rows.items()
            }

    async def tick(self) -> None:
        """One poll: one query for every subscribed run, results fanned out."""
        cursors: dict[int, int | None] = {}
        # Only the subscribers present when the query starts get its rows: one that joins
        # meanwhile was sent a newer snapshot of its own (see ``run_events``).
        targets = {rid: list(subs) for rid, subs in self.subscribers.items() if subs}
        for rid, subs in targets.items():
            cs = [s.cursor for s in subs]
            cursors[rid] = None if None in cs else min(c for c in cs if c is not None)
        if not cursors:
            return
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self.query, cursors)
        self.ticks += 1
        for rid, (run, epochs) in result.items():
            for sub in targets.get(rid, ()):
                sub.deliver(run, epochs)
                if sub.closed:
                    self.unsubscribe(sub)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self.subscribers:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.tick()
            except Exception:  # a database blip: try again next tick
                log.exception("SSE poll failed")
            await asyncio.sleep(self.poll_seconds)

    async def stop(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None


def _parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"-?[0-9]{1,7}", text) and -1 <= int(text) <= MAX_EPOCH:
        return int(text)
    unprocessable(("header", "last-event-id"), "Last-Event-ID must be an epoch number", value)


async def _stream(
    broadcaster: Broadcaster,
    run_id: int,
    cursor: int | None,
    heartbeat: float,
    first: tuple[dict | None, list[dict]],
) -> AsyncIterator[str]:
    # Subscribe only once the response streams, so a client gone before that leaves nothing.
    # ``first`` (read when the request came in) is sent at once, not at the poller's next tick.
    sub = broadcaster.subscribe(run_id, cursor)
    sub.deliver(*first)
    if sub.closed:
        broadcaster.unsubscribe(sub)
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=heartbeat)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            yield item
    finally:
        broadcaster.unsubscribe(sub)


class EventTicket(BaseModel):
    """A short-lived ticket for one run's event stream: ``?ticket=<ticket>``."""

    ticket: str
    expires_in: float


@router.post(
    "/{run_id}/events/ticket",
    response_model=EventTicket,
    dependencies=[Depends(require_read)],
    responses=NOT_FOUND,
)
def event_ticket(run_id: RunId, request: Request, session: SessionDep) -> EventTicket:
    """A ticket for ``GET /api/runs/{run_id}/events?ticket=...`` (``EventSource`` cannot send
    an Authorization header, and a token in a URL would land in access logs)."""
    store.require_run(session, run_id)
    settings = request.app.state.settings
    return EventTicket(ticket=issue_ticket(settings, run_id),
                       expires_in=settings.ticket_seconds)


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    dependencies=[Depends(require_read_or_ticket)],
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND,
               503: {"model": ErrorDetail, "description": "too many open streams: retry"}},
)
async def run_events(
    run_id: RunId,
    request: Request,
    after: Annotated[
        int | None, Query(ge=-1, le=MAX_EPOCH, description="send epochs after this one")
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ticket: Annotated[
        str | None,
        Query(max_length=200, description="from POST .../events/ticket, for EventSource"),
    ] = None,
) -> StreamingResponse:
    """Live epochs and state changes of one run (Server-Sent Events).

    When ``BAMSPROD_READ_TOKEN`` is set, send it as a bearer token, or a ``?ticket=`` from
    ``POST /api/runs/{run_id}/events/ticket``.
    """
    resume = _parse_last_event_id(last_event_id)
    cursor = resume if resume is not None else after
    settings = request.app.state.settings
    broadcaster: Broadcaster = request.app.state.broadcaster
    cap = settings.max_sse_connections
    if not broadcaster.take_slot(cap):
        raise HTTPException(503, f"{cap} event streams are open, the most this server takes; "
                            "retry shortly", headers={"Retry-After": str(SSE_RETRY_AFTER)})
    try:
        first = (await run_in_threadpool(broadcaster.query, {run_id: cursor}))[run_id]
        if first[0] is None:
            raise store.RunNotFound(run_id)
    except BaseException:
        broadcaster.free_slot()
        raise
    return SlotStream(
        _stream(broadcaster, run_id, cursor, settings.sse_heartbeat_seconds, first),
        release=broadcaster.free_slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class SlotStream(StreamingResponse):
    """A streaming response that gives its stream slot back when it ends, however it ends
    (sent in full, the client gone, or never started)."""

    def __init__(self, content: Any, *, release: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
