"""Access control, security headers and escaping.

In-process (the real app on SQLite and PostgreSQL, queueing injected as a recorder): with
``BAMSPROD_API_TOKEN`` set every change needs the bearer token (401 + ``WWW-Authenticate``
otherwise, nothing changed); reads stay open until ``BAMSPROD_READ_TOKEN`` is set too; the
events stream takes a short-lived, run-scoped ticket, never a token in its URL; tokens are
compared with ``hmac.compare_digest``; health tells strangers only up or down; every response
carries the security headers; templates escape user text; changes a foreign page could forge
are refused, and only trusted Host names are served.

Against a real ``bamsprod serve`` subprocess with both tokens set: the ``bamsprod`` client
commands send ``--token`` / ``$BAMSPROD_API_TOKEN``; in headless Chromium the dashboard asks for
the token once (``frontend/static/auth.js``), sends it with every call and on the event stream,
asks again when a change needs the stronger token, and every page renders (Plotly charts
included) with no Content-Security-Policy violation.
"""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_fixtures import (
    ROOT,
    make_settings,
    service_missing,
    settings_env,
    stop_process_group,
    wait_for,
)

from bamsprod.app import store
from bamsprod.app.api import csrf, security
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import dispose_engine, init_db, session_scope
from bamsprod.core.config import RunConfig

API = "write-token-7f3a"
READ = "read-token-42"
XSS = "<script>alert(1)</script>"
TINY = {"dataset": "digits", "model_args": {"width": 32}, "epochs": 3}


def _runs(session: Any) -> dict[str, int]:
    """A finished run with epochs (named ``XSS``) and a queued one; their ids."""
    done = store.create_run(session, RunConfig(name=XSS, tags=["<b>t</b>"], **TINY))
    store.claim_run(session, done.id, "w", "cpu")
    for epoch in (1, 2, 3):
        store.record_epoch(session, done.id, {
            "epoch": epoch, "train_loss": 2.0 / epoch, "train_acc": 0.3 * epoch,
            "test_loss": 2.1 / epoch, "test_acc": 0.28 * epoch, "quant_error": 0.1 / epoch,
            "quant_error_layers": {"fc1": 0.1}, "flip_rate": 0.01, "lr": 1e-3, "seconds": 0.1})
    store.finish_run(session, done.id, "succeeded")
    queued = store.create_run(session, RunConfig(name="queued", **TINY))
    return {"done": int(done.id), "queued": int(queued.id)}  # type: ignore[arg-type]


