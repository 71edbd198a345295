"""The REST API on the real app and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bamsprod.app import store
from bamsprod.app.store.engine import session_scope
from bamsprod.app.web.main import create_app

BODY = {
    "name": "r",
    "model": "mlp",
    "dataset": "digits",
    "optimizer": "bamsprod",
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.001,
    "seed": 0,
    "hparams": {"kappa": 2.0},
}


def submit(client: TestClient, **kw) -> dict:
    r = client.post("/api/runs", json={**BODY, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def train(db_url: str, run_id: int, accs: list[float], state: str = "succeeded") -> None:
    """Play a worker: claim, write epochs, finish."""
    with session_scope(db_url) as s:
        assert store.claim_run(s, run_id, "test", "cpu")
        for i, acc in enumerate(accs, 1):
            store.record_epoch(
                s,
                run_id,
                {
                    "epoch": i,
                    "train_loss": 1.0,
                    "train_acc": acc,
                    "test_loss": 1.0,
                    "test_acc": acc,
                    "quant_error": 0.1,
                    "quant_error_layers": {"fc1": 0.1},
                    "flip_rate": 0.0,
                    "lr": 0.001,
                    "seconds": 0.25,
                },
            )
        if state != "running":
            store.finish_run(s, run_id, state)


def detail_loc(r) -> list:
    return r.json()["detail"][0]["loc"]


def test_submit_run_returns_201_and_enqueues(client: TestClient, enqueued: list[int]) -> None:
    run = submit(client)
    assert run["state"] == "queued" and run["id"] > 0
    assert run["config"]["hparams"]["kappa"] == 2.0 and run["config"]["schema_version"] == 2
    assert run["created_at"].endswith("+00:00") or run["created_at"].endswith("Z")
    assert enqueued == [run["id"]]
    assert client.get(f"/api/runs/{run['id']}").json()["config_hash"] == run["config_hash"]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"bogus": 1}, ["body", "bogus"]),
        ({"epochs": 0}, ["body", "epochs"]),
        ({"lr": -1}, ["body", "lr"]),
        ({"optimizer": "rmsprop"}, ["body", "optimizer"]),
        ({"hparams": {"kappa": 1000}}, ["body", "hparams", "kappa"]),  # the entry, named
        ({"hparams": {"nope": 1}}, ["body", "hparams", "nope"]),
        ({"model_args": {"width": 0}}, ["body", "model_args", "width"]),
    ],
)
def test_rejected_run_body_names_the_field_and_enqueues_nothing(
    client: TestClient, enqueued: list[int], change: dict, loc: list
) -> None:
    r = client.post("/api/runs", json={**BODY, **change})
    assert r.status_code == 422 and detail_loc(r) == loc
    assert enqueued == [] and client.get("/api/runs").json()["total"] == 0


def test_body_size_limit(client: TestClient, enqueued: list[int]) -> None:
    r = client.post("/api/runs", json={**BODY, "name": "x" * 2_000_000})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks(n: int, size: int = 100_000):  # no Content-Length: sent chunked
        yield from (b" " * size for _ in range(n))

    json_type = {"Content-Type": "application/json"}
    r = client.post("/api/runs", content=chunks(100), headers=json_type)  # 10 MB
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert enqueued == []
    body = b"".join([b'{"epochs": 1,', *chunks(3), b'"seed": 3}'])  # 300 kB: under the limit
    r = client.post("/api/runs", content=iter([body[:150_000], body[150_000:]]), headers=json_type)
    assert r.status_code == 201 and r.json()["seed"] == 3


def test_broker_down_still_201_and_run_stays_queued(api_settings) -> None:
    def broken(run_id: int) -> None:
        raise ConnectionError("broker down")

    with TestClient(create_app(api_settings, enqueue=broken)) as c:
        run = c.post("/api/runs", json=BODY)
        assert run.status_code == 201
        assert c.get(f"/api/runs/{run.json()['id']}").json()["state"] == "queued"


def test_list_filter_sort_page(client: TestClient, db_url: str) -> None:
    a = submit(client, name="alpha", optimizer="adam", hparams={}, tags=["paper"])
    b = submit(client, name="beta", optimizer="bop", hparams={})
    c = submit(client, name="alphabet", seed=1)
    train(db_url, a["id"], [0.5, 0.9])
    train(db_url, b["id"], [0.7], state="running")

    def ids(query: str) -> list[int]:
        r = client.get(f"/api/runs?{query}")
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids("") == [c["id"], b["id"], a["id"]]
    assert ids("state=succeeded") == [a["id"]]
    assert ids("state=queued,running") == [c["id"], b["id"]]
    assert ids("state=queued&state=succeeded") == [c["id"], a["id"]]
    assert ids("optimizer=bop") == [b["id"]] and ids("model=mlp&dataset=digits") != []
    assert ids("tag=paper") == [a["id"]]
    assert ids("q=alpha") == [c["id"], a["id"]] and ids("q=ALPHAB") == [c["id"]]
    assert ids("sort=best_test_acc&order=desc") == [a["id"], b["id"], c["id"]]
    page = client.get("/api/runs?limit=2&offset=2&order=asc").json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 2
    assert [x["id"] for x in page["items"]] == [c["id"]]
    r = client.get("/api/runs?sort=config")
    assert r.status_code == 422 and detail_loc(r) == ["query", "sort"]
    r = client.get("/api/runs?limit=501")
    assert r.status_code == 422 and detail_loc(r) == ["query", "limit"]
    r = client.get("/api/runs?state=sleeping")
    assert r.status_code == 422 and detail_loc(r) == ["query", "state"]
    got = client.get(f"/api/runs/{a['id']}").json()
    assert (got["best_test_acc"], got["best_epoch"], got["epochs_done"]) == (0.9, 2, 2)


def test_unknown_run_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("get", "/api/runs/7"),
        ("get", "/api/runs/7/metrics"),
        ("get", "/api/runs/7/evals"),
        ("get", "/api/runs/7/events"),
        ("post", "/api/runs/7/cancel"),
        ("post", "/api/runs/7/retry"),
        ("delete", "/api/runs/7"),
        ("get", "/api/compare?runs=7"),
    ]:
        r = getattr(client, method)(path)
        assert r.status_code == 404, (path, r.text)
        assert r.json() == {"detail": "run 7 not found"}
    r = client.get("/api/sweeps/9")
    assert r.status_code == 404 and r.json() == {"detail": "sweep 9 not found"}
    r = client.get("/api/runs/abc")
    assert r.status_code == 422 and detail_loc(r) == ["path", "run_id"]


def test_metrics_json_csv_and_after(client: TestClient, db_url: str) -> None:
    run = submit(client)
    train(db_url, run["id"], [0.2, 0.4, 0.6], state="running")
    items = client.get(f"/api/runs/{run['id']}/metrics").json()["items"]
    assert [m["epoch"] for m in items] == [1, 2, 3]
    assert set(items[0]) >= {
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "quant_error",
        "quant_error_layers",
        "flip_rate",
        "lr",
        "seconds",
    }
    after = client.get(f"/api/runs/{run['id']}/metrics?after=2").json()["items"]
    assert [m["epoch"] for m in after] == [3]
    r = client.get(f"/api/runs/{run['id']}/metrics?format=csv&after=1")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["epoch"]) for x in rows] == [2, 3] and float(rows[1]["test_acc"]) == 0.6
    r = client.get(f"/api/runs/{run['id']}/metrics", headers={"Accept": "text/csv"})
    assert r.text.startswith("run_id,epoch,")
    r = client.get(f"/api/runs/{run['id']}/metrics?format=xml")
    assert r.status_code == 422 and detail_loc(r) == ["query", "format"]


def test_evals_json_csv_after_and_the_runs_environment(client: TestClient, db_url: str) -> None:
    run = submit(client)
    assert client.get(f"/api/runs/{run['id']}").json()["environment"] is None
    env = {"torch": "2.13.0+cpu", "python": "3.11.7", "device_name": "AMD EPYC", "threads": 1,
           "bamsprod": {"version": "0.1.0", "commit": None}}
    points = [
        {"step": 4, "epoch": 0.5, "train_seconds": 0.2, "val_loss": 1.5, "val_acc": 0.4,
         "eval_seconds": 0.01},
        {"step": 8, "epoch": 1.0, "train_seconds": 0.4, "val_loss": float("nan"),
         "val_acc": 0.6, "eval_seconds": 0.01},
    ]
    with session_scope(db_url) as s:
        assert store.claim_run(s, run["id"], "test", "cpu")
        assert store.set_environment(s, run["id"], env)
        store.record_epoch(s, run["id"], {"epoch": 1, "val_acc": 0.6, "evals": points})
    assert client.get(f"/api/runs/{run['id']}").json()["environment"] == env
    listed = client.get("/api/runs").json()["items"]
    assert [r["environment"] for r in listed if r["id"] == run["id"]] == [env]
    items = client.get(f"/api/runs/{run['id']}/evals").json()["items"]
    assert [p["step"] for p in items] == [4, 8] and items[1]["val_loss"] is None
    assert items[0] == {"run_id": run["id"], **points[0]}
    assert [p["step"] for p in client.get(f"/api/runs/{run['id']}/evals?after=4").json()[
        "items"]] == [8]
    r = client.get(f"/api/runs/{run['id']}/evals?format=csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["run_id", "step", "epoch", "train_seconds", "val_loss", "val_acc",
                             "eval_seconds"]
    assert [float(x["epoch"]) for x in rows] == [0.5, 1.0] and rows[1]["val_loss"] == ""
    assert client.get("/api/runs/999/evals").status_code == 404
    r = client.get(f"/api/runs/{run['id']}/evals?after=-2")
    assert r.status_code == 422 and detail_loc(r) == ["query", "after"]


def test_cancel_retry_delete(client: TestClient, db_url: str, enqueued: list[int]) -> None:
    queued = submit(client)
    r = client.post(f"/api/runs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"

    running = submit(client)
    train(db_url, running["id"], [0.5], state="running")
    r = client.post(f"/api/runs/{running['id']}/cancel")
    assert r.json()["state"] == "running" and r.json()["cancel_requested"]
    r = client.delete(f"/api/runs/{running['id']}")
    assert r.status_code == 409 and "running" in r.json()["detail"]
    r = client.post(f"/api/runs/{running['id']}/retry")
    assert r.status_code == 409 and "only finished runs" in r.json()["detail"]
    with session_scope(db_url) as s:
        store.finish_run(s, running["id"], "cancelled")
    r = client.post(f"/api/runs/{running['id']}/cancel")
    assert r.status_code == 200  # cancelling a cancelled run is a no-op

    enqueued.clear()
    r = client.post(f"/api/runs/{running['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["epochs_done"] == 0
    assert enqueued == [running["id"]]
    assert client.get(f"/api/runs/{running['id']}/metrics").json()["items"] == []

    done = submit(client)
    train(db_url, done["id"], [0.5])
    r = client.post(f"/api/runs/{done['id']}/cancel")
    assert r.status_code == 409 and "already finished" in r.json()["detail"]
    assert client.delete(f"/api/runs/{done['id']}").status_code == 204
    assert client.get(f"/api/runs/{done['id']}").status_code == 404


SWEEP = {
    "name": "kappa",
    "base": {"epochs": 2, "dataset": "digits"},
    "grid": {"optimizer": ["bamsprod", "adam"], "lr": [0.01, 0.001]},
    "n_seeds": 2,
}


def test_sweep_expands_the_grid(client: TestClient, enqueued: list[int]) -> None:
    r = client.post("/api/sweeps", json=SWEEP)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["count"] == 8 and len(out["run_ids"]) == 8 and enqueued == out["run_ids"]
    sweep = client.get(f"/api/sweeps/{out['sweep']['id']}").json()
    assert sweep["n_runs"] == 8 and sweep["states"] == {"queued": 8}
    assert sweep["definition"]["grid"] == SWEEP["grid"]
    runs = client.get(f"/api/runs?sweep={out['sweep']['id']}&limit=100").json()["items"]
    combos = {(x["optimizer"], x["config"]["lr"], x["seed"]) for x in runs}
    assert len(combos) == 8 and {x["seed"] for x in runs} == {0, 1}
    assert all(x["sweep_id"] == out["sweep"]["id"] for x in runs)
    # Seeds pool into one config hash per grid point.
    assert len({x["config_hash"] for x in runs}) == 4
    assert client.get("/api/sweeps").json()["total"] == 1


def test_sweep_nested_keys_seeds_and_dry_run(client: TestClient, enqueued: list[int]) -> None:
    body = {
        "name": "k",
        "base": {"optimizer": "bamsprod", "epochs": 1},
        "grid": {"hparams.kappa": [0.5, 1.0, 2.0]},
        "seeds": [3, 4],
    }
    r = client.post("/api/sweeps?dry_run=true", json=body)
    assert r.status_code == 200 and r.json()["count"] == 6 and r.json()["dry_run"]
    assert enqueued == [] and client.get("/api/runs").json()["total"] == 0
    r = client.post("/api/sweeps", json=body)
    assert r.status_code == 201
    runs = client.get("/api/runs?limit=10").json()["items"]
    assert sorted((x["config"]["hparams"]["kappa"], x["seed"]) for x in runs) == [
        (k, s) for k in (0.5, 1.0, 2.0) for s in (3, 4)
    ]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"grid": {"nope": [1]}}, ["body", "grid", "nope"]),
        ({"grid": {"lr": []}}, ["body", "grid", "lr"]),
        ({"grid": {"lr": [0.1, -1]}}, ["body", "grid", "lr"]),
        ({"grid": {"hparams.kappa": [1, 1000]}}, ["body", "grid", "hparams.kappa"]),
        ({"base": {"epochs": 0}, "grid": {"lr": [0.1]}}, ["body", "base", "epochs"]),
        ({"base": {"bogus": 1}}, ["body", "base", "bogus"]),
        ({"grid": {"lr": [0.1] * 30, "epochs": [1] * 20}}, ["body", "grid"]),
        ({"seeds": [1], "n_seeds": 2}, ["body", "n_seeds"]),
        ({"extra": 1}, ["body", "extra"]),
    ],
)
def test_bad_sweep_is_422_naming_the_field(
    client: TestClient, enqueued: list[int], body: dict, loc: list
) -> None:
    r = client.post("/api/sweeps", json={"name": "bad", **body})
    assert r.status_code == 422, r.text
    assert detail_loc(r) == loc
    assert enqueued == [] and client.get("/api/runs").json()["total"] == 0


def test_dry_run_reports_counts_over_the_limit(client: TestClient) -> None:
    r = client.post(
        "/api/sweeps?dry_run=true", json={"grid": {"lr": [0.1] * 30, "seed": list(range(20))}}
    )
    assert r.status_code == 200 and r.json()["count"] == 600 and r.json()["max_runs"] == 500


def test_compare_groups_and_measures(client: TestClient, db_url: str) -> None:
    out = client.post(
        "/api/sweeps",
        json={
            "name": "c",
            "base": {"epochs": 3},
            "grid": {"optimizer": ["adam", "bamsprod"]},
            "seeds": [0, 1],
        },
    ).json()
    ids = out["run_ids"]
    curves = {0: [0.5, 0.7, 0.8], 1: [0.5, 0.7, 0.8], 2: [0.7, 0.8, 0.85], 3: [0.6, 0.8, 0.83]}
    for i, rid in enumerate(ids):
        train(db_url, rid, curves[i])
    sweep_id = out["sweep"]["id"]
    r = client.get(f"/api/compare?sweep={sweep_id}&group_by=optimizer&baseline=adam")
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["baseline"] == "optimizer=adam" and res["target"] == pytest.approx(0.792)
    adam, bams = res["groups"]
    # Interpolated: Adam 92% of the way from epoch 2 (0.7) to 3 (0.8); BAMSProd 92% from
    # epoch 1 (0.7) to 2 (0.8) and 96% from epoch 1 (0.6) to 2 (0.8).
    assert adam["n"] == 2 and bams["n"] == 2 and adam["to_target"]["mean"] == pytest.approx(2.92)
    assert bams["to_target"]["mean"] == pytest.approx(1.94)
    assert bams["speedup"] == pytest.approx(2.92 / 1.94)
    assert bams["final_diff"]["paired"] and bams["final_diff"]["mean"] == pytest.approx(0.04)
    assert bams["series"]["n"] == [2, 2, 2]
    assert len(res["runs"]) == 4 and res["runs"][0]["series"] is None
    r = client.get(f"/api/compare?sweep={sweep_id}&group_by=optimizer&include=runs")
    assert r.json()["runs"][0]["series"]["test_acc"] == [0.5, 0.7, 0.8]
    # Default groups: config hash (seeds pooled), the same two groups here.
    res = client.get(f"/api/compare?runs={','.join(map(str, ids))}").json()
    assert [g["n"] for g in res["groups"]] == [2, 2]
    # The groups differ in the optimizer and in BAMSProd's own (default-filled) hyperparameters.
    assert res["fields"] == ["hparams.gamma", "hparams.kappa", "optimizer"]
    r = client.get(f"/api/compare?sweep={sweep_id}&group_by=optimizer&format=csv&table=summary")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["group"] for x in rows] == ["optimizer=adam", "optimizer=bamsprod"]
    r = client.get(f"/api/compare?sweep={sweep_id}&x=time&target=0.8&group_by=optimizer")
    assert r.json()["groups"][1]["to_target"]["mean"] == 0.5  # seconds: 2 epochs x 0.25 s
    for query, loc in [
        ("", ["query", "runs"]),
        ("runs=1,x", ["query", "runs"]),
        (f"sweep={sweep_id}&group_by=colour", ["query", "group_by"]),
        (f"sweep={sweep_id}&baseline=sgd", ["query", "baseline"]),
        (f"sweep={sweep_id}&target=1.5", ["query", "target"]),
        (f"sweep={sweep_id}&metric=loss", ["query", "metric"]),
    ]:
        r = client.get(f"/api/compare?{query}")
        assert r.status_code == 422 and detail_loc(r) == loc, (query, r.text)


def test_health(api_settings) -> None:
    with TestClient(
        create_app(
            api_settings,
            enqueue=lambda i: None,
            broker_check=lambda: True,
            workers_seen=lambda: ["w1", "w2"],
        )
    ) as c:
        body = c.get("/api/health").json()
        assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]
        assert body["workers"] == ["w1", "w2"] and body["workers_seen"] == 2

    def down() -> bool:
        raise ConnectionError("no broker")

    with TestClient(
        create_app(api_settings, enqueue=lambda i: None, broker_check=down, workers_seen=lambda: 0)
    ) as c:
        r = c.get("/api/health")
        assert r.status_code == 200 and r.json()["status"] == "degraded"
        assert "no broker" in r.json()["broker"]["detail"] and r.json()["workers_seen"] == 0


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in [
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/evals",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/retry",
        "/api/sweeps",
        "/api/sweeps/{sweep_id}",
        "/api/compare",
        "/api/health",
    ]:
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200


def test_compare_runs_without_epochs(client: TestClient) -> None:
    a, b = submit(client, seed=0), submit(client, seed=1, optimizer="adam", hparams={})
    r = client.get(f"/api/compare?runs={a['id']},{b['id']}&group_by=optimizer")
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["budget"] is None and res["target"] is None
    assert [g["n"] for g in res["groups"]] == [1, 1]
    assert res["groups"][0]["series"]["epoch"] == [] and res["groups"][0]["best"]["n"] == 0


def test_the_api_never_imports_torch_or_the_worker(tmp_path) -> None:
    """Starting the app and serving requests (health included) loads no torch, trainer or
    worker code: the API validates runs with core.config alone."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from bamsprod.app.web.main import create_app
        from bamsprod.app.settings import Settings
        s = Settings(home={str(tmp_path)!r}, broker_url="memory://")
        with TestClient(create_app(s, enqueue=lambda i: None)) as c:
            assert c.post("/api/runs", json={{"epochs": 1}}).status_code == 201
            assert c.get("/api/health").status_code == 200
            assert c.get("/api/compare?runs=1").status_code == 200
        bad = [m for m in sys.modules if m.split(".")[0] == "torch"
               or m.startswith("bamsprod.worker")
               or m in ("bamsprod.core.train", "bamsprod.core.nn", "bamsprod.core.optim",
                        "bamsprod.core.data")]
        assert not bad, bad
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_delete_sweep_with_its_runs_refused_while_one_is_live(
    client: TestClient, db_url: str, api_settings
) -> None:
    out = client.post("/api/sweeps", json={"name": "d", "grid": {"seed": [0, 1]}}).json()
    sweep_id, (a, b) = out["sweep"]["id"], out["run_ids"]
    other = submit(client)  # not in the sweep: untouched
    ckpt = api_settings.checkpoint_dir / str(a)
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"x")
    train(db_url, a, [0.5], state="running")
    r = client.delete(f"/api/sweeps/{sweep_id}")
    assert r.status_code == 409 and "cancel them first" in r.json()["detail"]
    assert client.get(f"/api/sweeps/{sweep_id}").json()["run_ids"] == [a, b]  # nothing gone
    with session_scope(db_url) as s:
        store.finish_run(s, a, "succeeded")
    assert client.post(f"/api/runs/{b}/cancel").status_code == 200
    assert client.delete(f"/api/sweeps/{sweep_id}").status_code == 204
    assert client.get(f"/api/sweeps/{sweep_id}").status_code == 404
    assert [client.get(f"/api/runs/{i}").status_code for i in (a, b)] == [404, 404]
    assert client.get(f"/api/runs/{other['id']}").status_code == 200
    assert not ckpt.exists()  # the run's checkpoint went with it
    assert client.delete(f"/api/sweeps/{sweep_id}").status_code == 404
    assert client.get("/api/sweeps").json()["total"] == 0


