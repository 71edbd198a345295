"""Fixtures for browser tests: a real ``bamsprod up`` (API + Celery worker on SQLite) and
headless Chromium driven by Playwright's sync API.

- ``live_server``: ``python -m bamsprod up --port N`` in a temporary ``BAMSPROD_HOME`` (embedded
  default: SQLite database, SQLite broker, one real worker), returned once the worker has
  answered /api/health; stopped (SIGTERM, then SIGKILL of its process group) at teardown. Its
  output goes to ``artifacts/browser-server.log``.
- ``browser``: Debian's ``/usr/bin/chromium`` (or ``$BAMSPROD_CHROMIUM``) launched headless;
  Playwright's own browsers are never installed. Without it the test is skipped, or with
  ``CI=true`` it fails.
- ``page``: a fresh context whose every request is checked: a request to any host but the
  server is aborted and recorded, and so are page errors, console errors and dialogs (an
  ``alert`` from injected markup); the test fails at teardown if any were seen. ``confirm``
  dialogs (the page asks before cancelling a run) are accepted and listed in
  ``watch.confirms``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = os.environ.get("BAMSPROD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_READY_SECONDS = 90.0
EXPECTED_STATUS = re.compile(r"Failed to load resource: .* status of 422\b")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip the test because ``what`` is missing, or under ``CI=true`` fail it."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: browser tests must not skip)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A running ``bamsprod up``: its base URL, home directory and process."""

    url: str
    home: Path
    proc: subprocess.Popen
    host: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def wait_runs(self, ids: list[int], timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait until every run in ``ids`` has finished; returns them."""
        deadline = time.monotonic() + timeout
        with self.api() as c:
            while True:
                runs = [c.get(f"/api/runs/{i}").json() for i in ids]
                if all(r["state"] not in ("queued", "running") for r in runs):
                    return runs
                if time.monotonic() > deadline:
                    states = {r["id"]: r["state"] for r in runs}
                    raise AssertionError(f"runs not finished after {timeout} s: {states}")
                if self.proc.poll() is not None:
                    raise AssertionError(f"bamsprod up exited ({self.proc.returncode})")
                time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:  # anything left in the process group this fixture started
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``bamsprod up`` (API + one real worker) on a free port and a fresh SQLite home."""
    home = tmp_path_factory.mktemp("bamsprod-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(
        BAMSPROD_HOME=str(home),
        BAMSPROD_SSE_POLL_SECONDS="0.1",
        PYTHONUNBUFFERED="1",
        # Tiny batches on a busy 2-core box: one torch thread is ~20x faster than two.
        OMP_NUM_THREADS="1",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "browser-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bamsprod", "up", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    server = LiveServer(url, home, proc, f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        last: object = None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bamsprod up exited with {proc.returncode}; see {log.name}")
            try:
                health = httpx.get(f"{url}/api/health", timeout=5).json()
                if health.get("workers"):
                    break
                last = health
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            if time.monotonic() > deadline:
                pytest.fail(f"bamsprod up not ready after {SERVER_READY_SECONDS} s: {last}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium via Playwright (never ``playwright install``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        missing(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watch:
    """What a page did that a test must not allow."""

    host: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    confirms: list[str] = field(default_factory=list)  # accepted: the page asks before cancelling

    def check(self) -> None:
        assert not self.foreign, f"requests to other hosts: {self.foreign}"
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.errors, f"page or console errors: {self.errors}"


@pytest.fixture
def watch(live_server: LiveServer) -> Watch:
    return Watch(live_server.host)


@pytest.fixture
def page(browser: Any, live_server: LiveServer, watch: Watch) -> Iterator[Any]:
    """A page in a fresh context; requests to other hosts are blocked and fail the test."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, base_url=live_server.url
    )
    context.set_default_timeout(20_000)

    def guard(route: Any) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != watch.host:
            watch.foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.on("websocket", lambda ws: watch.foreign.append(f"websocket {ws.url}"))
    pg.on("pageerror", lambda exc: watch.errors.append(f"pageerror: {exc}"))

    def on_console(msg: Any) -> None:
        # A 422 is the form's validation answer, shown beside the field: expected, not an error.
        if msg.type == "error" and not EXPECTED_STATUS.search(msg.text):
            watch.errors.append(f"console: {msg.text}")

    pg.on("console", on_console)

    def on_dialog(dialog: Any) -> None:
        if dialog.type == "confirm":
            watch.confirms.append(dialog.message)
            dialog.accept()
        else:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    pg.on("dialog", on_dialog)
    try:
        yield pg
    finally:
        context.close()
    watch.check()


@pytest.fixture
def shoot() -> Any:
    """``shoot(page, name)`` saves ``artifacts/screenshots/<name>.png`` (see ``screenshot``)."""
    return screenshot


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