@pytest.fixture
def make_client(api_settings: Settings, enqueued: list[int]
                ) -> Iterator[Callable[..., tuple[TestClient, dict[str, int]]]]:
    """``make_client(api_token=..., read_token=...)``: the app with those tokens, seeded."""
    from bamsprod.app.web.main import create_app

    clients: list[TestClient] = []

    def make(**tokens: str | None) -> tuple[TestClient, dict[str, int]]:
        s = api_settings.model_copy(update=tokens)
        app = create_app(s, enqueue=enqueued.append, broker_check=lambda: True,
                         workers_seen=lambda: ["w"])
        client = TestClient(app, headers={"X-Requested-With": "test"})
        clients.append(client)
        with session_scope(s.database_url) as session:
            ids = _runs(session)
        return client, ids

    yield make
    for c in clients:
        c.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def writes(ids: dict[str, int]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request kwargs) of every state-changing call."""
    run = RunConfig(**TINY).model_dump(mode="json")
    sweep = {"name": "s", "base": TINY, "grid": {"seed": [0, 1]}}
    return [
        ("POST", "/api/runs", {"json": run}),
        ("POST", "/api/sweeps", {"json": sweep}),
        ("POST", f"/api/runs/{ids['queued']}/cancel", {}),
        ("POST", f"/api/runs/{ids['done']}/retry", {}),
        ("DELETE", f"/api/runs/{ids['done']}", {}),
    ]


def reads(ids: dict[str, int]) -> list[str]:
    done = ids["done"]
    return ["/api/runs", f"/api/runs/{done}", f"/api/runs/{done}/metrics",
            f"/api/runs/{done}/metrics?format=csv", "/api/sweeps", f"/api/compare?runs={done}"]


def assert_401(r: httpx.Response, sent: bool) -> None:
    assert r.status_code == 401, (r.request.url, r.status_code, r.text)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) is sent
    assert "Authorization: Bearer" in r.json()["detail"]


# ------------------------------------------------------------------ cross-site and Host


def test_a_change_a_foreign_page_could_forge_is_403_and_changes_nothing(make_client) -> None:
    client, ids = make_client()
    bare = TestClient(client.app)  # no X-Requested-With: what a cross-site form can send
    forged = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    before = client.get(f"/api/runs/{ids['done']}").json()
    for method, path, kw in writes(ids):
        for headers in (forged, {"Content-Type": "text/plain"}, {},
                        {"Content-Type": "application/x-www-form-urlencoded"}):
            r = bare.request(method, path, headers=headers, content=b"")
            assert r.status_code == 403, (method, path, headers, r.text)
        # A custom header or a JSON body is not enough from another site.
        r = bare.request(method, path, headers={"Origin": "http://evil.example",
                                                "X-Requested-With": "x"}, **kw)
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = client.request(method, path, headers={"Sec-Fetch-Site": "cross-site"}, **kw)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert "X-Requested-With" in bare.post(f"/api/runs/{ids['done']}/retry").json()["detail"]
    after = client.get(f"/api/runs/{ids['done']}").json()
    assert after == before and len(client.get(f"/api/runs/{ids['done']}/metrics").json()[
        "items"]) == 3  # retry wiped nothing
    assert client.get("/api/runs").json()["total"] == 2
    # Reads are not changes: a foreign Origin may read an open instance (CORS still hides it).
    assert bare.get("/api/runs", headers={"Origin": "https://evil.example"}).status_code == 200
    # Each way to show it is not a forged form: X-Requested-With, a JSON body, a bearer
    # header, the same origin (default port or not).
    queued = ids["queued"]
    assert bare.post(f"/api/runs/{queued}/cancel",
                     headers={"X-Requested-With": "fetch"}).status_code == 200
    assert bare.post(f"/api/runs/{queued}/cancel", json={}).status_code == 200
    assert bare.post(f"/api/runs/{queued}/cancel", headers=bearer("x")).status_code == 200
    for origin, host in (("http://testserver", "testserver"),
                         ("http://127.0.0.1:8000", "127.0.0.1:8000"),
                         ("https://localhost", "localhost:443")):
        r = bare.post(f"/api/runs/{queued}/cancel", json={},
                      headers={"Origin": origin, "Host": host})
        assert r.status_code == 200, (origin, r.text)
    r = bare.post(f"/api/runs/{queued}/cancel", json={}, headers={"Origin": "null"})
    assert r.status_code == 403


def test_only_trusted_host_names_are_served(make_client) -> None:
    client, ids = make_client()
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000", "testserver"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example", "attacker.localhost.example"):
        r = client.get("/api/runs", headers={"Host": host})
        assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY", host
        assert client.get("/", headers={"Host": host}).status_code == 400
    lab, _ = make_client(allowed_hosts=["lab.example.org", "*.lab.example"])
    assert lab.get("/api/runs", headers={"Host": "lab.example.org"}).status_code == 200
    assert lab.get("/api/runs", headers={"Host": "gpu1.lab.example:8000"}).status_code == 200
    assert lab.get("/api/runs", headers={"Host": "localhost"}).status_code == 400
    anyone, _ = make_client(allowed_hosts=["*"])
    assert anyone.get("/api/runs", headers={"Host": "whatever.example"}).status_code == 200


def test_settings_hosts_and_the_exposure_warning(monkeypatch) -> None:
    monkeypatch.setenv("BAMSPROD_ALLOWED_HOSTS", "lab.example, 127.0.0.1")
    assert Settings().allowed_hosts == ["lab.example", "127.0.0.1"]
    monkeypatch.setenv("BAMSPROD_ALLOWED_HOSTS", '["a.example"]')
    assert Settings().allowed_hosts == ["a.example"]
    monkeypatch.delenv("BAMSPROD_ALLOWED_HOSTS")
    assert "localhost" in Settings().allowed_hosts and "[::1]" in Settings().allowed_hosts
    open_ = Settings(api_token=None)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert csrf.exposure_warning(host, open_) is None
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        warning = csrf.exposure_warning(host, open_)
        assert warning and "BAMSPROD_API_TOKEN" in warning and host in warning
    assert csrf.exposure_warning("0.0.0.0", Settings(api_token="t0ken")) is None


# ----------------------------------------------------------------------------- API tokens


def test_no_tokens_by_default_everything_open(make_client, monkeypatch) -> None:
    for name in ("BAMSPROD_API_TOKEN", "BAMSPROD_READ_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().api_token is None and Settings().read_token is None
    monkeypatch.setenv("BAMSPROD_API_TOKEN", "  ")  # set but empty: still no token
    assert Settings().api_token is None
    assert "write" not in repr(Settings(api_token="write"))  # never printed in logs
    with pytest.raises(ValueError, match="printable ASCII"):
        Settings(api_token="tökén")  # it must fit in an HTTP header

    client, ids = make_client()
    for path in reads(ids):
        assert client.get(path).status_code == 200, path
    expected = [201, 201, 200, 200, 204]
    for (method, path, kw), code in zip(writes(ids), expected, strict=True):
        assert client.request(method, path, **kw).status_code == code, path


def test_api_token_guards_every_change_and_nothing_changes_without_it(
    make_client, enqueued: list[int]
) -> None:
    client, ids = make_client(api_token=API)
    before = client.get("/api/runs").json()
    for method, path, kw in writes(ids):
        assert_401(client.request(method, path, **kw), sent=False)
        assert_401(client.request(method, path, headers=bearer("wrong"), **kw), sent=True)
        assert_401(client.request(method, path, headers=bearer(API + "x"), **kw), sent=True)
        basic = {"Authorization": "Basic " + API}
        assert_401(client.request(method, path, headers=basic, **kw), sent=False)
        assert_401(client.request(method, f"{path}?token={API}", **kw), sent=False)
    assert client.get("/api/runs").json() == before and enqueued == []  # nothing happened
    # A token in a bad body is still checked first: no validation detail leaks out.
    assert_401(client.post("/api/runs", json={"epochs": "many"}), sent=False)

    for path in reads(ids):  # reads stay open
        assert client.get(path).status_code == 200, path
    assert client.get("/api/health").status_code == 200
    # A dry run changes nothing: open too.
    dry = client.post("/api/sweeps?dry_run=true", json=writes(ids)[1][2]["json"])
    assert dry.status_code == 200 and dry.json()["count"] == 2

    expected = [201, 201, 200, 200, 204]
    for (method, path, kw), code in zip(writes(ids), expected, strict=True):
        r = client.request(method, path, headers=bearer(API), **kw)
        assert r.status_code == code, (path, r.text)
    assert len(enqueued) == 4  # one run, two sweep runs, one retry


def test_read_token_guards_reads_and_the_event_stream_takes_a_ticket_not_the_token(
    make_client,
) -> None:
    client, ids = make_client(api_token=API, read_token=READ)
    for path in reads(ids):
        assert_401(client.get(path), sent=False)
        assert_401(client.get(path, headers=bearer("nope")), sent=True)
        assert client.get(path, headers=bearer(READ)).status_code == 200, path
        assert client.get(path, headers=bearer(API)).status_code == 200, path
    # A token is never taken from a URL, not even by the event stream.
    assert_401(client.get(f"/api/runs?token={READ}"), sent=False)
    done, queued = ids["done"], ids["queued"]
    events = f"/api/runs/{done}/events"
    assert_401(client.get(events), sent=False)
    assert_401(client.get(events, params={"token": READ}), sent=False)
    assert_401(client.post(f"{events}/ticket"), sent=False)
    ticket = client.post(f"{events}/ticket", headers=bearer(READ)).json()
    assert ticket["expires_in"] == 60 and READ not in ticket["ticket"]
    for auth in ({"params": {"ticket": ticket["ticket"]}}, {"headers": bearer(READ)},
                 {"headers": bearer(API)}):
        with client.stream("GET", events, **auth) as r:  # a finished run: the stream ends
            assert r.status_code == 200
            body = "".join(r.iter_text())
        assert body.count("event: epoch") == 3 and '"state":"succeeded"' in body
    # Scoped to its run, unforgeable, and short-lived.
    assert_401(client.get(f"/api/runs/{queued}/events", params=ticket), sent=True)
    forged = ticket["ticket"].replace(f"{done}.", f"{queued}.", 1)
    assert_401(client.get(f"/api/runs/{queued}/events", params={"ticket": forged}), sent=True)
    for bad in ("", "x", "1.2.3", ticket["ticket"] + "0", ticket["ticket"].upper()):
        assert_401(client.get(events, params={"ticket": bad}), sent=True)
    s = client.app.state.settings
    old = security.issue_ticket(s, done, now=time.time() - 61)
    assert_401(client.get(events, params={"ticket": old}), sent=True)
    assert security.ticket_valid(s, security.issue_ticket(s, done), done)
    assert not security.ticket_valid(s.model_copy(update={"ticket_secret": "other"}),
                                     security.issue_ticket(s, done), done)
    assert client.post("/api/runs/999999/events/ticket", headers=bearer(READ)).status_code == 404

    dry = writes(ids)[1][2]["json"]
    assert_401(client.post("/api/sweeps?dry_run=1", json=dry), sent=False)
    assert client.post("/api/sweeps?dry_run=1", json=dry, headers=bearer(READ)).status_code == 200
    for method, path, kw in writes(ids):  # the read token cannot change anything
        assert_401(client.request(method, path, headers=bearer(READ), **kw), sent=True)
    health = client.get("/api/health")  # probes need no token, and learn only up or down
    assert health.status_code == 200 and health.json() == {
        "status": "ok", "database": None, "broker": None, "worker": None, "workers": None,
        "workers_seen": None, "plugins": None}
    full = client.get("/api/health", headers=bearer(READ)).json()
    assert full["database"] == {"ok": True, "detail": None} and full["workers"] == ["w"]
    assert client.get("/api/health", headers=bearer("nope")).json()["database"] is None
    for page in ("/", f"/runs/{ids['done']}", "/static/common.js", "/static/auth.js"):
        assert client.get(page).status_code == 200, page  # pages hold no data: they ask
    # Nor does a run's page tell whether the run exists: the same answer either way.
    there, missing = client.get(f"/runs/{ids['done']}"), client.get("/runs/999999")
    assert there.status_code == missing.status_code == 200
    ids_at = re.compile(r"(Run |#|from=|runs=|runs/|run-|\"run_id\": )(\d+)")
    assert ids_at.sub(r"\1N", there.text) == ids_at.sub(r"\1N", missing.text)


def test_the_token_is_checked_before_the_body_is_read(make_client, enqueued: list[int]) -> None:
    client, ids = make_client(api_token=API)
    json_type = {"Content-Type": "application/json"}
    for path in ("/api/runs", "/api/sweeps"):  # (a dry run is a read: open here)
        for body in (b"{bad", b"", b"\xff\xfe"):
            assert_401(client.post(path, content=body, headers=json_type), sent=False)
            r = client.post(path, content=body, headers={**json_type, **bearer(API)})
            assert r.status_code == 422, (path, body, r.text)
    assert enqueued == []


def test_only_a_read_token_guards_writes_too(make_client) -> None:
    client, ids = make_client(read_token=READ)
    method, path, kw = writes(ids)[0]
    assert_401(client.request(method, path, **kw), sent=False)
    assert client.request(method, path, headers=bearer(READ), **kw).status_code == 201


def test_tokens_are_compared_with_compare_digest(make_client, monkeypatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    client, ids = make_client(api_token=API, read_token=READ)
    assert client.get("/api/runs", headers=bearer(READ)).status_code == 200
    # Both configured tokens are compared, whichever matches: timing tells nothing.
    assert sorted(compared) == sorted([(READ.encode(), READ.encode()),
                                       (READ.encode(), API.encode())])
    assert security.token_matches(API, None, API)
    assert not security.token_matches("", API) and not security.token_matches(None, API)
    assert not security.token_matches("ü" * 3, API)  # non-ASCII input: no TypeError


# ------------------------------------------------------------------- headers and escaping


def test_security_headers_on_every_response(make_client) -> None:
    client, ids = make_client(api_token=API)
    too_big = "x" * (client.app.state.settings.max_body_bytes + 1)
    answers = {
        "json": client.get("/api/runs"),
        "csv": client.get(f"/api/runs/{ids['done']}/metrics?format=csv"),
        "404": client.get("/api/runs/999999"),
        "422": client.get("/api/runs?limit=0"),
        "401": client.post("/api/runs", json={}),
        "413": client.post("/api/runs", content=too_big, headers=bearer(API)),
        "page": client.get("/"),
        "missing page": client.get("/runs/999999"),
        "static": client.get("/static/auth.js"),
        "openapi": client.get("/openapi.json"),
        "health": client.get("/api/health"),
    }
    for what, r in answers.items():
        h = r.headers
        assert h["x-content-type-options"] == "nosniff", what
        assert h["referrer-policy"] == "same-origin", what
        assert h["x-frame-options"] == "DENY", what
        csp = h["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert directives["script-src"] == "'self'", what  # no inline, no eval, no CDN
        assert directives["default-src"] == "'self'", what
        assert directives["frame-ancestors"] == "'none'", what
        assert "'unsafe-inline'" in directives["style-src"], what  # Plotly injects styles
    assert answers["413"].status_code == 413 and answers["401"].status_code == 401
    docs = client.get("/docs")  # Swagger UI from an installed package: no CDN, no inline code
    csp = docs.headers["content-security-policy"]
    assert "cdn" not in csp and "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]
    assert "worker-src 'self' blob:" in csp  # ReDoc's workers
    assert docs.headers["x-frame-options"] == "DENY"


def test_html_escapes_user_text(make_client) -> None:
    from bamsprod.app.web.pages import templates

    client, ids = make_client()
    for path in ("/", f"/runs/{ids['done']}", f"/compare?runs={ids['done']}", "/runs/new"):
        html = client.get(path).text
        assert XSS not in html and "<b>t</b>" not in html, path
    # The pages fill user text in with textContent (tests/test_browser.py and below); the
    # templates escape whatever they are given.
    html = templates.get_template("not_found.html").render(page="x", what=XSS)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# ------------------------------------------------------------------- real server, browser


@dataclass
class Server:
    url: str
    ids: dict[str, int]
    settings: Settings
    proc: subprocess.Popen


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``bamsprod serve`` (SQLite, embedded broker, no worker) with both tokens set."""
    import socket

    home = tmp_path_factory.mktemp("secure-home")
    s = make_settings(home, api_token=API, read_token=READ)
    s.ensure_dirs()
    init_db(s.database_url)
    with session_scope(s.database_url) as session:
        ids = _runs(session)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(home / "serve.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "serve", "--port", str(port)],
                            cwd=ROOT, env=settings_env(s), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (home / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "bamsprod serve")
        yield Server(url, ids, s, proc)
    finally:
        stop_process_group(proc)
        log.close()
        dispose_engine(s.database_url)


def bamsprod(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    return subprocess.run([sys.executable, "-m", "bamsprod", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120,
                          env={**base, "COLUMNS": "200", **(env or {})})


@pytest.mark.service
def test_cli_sends_the_token(token_server: Server) -> None:
    url = token_server.url
    submit = ["submit", "--url", url, "--dataset", "digits", "--epochs", "1", "--name", "cli"]
    p = bamsprod(*submit)
    assert p.returncode == 2 and "wants a token" in p.stderr
    p = bamsprod(*submit, env={"BAMSPROD_API_TOKEN": API})
    assert p.returncode == 0, p.stderr
    run_id = int(p.stdout.split()[1])
    p = bamsprod("runs", "--url", url, "--token", READ)
    assert p.returncode == 0 and "cli" in p.stdout, p.stderr
    assert bamsprod("cancel", str(run_id), "--url", url, "--token", READ).returncode == 2
    p = bamsprod("cancel", str(run_id), "--url", url, env={"BAMSPROD_API_TOKEN": API})
    assert p.returncode == 0 and "cancelled" in p.stdout, p.stderr


CHROMIUM = os.environ.get("BAMSPROD_CHROMIUM", "/usr/bin/chromium")
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (never ``playwright install``)."""
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", FileNotFoundError(CHROMIUM))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--headless=new"])
        try:
            yield b
        finally:
            b.close()


class PageWatch:
    """A page's dialogs, CSP violations and errors."""

    def __init__(self, page: Any, answers: list[str]) -> None:
        self.prompts: list[str] = []
        self.alerts: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        self.violations: list[str] = []
        self.page = page
        page.add_init_script(CSP_WATCH)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def on_dialog(d: Any) -> None:
            if d.type == "prompt":
                self.prompts.append(d.message)
                d.accept(answers.pop(0))
            elif d.type == "confirm":
                d.accept()
            else:
                self.alerts.append(d.message)
                d.dismiss()

        page.on("dialog", on_dialog)

    def collect(self) -> None:
        """Keep the current page's violations (call before leaving it)."""
        self.violations += self.page.evaluate("() => window.__csp || []")

    def csp_violations(self) -> list[str]:
        self.collect()
        logged = [m for m in self.console
                  if "Content Security Policy" in m or "Refused to" in m]
        return [*self.violations, *logged]


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_asks_for_the_token_once_and_sends_it(browser: Any,
                                                        token_server: Server) -> None:
    ids = token_server.ids
    context = browser.new_context(base_url=token_server.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    watch = PageWatch(page, answers=[READ, API])
    # Playwright's sync API hands the page's events (dialogs, requests) to their handlers only
    # while a Playwright call runs: every wait below is one (wait_for_function, expect_request,
    # wait_for_timeout), never a sleep or a poll of Python state, which left the token prompt
    # unanswered (the flaky timeout after the cancel click).
    page.goto("/")
    page.locator(f'#runs-body tr[data-run-id="{ids["done"]}"]').wait_for()
    assert len(watch.prompts) == 1  # asked once, the list loaded with the read token
    page.wait_for_timeout(2500)  # the table refreshes every 2 s: no new question
    assert len(watch.prompts) == 1
    watch.collect()

    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    # Fetches use the stored token, the stream a ticket.
    with page.expect_request(lambda r: "/events?" in r.url and "ticket=" in r.url):
        page.goto(f"/runs/{ids['queued']}")
    page.wait_for_function("() => document.getElementById('run-name').textContent === 'queued'")
    assert not [u for u in urls if "token" in u], urls
    page.click("#cancel")  # a change: the read token is not enough, so it asks once more
    page.wait_for_function(
        "() => document.getElementById('run-state').textContent === 'cancelled'")
    assert len(watch.prompts) == 2 and "did not accept" in watch.prompts[1]
    with httpx.Client(base_url=token_server.url, headers=bearer(READ)) as c:
        wait_for(lambda: c.get(f"/api/runs/{ids['queued']}").json()["state"] == "cancelled",
                 20, "the cancel to go through with the api token")
    assert page.evaluate("() => localStorage.getItem('bamsprod.token')") == API
    assert watch.csp_violations() == [] and watch.errors == [] and watch.alerts == []
    context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_pages_render_under_the_csp_without_violations(browser: Any,
                                                       token_server: Server) -> None:
    done = token_server.ids["done"]
    context = browser.new_context(base_url=token_server.url)
    context.set_default_timeout(20_000)
    context.add_init_script(f"localStorage.setItem('bamsprod.token', {API!r});")
    page = context.new_page()
    watch = PageWatch(page, answers=[])
    plotted = "(id) => { const d = document.getElementById(id); return !!(d && d.data " \
              "&& d.data.length && d.querySelector('.main-svg')); }"

    page.goto("/")
    page.locator(f'#runs-body tr[data-run-id="{done}"] .run-name').wait_for()
    assert page.locator(f'#runs-body tr[data-run-id="{done}"] .run-name').text_content() == XSS
    watch.collect()

    page.goto(f"/runs/{done}")  # Plotly charts of a finished run
    page.wait_for_function(plotted, arg="chart-acc")
    assert page.locator("#run-name").text_content() == XSS
    assert page.evaluate("() => document.getElementById('chart-acc').data[1].y.length") == 3
    watch.collect()

    page.goto(f"/compare?runs={done}")
    page.wait_for_selector("body[data-rendered='1']")
    page.wait_for_function(plotted, arg="chart-acc")
    watch.collect()

    for path in ("/runs/new", "/convex"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        watch.collect()
    assert watch.prompts == [] and watch.alerts == []  # the script never ran
    assert watch.csp_violations() == [], watch.console
    assert watch.errors == []
    context.close()


@pytest.mark.parametrize("name", ["Host", "Authorization", "Origin"])
def test_a_repeated_host_authorization_or_origin_is_a_400(make_client, name: str) -> None:
    client, _ = make_client(api_token=API)
    values = {"Host": ("testserver", "evil.example"), "Authorization": (f"Bearer {API}",
              "Bearer other"), "Origin": ("http://testserver", "http://evil.example")}[name]
    r = client.get("/api/runs", headers=[(name, v) for v in values])
    assert r.status_code == 400 and name.lower() in r.json()["detail"], r.text
    assert r.headers["x-frame-options"] == "DENY"  # security headers on it too
    assert client.get("/api/runs", headers=[(name, values[0])]).status_code == 200


@pytest.mark.browser
@pytest.mark.slow
def test_invisible_formatting_in_names_and_tags_is_shown_escaped(browser: Any,
                                                                token_server: Server) -> None:
    """A bidi override (U+202E), a BOM and a line separator in a run's name and tags reach the
    page as visible escapes, in the runs table and on the run's page."""
    name = "report\u202etxt.exe\ufeff\u2028x"
    with httpx.Client(base_url=token_server.url, headers=bearer(API)) as c:
        run_id = c.post("/api/runs", json={"name": name, "tags": ["t\u202eag"]},
                        headers={"X-Requested-With": "t"}).json()["id"]
    context = browser.new_context(base_url=token_server.url)
    context.set_default_timeout(20_000)
    context.add_init_script(f"localStorage.setItem('bamsprod.token', {API!r});")
    page = context.new_page()
    try:
        page.goto("/")
        cell = page.locator(f'#runs-body tr[data-run-id="{run_id}"] .run-name')
        cell.wait_for()
        want = "report\\u202etxt.exe\\ufeff\\u2028x"
        assert cell.text_content() == want
        row = page.locator(f'#runs-body tr[data-run-id="{run_id}"]').text_content()
        assert "\u202e" not in row and "t\\u202eag" in row
        page.goto(f"/runs/{run_id}")
        page.wait_for_function(f"() => document.getElementById('run-name').textContent === "
                               f"{want!r}")
        assert "\u202e" not in page.title()
    finally:
        context.close()