def test_delete_removes_the_checkpoint(client: TestClient, db_url: str, api_settings) -> None:
    run = submit(client)
    train(db_url, run["id"], [0.5])
    ckpt = api_settings.checkpoint_dir / str(run["id"])
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"x")
    keep = api_settings.checkpoint_dir / str(run["id"] + 1)
    keep.mkdir()
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert not ckpt.exists() and keep.exists()


def test_cancel_after_the_worker_finished_first_is_409(client: TestClient, db_url: str) -> None:
    run = submit(client)
    train(db_url, run["id"], [0.5], state="running")
    assert client.post(f"/api/runs/{run['id']}/cancel").json()["cancel_requested"]
    with session_scope(db_url) as s:  # the last epoch ended before the worker saw the flag
        store.finish_run(s, run["id"], "succeeded")
    r = client.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 409 and "already finished (succeeded)" in r.json()["detail"]


def test_deleted_newest_run_id_is_not_reused(client: TestClient) -> None:
    first, newest = submit(client), submit(client)
    assert client.post(f"/api/runs/{newest['id']}/cancel").status_code == 200
    assert client.delete(f"/api/runs/{newest['id']}").status_code == 204
    again = submit(client)
    assert again["id"] > newest["id"] > first["id"]
    out = client.post("/api/sweeps", json={"grid": {"seed": [0]}}).json()
    assert client.post(f"/api/runs/{out['run_ids'][0]}/cancel").status_code == 200
    assert client.delete(f"/api/sweeps/{out['sweep']['id']}").status_code == 204
    out2 = client.post("/api/sweeps", json={"grid": {"seed": [0]}}).json()
    assert out2["sweep"]["id"] > out["sweep"]["id"]


