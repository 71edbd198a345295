"""``bamsprod serve --workers N``: N uvicorn processes on one port, and every process's own
shared SSE poller delivers each epoch to its subscribers (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from service_fixtures import stop_process_group
from test_embedded import children_of
from test_sse import SSEClient, free_port

from bamsprod.app import store
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]
EPOCH = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5,
         "quant_error": 0.1, "quant_error_layers": {}, "flip_rate": 0.0, "lr": 1e-3,
         "seconds": 0.1}


def spawned_workers(pid: int) -> list[int]:
    """uvicorn's worker processes under ``pid`` (multiprocessing spawn children)."""
    out = []
    for child in children_of(pid):
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                out.append(child)
    return out


def test_two_api_processes_each_stream_epochs(db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as s:
        run_id = store.create_run(s, RunConfig(epochs=2)).id
        assert store.claim_run(s, run_id, "test", "cpu")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(BAMSPROD_HOME=str(tmp_path), BAMSPROD_DATABASE_URL=db_url,
               BAMSPROD_BROKER_URL="memory://", BAMSPROD_SSE_POLL_SECONDS="0.1",
               PYTHONPATH=str(ROOT))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bamsprod", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while len(spawned_workers(proc.pid)) < 2 or not _ready(url):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "serve --workers 2 did not start"
            time.sleep(0.3)
        assert len(spawned_workers(proc.pid)) == 2
        clients = [SSEClient(f"{url}/api/runs/{run_id}/events?after=0") for _ in range(6)]
        for c in clients:
            c.wait_for(lambda ev: any(e.get("event") == "state" for e in ev), timeout=30)
        with session_scope(db_url) as s:
            store.record_epoch(s, run_id, EPOCH)
            store.finish_run(s, run_id, "succeeded")
        for c in clients:
            assert c.ended.wait(30), c.events
            assert [e["data"]["epoch"] for e in c.events if e.get("event") == "epoch"] == [1]
            assert c.events[-1]["data"]["state"] == "succeeded"
    finally:
        stop_process_group(proc, timeout=30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/runs?limit=1", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
