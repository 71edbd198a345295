"""ETags and a small per-process cache for answers that can no longer change.

A comparison whose runs have all finished is immutable until one of them is retried or
deleted. Its ETag hashes the query with each run's id, state, epochs done, retry count and
creation / finish times: a retry changes the state (then the retry count and finish time), a
delete changes the set of ids (a sweep) or answers 404 (listed ids), so a stale tag never
matches.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request

from bamsprod.core.config import TERMINAL_STATES

# Bump when the answer's shape changes, so tags from older code never match.
SHAPE_VERSION = b"compare-2"


def etag(rows: Sequence[Mapping[str, Any]], request: Request, csv: bool) -> str | None:
    """A strong ETag for the answer over ``rows`` (``store.compare_run_rows``), or None while
    any run can still change (or there are none)."""
    if not rows or any(r["state"] not in TERMINAL_STATES for r in rows):
        return None
    h = hashlib.blake2b(SHAPE_VERSION, digest_size=16)
    h.update(repr((csv, sorted(request.query_params.multi_items()))).encode())
    for r in rows:
        h.update(
            f"|{r['id']},{r['state']},{r['epochs_done']},{r['retries']},"
            f"{r['created_at']},{r['finished_at']}".encode()
        )
    return f'"{h.hexdigest()}"'


def if_none_match(request: Request) -> set[str]:
    """The tags of the request's ``If-None-Match`` (weak ``W/`` prefixes dropped)."""
    header = request.headers.get("if-none-match", "")
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


class ResponseCache:
    """Answer bodies by ETag, least recently used out first, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: tuple[bytes, str]) -> None:
        if len(item[0]) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size += len(item[0]) - (len(old[0]) if old else 0)
            self._items[key] = item
            while self.size > self.max_bytes:
                _, (body, _) = self._items.popitem(last=False)
                self.size -= len(body)