def test_group_by_names_only_existing_fields(client: TestClient) -> None:
    run = submit(client)
    for bad in ("hparams.nope", "model_args.nope", "hparams.kappa.x", "seeds", "nope.kappa"):
        r = client.get(f"/api/compare?runs={run['id']}&group_by=optimizer,{bad}")
        assert r.status_code == 422 and detail_loc(r) == ["query", "group_by"], bad
        assert repr(bad) in r.json()["detail"][0]["msg"]
    r = client.get(f"/api/compare?runs={run['id']}&group_by=hparams.kappa,model_args.width")
    assert r.status_code == 200, r.text


def test_run_page_with_a_huge_id_is_404(client: TestClient) -> None:
    for run_id in (2**31, 2**63, 10**30):
        assert client.get(f"/runs/{run_id}").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no database involved
def test_convex_is_computed_once_per_parameters_and_never_queues_up(client: TestClient) -> None:
    """/api/convex costs seconds of CPU: one computation at a time, other parameters meanwhile
    get 503 + Retry-After (no pile of threads), the same ones wait for it, then it is cached."""
    import threading
    import time

    convex = client.app.state.convex
    answers: dict[str, Any] = {}

    def call(name: str, steps: int) -> None:
        answers[name] = client.get("/api/convex", params={"steps": steps, "c": 3.0})

    first = threading.Thread(target=call, args=("first", 1500))  # ~3 s of CPU
    first.start()
    deadline = time.monotonic() + 30
    while not convex.running:
        assert time.monotonic() < deadline and first.is_alive(), "never started"
        time.sleep(0.005)
    busy = client.get("/api/convex", params={"steps": 1501, "c": 3.0})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5", busy.text
    same = threading.Thread(target=call, args=("same", 1500))
    same.start()
    first.join(60)
    same.join(60)
    assert answers["first"].status_code == answers["same"].status_code == 200
    assert answers["first"].json() == answers["same"].json()
    assert list(convex.done) == [(1500, 3.0)] and not convex.running
    again = client.get("/api/convex", params={"steps": 1500, "c": 3.0})
    assert again.json() == answers["first"].json() and not convex.running  # from the cache
    assert client.get("/api/convex", params={"steps": 0}).status_code == 422


