"""GET /api/compare at scale, on SQLite and PostgreSQL: the chart-shaped answer, ETag / 304 for
finished comparisons (and their invalidation on retry and delete), and gzip (never on SSE)."""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient
from test_api import submit, train

GZIP = {"Accept-Encoding": "gzip"}


def sweep_of(client: TestClient, db_url: str, n_seeds: int = 2, epochs: int = 3) -> list[int]:
    """A finished sweep: Adam and BAMSProd x ``n_seeds`` seeds; returns the run ids."""
    out = client.post(
        "/api/sweeps",
        json={"base": {"epochs": epochs}, "grid": {"optimizer": ["adam", "bamsprod"]},
              "seeds": list(range(n_seeds))},
    ).json()
    for k, rid in enumerate(out["run_ids"]):
        train(db_url, rid, [0.5 + 0.1 * k / n_seeds + 0.01 * e for e in range(epochs)])
    return out["run_ids"]


def test_groups_are_columnar_and_runs_only_when_asked(client: TestClient, db_url: str) -> None:
    ids = sweep_of(client, db_url, epochs=4)
    q = f"/api/compare?runs={','.join(map(str, ids))}&group_by=optimizer"
    res = client.get(q).json()
    adam = res["groups"][0]["series"]
    assert adam["epoch"] == [1, 2, 3, 4] and adam["n"] == [2] * 4
    assert len(adam["mean"]["test_acc"]) == 4 and len(adam["std"]["train_loss"]) == 4
    assert [r["id"] for r in res["runs"]] == ids and all(r["series"] is None for r in res["runs"])
    full = client.get(q + "&include=runs").json()
    assert full["groups"] == res["groups"]
    assert full["runs"][0]["series"]["epoch"] == [1, 2, 3, 4]
    assert full["runs"][0]["series"]["test_acc"][0] == 0.5
    x_time = client.get(q + "&include=runs&x=time").json()
    assert x_time["runs"][0]["series"]["x"] == [0.25, 0.5, 0.75, 1.0]  # cumulative seconds


