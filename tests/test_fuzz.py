"""Property-based fuzzing of the OpenAPI schema (schemathesis) against the real ASGI app.

Setup without fakes: the real app from ``create_app`` on each real, migrated database (SQLite
and PostgreSQL), seeded with runs, epochs and a sweep so reads find rows; queueing is
injected as a recorder (dependency injection, the shipped queue is not mocked: the service
tests exercise it). Every operation gets positive (schema-valid) and negative (schema-violating)
inputs; each answer must be no 5xx and must match its documented status code, content type and
response schema. ``GET /api/runs/{id}/events`` streams forever for a running run, so it is left
out (tests/test_sse.py covers it), and so is ``GET /api/convex`` (seconds of CPU per call; its
query has bounds the dashboard tests cover).

Then, explicitly, the limits the fuzzing found missing or that it cannot know (the server's own
``max_epochs`` / ``max_sweep_runs``): ids beyond SQL integers, unbounded offsets and cursors,
non-ASCII digits, oversize bodies: each a 422 naming the field (or a 413), never a 500.

Last, what schema-driven generation never produces (JSON Schema numbers are finite, and
hypothesis leaves out surrogates): NaN, ±Infinity, 1e400 and 400-digit integers as raw JSON
tokens, and text with NUL, control characters and lone surrogates, in every field of a run, a
sweep and the list filters, on both back ends: a 201 or a 422 naming the field, never a 500,
nothing stored when refused, and every listing still answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

EXCLUDED = {"GET /api/runs/{run_id}/events", "GET /api/convex"}
OPERATIONS = [
    "POST /api/runs",
    "GET /api/runs",
    "GET /api/runs/{run_id}",
    "DELETE /api/runs/{run_id}",
    "POST /api/runs/{run_id}/cancel",
    "POST /api/runs/{run_id}/retry",
    "POST /api/runs/{run_id}/archive",
    "POST /api/runs/{run_id}/unarchive",
    "GET /api/runs/{run_id}/metrics",
    "GET /api/runs/{run_id}/evals",
    "POST /api/runs/{run_id}/events/ticket",
    "POST /api/sweeps",
    "GET /api/sweeps",
    "GET /api/sweeps/{sweep_id}",
    "POST /api/sweeps/{sweep_id}/cancel",
    "DELETE /api/sweeps/{sweep_id}",
    "GET /api/compare",
    "GET /api/health",
    "GET /api/schema/options",
]
# Nothing to make invalid: no parameters and no body.
NO_INPUTS = {"GET /api/health", "GET /api/schema/options"}
# Per operation and mode; the whole module stays well under a minute on two cores.
MAX_EXAMPLES = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _seed(url: str) -> None:
    """Three runs (finished with epochs, running, queued) and a sweep of two."""
    from bamsprod.app import store
    from bamsprod.app.store.engine import session_scope
    from bamsprod.core.config import RunConfig

    base = {"dataset": "digits", "model_args": {"width": 32}, "epochs": 3}
    with session_scope(url) as s:
        done = store.create_run(s, RunConfig(name="done", **base))
        store.claim_run(s, done.id, "w", "cpu")
        store.set_environment(s, done.id, {"torch": "2.13.0", "python": "3.11.7",
                                           "bamsprod": {"version": "0.1.0", "commit": None},
                                           "device_name": "cpu", "threads": 1})
        for epoch in (1, 2, 3):
            point = {"step": 10 * epoch, "epoch": float(epoch), "train_seconds": 0.5 * epoch,
                     "val_loss": 1.0, "val_acc": 0.25 * epoch, "eval_seconds": 0.01}
            store.record_epoch(s, done.id, {"epoch": epoch, "train_loss": 1.0 / epoch,
                                            "test_acc": 0.3 * epoch, "quant_error": 0.1,
                                            "quant_error_layers": {"fc1": 0.1},
                                            "evals": [point]})
        store.finish_run(s, done.id, "succeeded")
        running = store.create_run(s, RunConfig(name="running", optimizer="adam", **base))
        store.claim_run(s, running.id, "w", "cpu")
        store.create_run(s, RunConfig(name="queued", **base))
        store.create_sweep(s, "sweep", {"grid": {"seed": [0, 1]}},
                           [RunConfig(seed=i, **base) for i in (0, 1)])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The schema of the real app on each back end's session database, emptied and seeded."""
    from conftest import _empty_tables

    from bamsprod.app.settings import Settings
    from bamsprod.app.web.main import create_app

    fixture = "sqlite_session_url" if request.param == "sqlite" else "pg_session_url"
    url = request.getfixturevalue(fixture)
    _empty_tables(url)
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    settings_ = Settings(home=tmp / "home", database_url=url, broker_url="memory://",
                         max_sweep_runs=20)
    enqueued: list[int] = []
    app = create_app(settings_, enqueue=enqueued.append, broker_check=lambda: True,
                     workers_seen=lambda: ["fuzz-worker"])
    _seed(url)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS) | EXCLUDED, "a new endpoint: add it to OPERATIONS"