def test_a_500_run_sweep_is_one_bulk_insert(client: TestClient, db_url: str,
                                            enqueued: list[int]) -> None:
    """One transaction, the runs in one executemany INSERT and their ids in one SELECT (not a
    statement per run); every run queued after the answer, in order."""
    import sqlalchemy as sa

    from bamsprod.app.store.engine import get_engine

    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(" ".join(statement.split()).upper())

    body = {"base": {"epochs": 1}, "grid": {"lr": [0.001 * (i + 1) for i in range(50)]},
            "n_seeds": 10}
    engine = get_engine(db_url)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.post("/api/sweeps", json=body)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 201 and r.json()["count"] == 500
    run_inserts = [s for s in statements if s.startswith("INSERT INTO RUN ")]
    assert len(run_inserts) == 1, len(run_inserts)
    assert len([s for s in statements if s.startswith("SELECT") and "FROM RUN" in s]) == 1
    assert enqueued == r.json()["run_ids"] and len(set(enqueued)) == 500
    assert client.get("/api/runs?limit=1").json()["total"] == 500


def test_schema_options_serve_the_metric_declarations_charts(client: TestClient) -> None:
    from bamsprod.core.metric_schema import chart_specs

    charts = client.get("/api/schema/options").json()["charts"]
    assert charts == chart_specs()
    assert ["val_acc", "val"] in next(c for c in charts if c["id"] == "chart-acc")["traces"]