def test_finished_comparison_etag_304_and_invalidation(client: TestClient, db_url: str) -> None:
    ids = sweep_of(client, db_url)
    sweep = client.get(f"/api/runs/{ids[0]}").json()["sweep_id"]
    q = f"/api/compare?sweep={sweep}&group_by=optimizer"
    first = client.get(q)
    tag = first.headers["etag"]
    assert first.status_code == 200 and tag.startswith('"')
    again = client.get(q, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert client.get(q).json() == first.json()  # the cached body is the same answer
    # Another query of the same runs has its own tag.
    assert client.get(q + "&baseline=bamsprod").headers["etag"] != tag

    # Retry: the run is queued again, so the comparison is live: no tag, a full answer.
    assert client.post(f"/api/runs/{ids[0]}/retry").status_code == 200
    live = client.get(q, headers={"If-None-Match": tag})
    assert live.status_code == 200 and "etag" not in live.headers
    assert [r["state"] for r in live.json()["runs"]][0] == "queued"
    # Finished again (different epochs): a new tag, and the old one no longer matches.
    train(db_url, ids[0], [0.9, 0.9])
    after = client.get(q, headers={"If-None-Match": tag})
    assert after.status_code == 200 and after.headers["etag"] not in (tag, None)
    assert after.json()["groups"][0]["series"]["n"] == [2, 2, 1]

    # Delete: the sweep has one run fewer, so the tag changes and the answer shows it.
    tag = after.headers["etag"]
    assert client.delete(f"/api/runs/{ids[1]}").status_code == 204
    gone = client.get(q, headers={"If-None-Match": tag})
    assert gone.status_code == 200 and gone.headers["etag"] != tag
    assert [r["id"] for r in gone.json()["runs"]] == [ids[0], *ids[2:]]
    assert client.get(f"/api/compare?runs={ids[1]}").status_code == 404


def test_running_comparison_has_no_etag(client: TestClient, db_url: str) -> None:
    done, live = submit(client), submit(client, seed=1)
    train(db_url, done["id"], [0.5])
    train(db_url, live["id"], [0.5], state="running")
    r = client.get(f"/api/compare?runs={done['id']},{live['id']}")
    assert r.status_code == 200 and "etag" not in r.headers


def test_json_and_csv_are_gzipped_and_sse_never_is(client: TestClient, db_url: str) -> None:
    ids = sweep_of(client, db_url, epochs=6)
    q = f"/api/compare?runs={','.join(map(str, ids))}&group_by=optimizer&include=runs"
    r = client.get(q, headers=GZIP)
    assert r.headers["content-encoding"] == "gzip" and r.json()["groups"]
    r = client.get(q + "&format=csv&table=runs", headers=GZIP)
    assert r.headers["content-encoding"] == "gzip" and r.text.startswith("run_id,")
    with client.stream("GET", f"/api/runs/{ids[0]}/events", headers=GZIP) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in s.headers
        raw = b"".join(s.iter_raw())
    assert b"event: epoch" in raw and b"event: state" in raw  # plain text, not gzip bytes
    assert not raw.startswith(gzip.compress(b"")[:2])


def test_an_old_run_compares_with_a_new_one_on_val_acc(client: TestClient, db_url: str) -> None:
    """A run stored before evaluation points (its epochs' val_acc only) and one with four
    points an epoch, through the database: each is timed from what it has."""
    from bamsprod.app import store
    from bamsprod.app.store.engine import session_scope

    old = client.post("/api/runs", json={"optimizer": "adam", "epochs": 2}).json()["id"]
    new = client.post("/api/runs", json={"optimizer": "bamsprod", "epochs": 2,
                                         "evals_per_epoch": 4}).json()["id"]
    vals = [0.2, 0.3, 0.4, 0.5, 0.62, 0.65, 0.68, 0.7]
    with session_scope(db_url) as s:
        for rid in (old, new):
            assert store.claim_run(s, rid, "test", "cpu")
        for epoch, acc in ((1, 0.4), (2, 0.7)):
            store.record_epoch(s, old, {"epoch": epoch, "val_acc": acc, "seconds": 2.0})
        for epoch in (1, 2):
            points = [{"step": k, "epoch": k / 4, "train_seconds": k / 2, "val_acc": vals[k - 1]}
                      for k in range(4 * epoch - 3, 4 * epoch + 1)]
            store.record_epoch(s, new, {"epoch": epoch, "val_acc": vals[4 * epoch - 1],
                                        "seconds": 2.0, "evals": points})
        for rid in (old, new):
            store.finish_run(s, rid, "succeeded")
    q = f"/api/compare?runs={old},{new}&group_by=optimizer&metric=val_acc&target=0.6"
    res = client.get(q).json()
    o, n = res["runs"]
    assert (o["to_target_from"], n["to_target_from"]) == ("epochs", "evals")
    assert o["to_target"] == pytest.approx(1 + 2 / 3) and o["evals"] is None
    assert n["to_target"] == pytest.approx(1 + 0.25 * 5 / 6)
    assert n["to_target_seconds"] == pytest.approx(2 + 0.5 * 5 / 6)
    assert res["groups"][1]["speedup"] == pytest.approx((1 + 2 / 3) / (1 + 0.25 * 5 / 6))
    full = client.get(q + "&include=runs").json()
    assert full["runs"][1]["evals"]["val_acc"] == vals and full["runs"][0]["evals"] is None
    # On test accuracy neither run has values here: never reached, not an error.
    res = client.get(q.replace("val_acc", "test_acc")).json()
    assert [r["to_target"] for r in res["runs"]] == [None, None]
    summary = client.get(q + "&format=csv&table=summary")
    assert summary.status_code == 200 and "reached_at_first_eval" in summary.text