CASES = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and label in NO_INPUTS)
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_server_error_and_schema_conformance(api_schema: Any, label: str,
                                                mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, headers={"X-Requested-With": "fuzz"})

    check()


# ------------------------------------------------------------------- explicit bad inputs


@pytest.fixture
def strict_client(api_settings: Any, enqueued: list[int]) -> Iterator[Any]:
    """The app with low limits: at most 10 epochs a run and 4 runs a sweep."""
    from fastapi.testclient import TestClient

    from bamsprod.app.web.main import create_app

    s = api_settings.model_copy(update={"max_epochs": 10, "max_sweep_runs": 4})
    with TestClient(create_app(s, enqueue=enqueued.append, broker_check=lambda: True,
                               workers_seen=lambda: []),
                    headers={"X-Requested-With": "test"}) as client:
        yield client


def loc_of(r: Any) -> list[Any]:
    assert r.status_code == 422, (r.status_code, r.text)
    return r.json()["detail"][0]["loc"]


def test_out_of_range_inputs_are_422_naming_the_field(strict_client: Any,
                                                      enqueued: list[int]) -> None:
    c = strict_client
    big = str(2**63)
    for path in (f"/api/runs/{big}", f"/api/runs/{big}/metrics", "/api/runs/0",
                 f"/api/sweeps/{big}"):
        assert loc_of(c.get(path))[0] == "path", path
    assert loc_of(c.post(f"/api/runs/{big}/cancel")) == ["path", "run_id"]
    assert loc_of(c.delete("/api/runs/-1")) == ["path", "run_id"]
    assert loc_of(c.get(f"/api/runs?offset={big}")) == ["query", "offset"]
    assert loc_of(c.get(f"/api/runs?sweep={big}")) == ["query", "sweep"]
    assert loc_of(c.get("/api/runs?state=done")) == ["query", "state"]
    assert loc_of(c.get("/api/runs/1/metrics?after=-2")) == ["query", "after"]
    assert loc_of(c.get(f"/api/runs/1/metrics?after={big}")) == ["query", "after"]
    assert loc_of(c.get(f"/api/runs/1/events?after={big}")) == ["query", "after"]
    for bad in ("abc", big, "1e3", "²", "--5", "-2"):
        r = c.get("/api/runs/1/events", headers={"Last-Event-ID": bad.encode()})
        assert loc_of(r) == ["header", "last-event-id"], bad
    for runs in ("1,²", "1,x", f"1,{big}", "0", "9" * 5000):
        assert loc_of(c.get(f"/api/compare?runs={runs}")) == ["query", "runs"], runs[:20]
    assert loc_of(c.get("/api/compare?runs=1&group_by=__class__")) == ["query", "group_by"]
    assert loc_of(c.get("/api/compare?runs=1&target=1.5")) == ["query", "target"]
    assert loc_of(c.get("/api/compare?runs=1&target=0")) == ["query", "target"]

    run = {"dataset": "digits", "epochs": 11}
    assert loc_of(c.post("/api/runs", json=run)) == ["body", "epochs"]  # the server's limit
    assert loc_of(c.post("/api/runs", json={**run, "epochs": 1001})) == ["body", "epochs"]
    assert loc_of(c.post("/api/runs", json={"name": "x" * 201})) == ["body", "name"]
    assert loc_of(c.post("/api/runs", json={"optimizer": "adamw"})) == ["body", "optimizer"]
    assert loc_of(c.post("/api/runs", json={"lr": -1})) == ["body", "lr"]
    assert loc_of(c.post("/api/runs", json={"nope": 1})) == ["body", "nope"]
    sweep = {"base": {"dataset": "digits", "epochs": 2}, "grid": {"epochs": [2, 20]}}
    assert loc_of(c.post("/api/sweeps", json=sweep)) == ["body", "grid", "epochs"]
    sweep = {"base": {"dataset": "digits", "epochs": 20}, "grid": {"seed": [0, 1]}}
    assert loc_of(c.post("/api/sweeps", json=sweep)) == ["body", "base", "epochs"]
    sweep = {"base": {"dataset": "digits"}, "grid": {"seed": list(range(5))}}
    assert loc_of(c.post("/api/sweeps", json=sweep)) == ["body", "grid"]  # 5 runs > 4
    r = c.post("/api/runs", content=b"{" + b" " * 1_000_001 + b"}",
               headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert enqueued == []  # nothing was queued by any of it
    assert c.post("/api/runs", json={**run, "epochs": 10}).status_code == 201


# ------------------------------------------------ non-finite numbers, odd code points, NUL

RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "-0.0",
               "1e-400", "4.9e-324", "2147483648", "-1"]