def test_head_answers_every_get_route_without_a_body(client: TestClient) -> None:
    run_id = submit(client)["id"]
    for path in ("/api/runs", f"/api/runs/{run_id}", f"/api/runs/{run_id}/metrics?format=csv",
                 "/api/health", "/", f"/runs/{run_id}", "/static/api.js",
                 f"/api/runs/{run_id}/events"):
        got, head = client.get(path) if "events" not in path else None, client.head(path)
        assert head.status_code == 200 and head.content == b"", (path, head.status_code)
        if got is not None:
            assert head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/api/runs/999999").status_code == 404
    assert client.app.state.broadcaster.open_streams == 0  # the stream was ended at once


def test_archive_hides_a_run_from_the_list_and_keeps_it(client: TestClient, db_url: str) -> None:
    a, b = submit(client, name="kept"), submit(client, name="archived")
    r = client.post(f"/api/runs/{b['id']}/archive")
    assert r.status_code == 200 and r.json()["archived"] is True
    assert [x["id"] for x in client.get("/api/runs").json()["items"]] == [a["id"]]
    archived = client.get("/api/runs", params={"archived": "true"}).json()
    assert [x["id"] for x in archived["items"]] == [b["id"]] and archived["total"] == 1
    assert client.get(f"/api/runs/{b['id']}").json()["archived"] is True  # kept, readable
    assert client.post(f"/api/runs/{b['id']}/unarchive").json()["archived"] is False
    assert client.get("/api/runs").json()["total"] == 2
    assert client.post("/api/runs/999999/archive").status_code == 404


def test_a_running_runs_phase_is_set_then_cleared(client: TestClient, db_url: str) -> None:
    run = submit(client)
    with session_scope(db_url) as s:
        assert not store.set_phase(s, run["id"], "loading data")  # queued: nothing to say
        assert store.claim_run(s, run["id"], "w", "cpu")
        assert store.set_phase(s, run["id"], "building the optimizer kernel")
    assert client.get(f"/api/runs/{run['id']}").json()["phase"] == (
        "building the optimizer kernel")
    with session_scope(db_url) as s:
        store.finish_run(s, run["id"], "succeeded")
    assert client.get(f"/api/runs/{run['id']}").json()["phase"] is None
