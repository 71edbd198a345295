"""GET /api/compare at scale, on SQLite and PostgreSQL: the chart-shaped answer, ETag / 304 for
finished comparisons (and their invalidation on retry and delete), and gzip (never on SSE)."""

from __future__ import annotations

import gzip

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