ODD_TEXT = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["\x00", "a\x00", "\udc80", "\ud83e", "\x1b[2J", "\r\n", "\u2028", "\ufeff", "\U0010ffff",
     "[/bold]", "%", "_", "\\"]
)
# Where an odd value goes: a run config field (top level or nested), as a string or a number.
RUN_PATHS = ["name", "tags.0", "data_dir", "model", "dataset", "optimizer", "scheduler",
             "device", "lr", "epochs", "batch_size", "seed", "train_subset", "test_subset",
             "hparams.kappa", "hparams.beta1", "model_args.width", "model_args.scale"]
SENTINEL = "__odd_value__"


def raw_json(body: dict[str, Any], path: str, token: str) -> str:
    """``body`` as JSON text with the raw ``token`` at ``path`` (``a.b`` or ``tags.0``)."""
    data = json.loads(json.dumps(body))
    head, _, rest = path.partition(".")
    if rest == "0":
        data[head] = [SENTINEL]
    elif rest:
        data.setdefault(head, {})[rest] = SENTINEL
    else:
        data[head] = SENTINEL
    return json.dumps(data).replace(json.dumps(SENTINEL), token)


odd_token = st.sampled_from(RAW_NUMBERS) | ODD_TEXT.map(json.dumps)


def _total(client: Any, what: str) -> int:
    r = client.get(f"/api/{what}")
    assert r.status_code == 200, r.text
    return r.json()["total"]


def _post(client: Any, path: str, text: str) -> Any:
    r = client.post(path, content=text, headers={"Content-Type": "application/json"})
    assert r.status_code in (201, 422), (r.status_code, r.text, text)
    return r


ODD_SETTINGS = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))


def test_odd_values_in_runs_and_sweeps_are_stored_whole_or_refused(client: Any) -> None:
    @ODD_SETTINGS
    @given(path=st.sampled_from(RUN_PATHS), token=odd_token)
    def check(path: str, token: str) -> None:
        base = {"dataset": "digits", "epochs": 1}
        before = _total(client, "runs"), _total(client, "sweeps")
        r = _post(client, "/api/runs", raw_json(base, path, token))
        head = path.partition(".")[0]
        if r.status_code == 422:
            assert r.json()["detail"][0]["loc"][:2] == ["body", head], r.text
        sweep = {"name": "s", "base": base, "grid": {"seed": [0]}}
        s = _post(client, "/api/sweeps", raw_json(sweep, f"base.{head}", token)
                  if "." not in path else raw_json(sweep, "name", token))
        grid = _post(client, "/api/sweeps", raw_json({"base": base, "grid": {head: [1]}},
                                                     f"grid.{head}", f"[{token}]"))
        added = [x.status_code == 201 for x in (r, s, grid)]
        after = _total(client, "runs"), _total(client, "sweeps")
        assert after == (before[0] + sum(added), before[1] + sum(added[1:])), (path, token)
        for listing in ("/api/runs?limit=500", "/api/sweeps?limit=500"):
            assert client.get(listing).status_code == 200

    check()


def test_odd_text_in_list_filters_is_200_or_422(client: Any) -> None:
    # A URL carries UTF-8: a lone surrogate cannot be sent, so those are left out here.
    url_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

    @ODD_SETTINGS
    @given(name=st.sampled_from(["optimizer", "model", "dataset", "tag", "config_hash", "q"]),
           value=url_text | st.sampled_from(["\x00", "a\x00b", "\x1b", "%", "_"]))
    def check(name: str, value: str) -> None:
        r = client.get("/api/runs", params={name: value})
        assert r.status_code in (200, 422), (r.status_code, r.text)
        if r.status_code == 422:
            assert r.json()["detail"][0]["loc"] == ["query", name]
        r = client.get("/api/compare", params={"runs": "1", "baseline": value})
        assert r.status_code in (404, 422), (r.status_code, r.text)

    check()
