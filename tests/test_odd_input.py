"""Odd text and numbers cannot poison storage (SQLite and PostgreSQL, the real app).

Ordinary-but-odd Unicode goes in through every writable field and comes back unchanged from
every listing; control characters, NUL, lone surrogates and non-finite or out-of-range numbers
are a 422 naming the field, with nothing stored; a row stored before this validation existed
(a lone surrogate, NaN in the config: possible on SQLite only) breaks no listing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_api import BODY, submit, train

from bamsprod.app.store.engine import get_engine
from bamsprod.app.store.tables import Run

# Every one is legal text: markup, quotes, SQL wildcards, RTL, combining marks, emoji, a
# zero-width space, a BOM, a private-use and the last code point.
ODD = [
    "[/bold] [link=https://x.example]hidden[/link]",
    "<script>alert('x')</script> \"q\" 'q' `q`",
    "100% _under_ back\\slash",
    "עברית مرحبا e\u0301 \u200b\ufeff",
    "🧪🦀 \ue000 \U0010fffd",
]
BAD_TEXT = ["a\x00b", "a\udc80b", "\x1b[31mred", "two\nlines", "del\x7f", "c1\x85"]
# JSON that Python's parser accepts but no finite number is (1e400 overflows to infinity).
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


def post_raw(client: TestClient, path: str, text: str) -> Any:
    return client.post(path, content=text, headers={"Content-Type": "application/json"})


def loc(r: Any) -> list[Any]:
    assert r.status_code == 422, (r.status_code, r.text)
    return r.json()["detail"][0]["loc"]


def counts(client: TestClient) -> tuple[int, int]:
    return client.get("/api/runs").json()["total"], client.get("/api/sweeps").json()["total"]


def read_everything(client: TestClient) -> dict[str, Any]:
    """Every listing and read; each must answer 200 with JSON (CSV for the exports)."""
    runs = client.get("/api/runs?limit=500")
    assert runs.status_code == 200, runs.text
    ids = [r["id"] for r in runs.json()["items"]]
    sweeps = client.get("/api/sweeps")
    assert sweeps.status_code == 200, sweeps.text
    for sweep in sweeps.json()["items"]:
        assert client.get(f"/api/sweeps/{sweep['id']}").status_code == 200
    for run_id in ids:
        for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/metrics",
                     f"/api/runs/{run_id}/metrics?format=csv"):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
    joined = ",".join(map(str, ids))
    for path in (f"/api/compare?runs={joined}", f"/api/compare?runs={joined}&format=csv",
                 f"/api/compare?runs={joined}&format=csv&table=runs"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
    return {"runs": runs.json()["items"], "sweeps": sweeps.json()["items"]}


def test_odd_text_round_trips_through_every_field_and_listing(client: TestClient,
                                                              db_url: str) -> None:
    made = []
    for i, text in enumerate(ODD):
        made.append(submit(client, name=text, tags=[text[:64], f"t{i}"],
                           data_dir=f"/data/{text}"))
    r = client.post("/api/sweeps", json={"name": ODD[0], "base": {"name": ODD[1], "tags": [ODD[3]],
                                                                  "dataset": "digits"},
                                         "grid": {"seed": [0, 1]}})
    assert r.status_code == 201, r.text
    train(db_url, made[0]["id"], [0.5, 0.6])

    seen = read_everything(client)
    by_id = {r["id"]: r for r in seen["runs"]}
    for text, run in zip(ODD, made, strict=True):
        stored = by_id[run["id"]]
        assert (stored["name"], stored["tags"][0]) == (text, text[:64])
        assert stored["config"]["data_dir"] == f"/data/{text}"
        # Filters find them by the same text (SQL wildcards in it are literal).
        found = client.get("/api/runs", params={"q": text}).json()["items"]
        assert run["id"] in [f["id"] for f in found], text
        found = client.get("/api/runs", params={"tag": text[:64]}).json()["items"]
        assert run["id"] in [f["id"] for f in found], text
    assert seen["sweeps"][0]["name"] == ODD[0]
    compared = client.get(f"/api/compare?runs={made[0]['id']}").json()
    assert compared["runs"][0]["name"] == ODD[0]


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_control_characters_and_lone_surrogates_are_422_and_nothing_is_stored(
    client: TestClient, enqueued: list[int], bad: str
) -> None:
    before = counts(client)
    # json.dumps writes a lone surrogate as the escape \\udc80, which JSON parsers accept.
    cases = [
        ("/api/runs", {**BODY, "name": bad}, ["body", "name"]),
        ("/api/runs", {**BODY, "tags": ["ok", bad]}, ["body", "tags", 1]),
        ("/api/runs", {**BODY, "data_dir": f"/data/{bad}"}, ["body", "data_dir"]),
        ("/api/sweeps", {"name": bad, "grid": {"seed": [0]}}, ["body", "name"]),
        ("/api/sweeps", {"base": {"name": bad}, "grid": {"seed": [0]}}, ["body", "base", "name"]),
        ("/api/sweeps", {"grid": {"tags": [[bad]]}}, ["body", "grid", "tags"]),
    ]
    for path, body, where in cases:
        r = post_raw(client, path, json.dumps(body))
        assert loc(r) == where, (path, body)
        msg = r.json()["detail"][0]["msg"]
        assert "contains" in msg or "unicode" in msg, msg
    assert counts(client) == before and enqueued == []


@pytest.mark.parametrize("bad", BAD_TEXT[:1] + BAD_TEXT[2:])  # a URL cannot carry a surrogate
def test_control_characters_in_list_filters_are_422(client: TestClient, bad: str) -> None:
    submit(client)
    for name in ("optimizer", "model", "dataset", "tag", "config_hash", "q"):
        assert loc(client.get("/api/runs", params={name: bad})) == ["query", name]
    r = client.get("/api/compare", params={"runs": "1", "baseline": bad})
    assert loc(r) == ["query", "baseline"]


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, enqueued: list[int],
                                                     number: str) -> None:
    before = counts(client)
    run_cases = {
        "lr": ["body", "lr"],
        "epochs": ["body", "epochs"],
        "seed": ["body", "seed"],
        "batch_size": ["body", "batch_size"],
    }
    for field, where in run_cases.items():
        r = post_raw(client, "/api/runs", f'{{"dataset": "digits", "{field}": {number}}}')
        assert loc(r) == where, field
    r = post_raw(client, "/api/runs", f'{{"hparams": {{"kappa": {number}}}}}')
    assert loc(r)[:3] == ["body", "hparams", "kappa"]
    r = post_raw(client, "/api/runs", f'{{"model_args": {{"width": {number}}}}}')
    assert loc(r)[:3] == ["body", "model_args", "width"]
    r = post_raw(client, "/api/sweeps", f'{{"grid": {{"lr": [0.1, {number}]}}}}')
    assert loc(r) == ["body", "grid", "lr"]
    r = post_raw(client, "/api/sweeps", f'{{"grid": {{"hparams.kappa": [{number}]}}}}')
    assert loc(r) == ["body", "grid", "hparams.kappa"]
    r = post_raw(client, "/api/sweeps", f'{{"seeds": [{number}]}}')
    assert loc(r)[:3] == ["body", "seeds", 0]
    r = post_raw(client, "/api/sweeps", f'{{"n_seeds": 2, "base": {{"seed": {number}}}}}')
    assert loc(r) == ["body", "base", "seed"]
    for query in ("target", "baseline"):
        r = client.get("/api/compare", params={"runs": "1", query: number.lower()})
        assert r.status_code in (404, 422), r.text  # baseline is text: no such run here
    assert loc(client.get("/api/compare", params={"runs": "1", "target": "nan"})) == [
        "query", "target"]
    assert counts(client) == before and enqueued == []


def test_out_of_range_numbers_are_422_naming_the_field(client: TestClient) -> None:
    huge = "1" + "0" * 400
    assert loc(post_raw(client, "/api/runs", f'{{"seed": {huge}}}')) == ["body", "seed"]
    r = post_raw(client, "/api/runs", f'{{"hparams": {{"kappa": {huge}}}}}')
    assert loc(r) == ["body", "hparams", "kappa"] and "kappa" in r.json()["detail"][0]["msg"]
    r = post_raw(client, "/api/runs", f'{{"model_args": {{"depth": {huge}}}}}')
    assert loc(r) == ["body", "model_args", "depth"] and "depth" in r.json()["detail"][0]["msg"]
    assert loc(post_raw(client, "/api/sweeps", f'{{"seeds": [{huge}]}}'))[:3] == [
        "body", "seeds", 0]
    r = post_raw(client, "/api/sweeps", '{"n_seeds": 2, "base": {"seed": "abc"}}')
    assert loc(r) == ["body", "base", "seed"]
    assert loc(client.post("/api/runs", json={"batch_size": 1})) == ["body", "batch_size"]
    assert loc(client.post("/api/runs", json={"data_dir": "data/cifar"})) == ["body", "data_dir"]
    assert submit(client, data_dir="~/data")["config"]["data_dir"] == "~/data"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL's JSONB rejects both
def test_a_bad_row_stored_earlier_breaks_no_listing(client: TestClient, db_url: str) -> None:
    """Before validation, a lone surrogate in ``tags`` or NaN in the config could be stored
    (on SQLite: its JSON columns accept both); every read must still answer."""
    good, bad = submit(client, name="good"), submit(client, name="bad")
    train(db_url, bad["id"], [0.5])
    r = client.post("/api/sweeps", json={"name": "s", "grid": {"seed": [0]}})
    sweep_id = r.json()["sweep"]["id"]
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.update(Run).where(Run.id.in_([bad["id"], r.json()["run_ids"][0]]))
                     .values(tags=["x\udc80"], config={**bad["config"], "lr": float("nan")}))
        conn.execute(sa.text("UPDATE sweep SET definition = :s WHERE id = :i"),
                     {"s": '{"name": "\\udc80", "x": NaN}', "i": sweep_id})
    seen = read_everything(client)
    by_id = {r["id"]: r for r in seen["runs"]}
    assert by_id[good["id"]]["name"] == "good"
    assert by_id[bad["id"]]["tags"] == ["x\\udc80"] and by_id[bad["id"]]["config"]["lr"] is None
    assert client.get(f"/api/sweeps/{sweep_id}").json()["definition"]["name"] == "\\udc80"
    with client.stream("GET", f"/api/runs/{bad['id']}/events") as events:
        text = "".join(events.iter_text())
    assert '"x\\\\udc80"' in text and "NaN" not in text
    assert client.post(f"/api/runs/{r.json()['run_ids'][0]}/cancel").status_code == 200
    assert client.delete(f"/api/sweeps/{sweep_id}").status_code == 204
    assert client.delete(f"/api/runs/{bad['id']}").status_code == 204
