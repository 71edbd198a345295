"""Tuned sweeps ("tune, then seed") against the real API, database, Optuna storage and worker code.

The stage-1 decision reads validation metrics only: the epochs written here rank the runs one
way by val_acc and the other way by test_acc, so a decision that read test metrics would pick
another learning rate.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bamsprod.app import store
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import session_scope
from bamsprod.app.store.tables import TuneStage
from bamsprod.app.sweeps import optuna_storage, tuning
from bamsprod.worker.db import db_call
from bamsprod.worker.tasks import execute_run
from bamsprod.worker.tuned import after_run

BASE = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 128,
        "epochs": 3, "val_split": 0.2, "seed": 7}


def tune_body(**tune: Any) -> dict[str, Any]:
    spec = {"optimizers": ["adam", "sgd"], "lr_min": 1e-3, "lr_max": 1e-1, "n_lr": 3,
            "stage1_epochs": 1, "reduction_factor": 2, **tune}
    return {"name": "t", "base": BASE, "strategy": "tune", "tune": spec, "n_seeds": 2}


def end_with(url: str, run_id: int, epochs: list[tuple[float, float]],
             state: str = "succeeded") -> None:
    """Run ``run_id`` through the store as a worker would: claim, one epoch per
    (val_acc, test_acc), finish."""
    with session_scope(url) as session:
        assert store.claim_run(session, run_id, "test@host", "cpu")
        for epoch, (val_acc, test_acc) in enumerate(epochs, 1):
            store.record_epoch(session, run_id, {
                "epoch": epoch, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0,
                "test_acc": test_acc, "val_loss": 1.0, "val_acc": val_acc, "quant_error": 0.1,
            })
        assert store.finish_run(session, run_id, state)


def stage1(client: TestClient, sweep_id: int) -> dict[str, dict[str, Any]]:
    detail = client.get(f"/api/sweeps/{sweep_id}").json()
    return {t["optimizer"]: t for t in detail["tuning"]}


def lrs(client: TestClient, run_ids: list[int]) -> list[float]:
    return [client.get(f"/api/runs/{i}").json()["config"]["lr"] for i in run_ids]


def test_tuned_sweep_queues_one_trial_per_rate_and_states_the_search(client, enqueued) -> None:
    dry = client.post("/api/sweeps?dry_run=true", json=tune_body())
    assert dry.status_code == 200 and dry.json()["count"] == 3 * 2 + 2 * 2
    r = client.post("/api/sweeps", json=tune_body())
    assert r.status_code == 201, r.text
    run_ids = r.json()["run_ids"]
    assert len(run_ids) == 6 and sorted(enqueued) == sorted(run_ids)
    tuned = stage1(client, r.json()["sweep"]["id"])
    for optimizer in ("adam", "sgd"):
        t = tuned[optimizer]
        assert t["searched"] == {"lr": [0.001, 0.01, 0.1]}
        assert t["criterion"] == "best_val_acc" and t["chosen"] is None
        assert t["stage2_run_ids"] == []
        runs = [client.get(f"/api/runs/{i}").json() for i in t["stage1_run_ids"]]
        assert {(x["config"]["epochs"], x["config"]["seed"], x["optimizer"]) for x in runs} == {
            (1, 7, optimizer)}


@pytest.mark.parametrize(("patch", "loc"), [
    ({"tune": {"optimizers": ["adam"], "lr_min": 1e-1, "lr_max": 1e-3}}, ["tune", "lr_max"]),
    ({"base": {**BASE, "val_split": 0.0}}, ["base", "val_split"]),
    ({"grid": {"lr": [0.1]}}, ["grid"]),
    ({"tune": {"optimizers": ["adam"], "lr_min": 1e-3, "lr_max": 1e-1,
               "hparams": {"kappa": [1.0]}}}, ["tune", "hparams", "kappa"]),
    ({"tune": {"optimizers": ["adam"], "lr_min": 1e-3, "lr_max": 1e-1,
               "stage1_epochs": 9}}, ["tune", "stage1_epochs"]),
    ({"tune": None}, ["tune"]),
    ({"base": {**BASE, "hparams": [1]}}, ["base", "hparams"]),
    ({"base": {**BASE, "epochs": 5000}}, ["base", "epochs"]),
])
def test_bad_tuned_sweep_is_a_422_naming_the_field(client, patch, loc) -> None:
    r = client.post("/api/sweeps", json={**tune_body(), **patch})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", *loc]


def test_stage2_runs_the_validation_argmax_never_the_test_one(client, api_settings) -> None:
    url = api_settings.database_url
    sweep_id = client.post("/api/sweeps", json=tune_body(optimizers=["adam"])).json()["sweep"]["id"]
    runs = stage1(client, sweep_id)["adam"]["stage1_run_ids"]
    by_lr = dict(zip(lrs(client, runs), runs, strict=True))
    # By val_acc 0.01 wins (its best epoch), by test_acc 0.1 would.
    end_with(url, by_lr[0.001], [(0.50, 0.60)])
    end_with(url, by_lr[0.01], [(0.90, 0.40)])
    with session_scope(url) as session:  # stage 1 not over: nothing yet
        assert tuning.start_stage2(session, sweep_id, "adam") == []
    end_with(url, by_lr[0.1], [(0.70, 0.95)])
    with session_scope(url) as session:
        new = tuning.start_stage2(session, sweep_id, "adam")
        assert tuning.start_stage2(session, sweep_id, "adam") == []  # idempotent
    assert len(new) == 2 and lrs(client, new) == [0.01, 0.01]
    stage2 = [client.get(f"/api/runs/{i}").json() for i in new]
    assert [r["config"]["seed"] for r in stage2] == [7, 8]
    assert {(r["state"], r["config"]["epochs"], r["sweep_id"]) for r in stage2} == {
        ("queued", 3, sweep_id)}
    t = stage1(client, sweep_id)["adam"]
    assert t["chosen"] == {"lr": 0.01} and t["value"] == pytest.approx(0.9)
    assert t["best_run_id"] == by_lr[0.01] and t["stage2_run_ids"] == new
    assert client.get(f"/api/sweeps/{sweep_id}").json()["n_runs"] == 5


def test_compare_of_a_tuned_sweep_pools_stage2_unless_stage1_is_asked(client,
                                                                      api_settings) -> None:
    url = api_settings.database_url
    sweep_id = client.post("/api/sweeps", json=tune_body(optimizers=["adam"])).json()["sweep"]["id"]
    trials = stage1(client, sweep_id)["adam"]["stage1_run_ids"]
    for i, run_id in enumerate(trials):
        end_with(url, run_id, [(0.5 + i / 10, 0.5)])
    with session_scope(url) as session:
        seeded = tuning.start_stage2(session, sweep_id, "adam")
    for run_id in seeded:
        end_with(url, run_id, [(0.8, 0.8)] * 3)

    def compared(query: str) -> dict[str, Any]:
        r = client.get(f"/api/compare?sweep={sweep_id}&group_by=optimizer{query}")
        assert r.status_code == 200, r.text
        return r.json()

    got = compared("")
    assert [r["id"] for r in got["runs"]] == seeded and len(seeded) == 2
    assert [g["run_ids"] for g in got["groups"]] == [seeded] and got["budget"] == 3
    assert [r["id"] for r in compared("&stage=1")["runs"]] == trials
    assert [r["id"] for r in compared("&stage=2")["runs"]] == seeded
    grid = client.post("/api/sweeps", json={"base": BASE, "grid": {"lr": [0.01]}}).json()
    for query, loc in ((f"sweep={grid['sweep']['id']}&stage=1", ["query", "stage"]),
                       (f"runs={seeded[0]}&stage=1", ["query", "stage"]),
                       (f"sweep={sweep_id}&stage=3", ["query", "stage"])):
        r = client.get(f"/api/compare?{query}")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert client.get(f"/api/compare?sweep={grid['sweep']['id']}").status_code == 200


def test_a_grid_sweep_has_no_tuning_and_refuses_a_tune_object(client) -> None:
    grid = {"base": BASE, "grid": {"lr": [0.01, 0.1]}}
    r = client.post("/api/sweeps", json=grid)
    assert r.status_code == 201
    assert client.get(f"/api/sweeps/{r.json()['sweep']['id']}").json()["tuning"] is None
    r = client.post("/api/sweeps", json={**grid, "tune": tune_body()["tune"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tune"]


def test_a_grid_runs_each_distinct_rate_once(client) -> None:
    body = {**tune_body(optimizers=["adam"], lr_min=0.01, lr_max=0.01, n_lr=4), "n_seeds": 3}
    r = client.post("/api/sweeps", json=body)
    assert r.status_code == 201 and r.json()["count"] == 1 + 3 and len(r.json()["run_ids"]) == 1


def test_last_val_acc_criterion_reads_the_last_epoch(client, api_settings) -> None:
    url = api_settings.database_url
    body = tune_body(optimizers=["sgd"], n_lr=2, stage1_epochs=2, criterion="last_val_acc")
    sweep_id = client.post("/api/sweeps", json=body).json()["sweep"]["id"]
    runs = stage1(client, sweep_id)["sgd"]["stage1_run_ids"]
    by_lr = dict(zip(lrs(client, runs), runs, strict=True))
    end_with(url, by_lr[0.001], [(0.2, 0.9), (0.6, 0.9)])
    end_with(url, by_lr[0.1], [(0.9, 0.1), (0.5, 0.1)])  # best peak, worse last epoch
    with session_scope(url) as session:
        new = tuning.start_stage2(session, sweep_id, "sgd")
    assert lrs(client, new) == [0.001, 0.001]


def test_a_diverged_trial_never_wins_however_high_its_val_acc(client, api_settings) -> None:
    url = api_settings.database_url
    sweep_id = client.post("/api/sweeps", json=tune_body(optimizers=["adam"], n_lr=2)).json()[
        "sweep"]["id"]
    low, high = stage1(client, sweep_id)["adam"]["stage1_run_ids"]
    end_with(url, high, [(0.99, 0.99)], state="diverged")
    end_with(url, low, [(0.5, 0.5)])
    with session_scope(url) as session:
        new = tuning.start_stage2(session, sweep_id, "adam")
    assert stage1(client, sweep_id)["adam"]["best_run_id"] == low
    assert lrs(client, new) == lrs(client, [low]) * 2


def test_concurrent_stage1_endings_create_stage2_once(client, api_settings) -> None:
    url = api_settings.database_url
    body = tune_body(optimizers=["adam"], n_lr=2)
    sweep_id = client.post("/api/sweeps", json=body).json()["sweep"]["id"]
    runs = stage1(client, sweep_id)["adam"]["stage1_run_ids"]
    for run_id, val in zip(runs, (0.3, 0.8), strict=True):
        end_with(url, run_id, [(val, 0.5)])
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def finish() -> None:
        try:
            with session_scope(url) as session:
                barrier.wait()
                results.append(tuning.start_stage2(session, sweep_id, "adam"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=finish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(len(r) for r in results) == [0, 0, 0, 2]
    with session_scope(url) as session:
        assert session.get(TuneStage, (sweep_id, "adam")) is not None
        assert len(store.runs_of_sweep(session, sweep_id)) == 4


@pytest.mark.service
@pytest.mark.slow
def test_worker_prunes_the_loser_then_queues_stage2(service_settings: Settings) -> None:
    """The worker reports val_acc to Optuna; the trial behind at the first rung is pruned
    (state ``pruned``, stopped after epoch 1 of 3) and stage 2 takes the other rate."""
    from bamsprod.app.web.main import create_app

    s = service_settings
    body = tune_body(optimizers=["adam"], lr_min=1e-6, lr_max=1e-2, n_lr=2, stage1_epochs=3)
    with TestClient(create_app(s, enqueue=lambda _: None),
                    headers={"X-Requested-With": "test"}) as c:
        sweep_id = c.post("/api/sweeps", json=body).json()["sweep"]["id"]
        runs = stage1(c, sweep_id)["adam"]["stage1_run_ids"]
        by_lr = dict(zip(lrs(c, runs), runs, strict=True))
        # The good rate reaches the first rung first (always promoted); the bad one then
        # trails it there and is cut.
        assert execute_run(by_lr[0.01], hostname="w1@host", settings=s) == "succeeded"
        assert execute_run(by_lr[1e-6], hostname="w1@host", settings=s) == "pruned"
        loser = c.get(f"/api/runs/{by_lr[1e-6]}").json()
        assert loser["state"] == "pruned" and loser["epochs_done"] == 1 and not loser["error"]
        t = stage1(c, sweep_id)["adam"]
        assert t["chosen"] == {"lr": 0.01} and len(t["stage2_run_ids"]) == 2
    tune = db_call(s, "tune", store.sweep_tune, sweep_id)
    study = optuna_storage.load_study(s.database_url, tune, "adam")
    states = {tr.params["lr"]: tr.state.name for tr in study.get_trials()}
    assert states == {0.01: "COMPLETE", 1e-6: "PRUNED"}
    assert study.best_trial.params == t["chosen"]  # Optuna was told the same scores
    assert after_run(s, by_lr[0.01], "succeeded") == []  # a redelivery: no new stage


@pytest.mark.service
def test_reconciler_creates_stage2_when_the_last_trial_was_cancelled_queued(
        service_settings: Settings) -> None:
    """No worker ends a run cancelled while queued: the reconciler's pass starts stage 2."""
    from bamsprod.app.web.main import create_app
    from bamsprod.worker.reconciler import reconcile_once

    s = service_settings
    body = tune_body(optimizers=["adam"], n_lr=2)
    with TestClient(create_app(s, enqueue=lambda _: None),
                    headers={"X-Requested-With": "test"}) as c:
        sweep_id = c.post("/api/sweeps", json=body).json()["sweep"]["id"]
        first, second = stage1(c, sweep_id)["adam"]["stage1_run_ids"]
        end_with(s.database_url, first, [(0.6, 0.6)])
        assert after_run(s, first, "succeeded") == []  # the other one is queued
        assert c.post(f"/api/runs/{second}/cancel").json()["state"] == "cancelled"
        reconcile_once(s)
        t = stage1(c, sweep_id)["adam"]
        assert t["best_run_id"] == first and len(t["stage2_run_ids"]) == 2
        reconcile_once(s)  # nothing more
        assert len(c.get(f"/api/sweeps/{sweep_id}").json()["run_ids"]) == 4
    # The cancelled run's trial, told by no worker, is closed too.
    tune = db_call(s, "tune", store.sweep_tune, sweep_id)
    trials = optuna_storage.load_study(s.database_url, tune, "adam").get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]


def test_cli_tune_submits_stage1_and_names_the_bad_option(start_api, tmp_path) -> None:
    import json
    import subprocess
    import sys
    import urllib.request

    from service_fixtures import make_settings, settings_env

    from bamsprod.app.store.engine import init_db

    s = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}",
                      broker_url="memory://")
    init_db(s.database_url)
    url = start_api(s)
    env = {**settings_env(s), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "bamsprod", "tune", "--url", url, "--dataset", "digits",
           "--epochs", "3", "--opt", "adam", "--opt", "bamsprod", "--lr-min", "0.001",
           "--lr-max", "0.1", "--n-lr", "3", "--search", "kappa=0.5,2", "--stage1-epochs", "1",
           "--seeds", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "0.001, 0.01, 0.1" in out.stdout and "kappa: 0.5, 2" in out.stdout
    assert "13 runs in all" in out.stdout  # adam 3 + bamsprod 3x2, then 2 seeds each
    with urllib.request.urlopen(f"{url}/api/sweeps/1") as r:
        tuned = {t["optimizer"]: t for t in json.load(r)["tuning"]}
    assert len(tuned["adam"]["stage1_run_ids"]) == 3
    assert tuned["bamsprod"]["searched"] == {"lr": [0.001, 0.01, 0.1],
                                             "hparams.kappa": [0.5, 2.0]}
    bad = subprocess.run([*cmd[:14], "--lr-min", "0.5", "--lr-max", "0.1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--lr-max" in bad.stderr and "lr_min" in bad.stderr


def test_deleting_a_tuned_sweep_deletes_its_studies(client, api_settings) -> None:
    url = api_settings.database_url
    sweep_id = client.post("/api/sweeps", json=tune_body(optimizers=["adam"], n_lr=2)).json()[
        "sweep"]["id"]
    for run_id in stage1(client, sweep_id)["adam"]["stage1_run_ids"]:
        end_with(url, run_id, [(0.5, 0.5)])
    with session_scope(url) as session:
        tune = store.sweep_tune(session, sweep_id)
    assert optuna_storage.load_study(url, tune, "adam").trials
    assert client.delete(f"/api/sweeps/{sweep_id}").status_code == 204
    with pytest.raises(KeyError):
        optuna_storage.load_study(url, tune, "adam")


@pytest.mark.service
def test_api_and_worker_opening_optuna_storage_at_once_both_succeed(pg_url: str) -> None:
    """Two processes meet a fresh database's optuna schema together (API and worker start)."""
    import subprocess
    import sys

    from service_fixtures import ROOT

    code = ("from bamsprod.app.sweeps import optuna_storage; "
            f"s = optuna_storage.storage({pg_url!r}); print(len(s.get_all_studies()))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    assert [o.strip() for o, _ in outs] == ["0", "0", "0"]


@pytest.mark.service
@pytest.mark.slow
@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_two_celery_workers_run_both_stages(service_settings: Settings, start_worker) -> None:
    """Scale-out (PostgreSQL, Redis, two worker processes): stage 1 trains on both workers,
    whichever ends the last trial queues stage 2, and stage 2 trains too."""
    from service_fixtures import wait_for

    from bamsprod.app.web.main import create_app

    s = service_settings
    workers = [start_worker(s, "w1"), start_worker(s, "w2")]
    body = tune_body(optimizers=["adam", "sgd"], n_lr=2, stage1_epochs=1)
    body["base"] = {**BASE, "epochs": 2}
    with TestClient(create_app(s), headers={"X-Requested-With": "test"}) as c:
        sweep_id = c.post("/api/sweeps", json=body).json()["sweep"]["id"]

        def settled() -> dict[str, Any] | None:
            d = c.get(f"/api/sweeps/{sweep_id}").json()
            done = sum(n for k, n in d["states"].items() if k not in ("queued", "running"))
            return d if len(d["run_ids"]) == 8 and done == 8 else None

        detail = wait_for(settled, 240, "both stages of the tuned sweep")
        for t in detail["tuning"]:
            assert lrs(c, t["stage2_run_ids"]) == [t["chosen"]["lr"]] * 2
    logs = "".join(w.output()[-2000:] for w in workers)
    assert detail["states"].get("succeeded", 0) + detail["states"].get("pruned", 0) == 8, logs
    for t in detail["tuning"]:
        assert len(t["stage2_run_ids"]) == 2 and t["chosen"]["lr"] in (0.001, 0.1)


def test_a_huge_tuned_sweep_is_counted_not_enumerated(client) -> None:
    """beta1 x100, beta2 x100, eps x20 (800,000 stage-1 points, a 2 KB body): the count comes
    from the list lengths, so the dry run answers at once and the submit is refused at once
    (before: every combination was built and validated first, ~15 s of API CPU each)."""
    hparams = {"beta1": [round(0.5 + i * 0.004, 4) for i in range(100)],
               "beta2": [round(0.9 + i * 0.0009, 5) for i in range(100)],
               "eps": [float(f"{(1 + i) * 1e-9:.3g}") for i in range(20)]}
    body = tune_body(optimizers=["bamsprod"], n_lr=4, hparams=hparams)
    t0 = time.perf_counter()
    dry = client.post("/api/sweeps?dry_run=true", json=body)
    dry_s = time.perf_counter() - t0
    assert dry.status_code == 200 and dry.json()["count"] == 4 * 100 * 100 * 20 + 2
    t0 = time.perf_counter()
    r = client.post("/api/sweeps", json=body)
    submit_s = time.perf_counter() - t0
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tune", "hparams"]
    assert "the limit is 500" in r.json()["detail"][0]["msg"]
    assert dry_s < 1.0 and submit_s < 1.0, (dry_s, submit_s)


@pytest.mark.parametrize(("patch", "loc"), [
    ({"tune": {"optimizers": ["adam"], "lr_min": 1e-3, "lr_max": 1e-1,
               "hparams": {"beta1": [0.9] * 1001}}}, ["tune", "hparams", "beta1"]),
    ({"strategy": "grid", "tune": None, "grid": {"lr": [0.1] * 1001}}, ["grid", "lr"]),
    ({"strategy": "grid", "tune": None, "grid": {f"hparams.k{i}": [1] for i in range(65)}},
     ["grid"]),
])
def test_sweep_lists_are_capped(client, patch, loc) -> None:
    r = client.post("/api/sweeps?dry_run=true", json={**tune_body(), **patch})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", *loc]


def test_a_sweep_is_cancelled_in_one_request(client, api_settings) -> None:
    body = {"name": "g", "base": BASE, "grid": {"lr": [0.01, 0.1]}, "n_seeds": 3}
    r = client.post("/api/sweeps", json=body)
    sweep_id, ids = r.json()["sweep"]["id"], r.json()["run_ids"]
    with session_scope(api_settings.database_url) as session:
        for run_id in ids[:2]:  # two of them train on a live worker
            assert store.claim_run(session, run_id, "w@host", "cpu")
    r = client.post(f"/api/sweeps/{sweep_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json() == {"sweep_id": sweep_id, "cancelled": 4, "cancel_requested": 2}
    runs = [client.get(f"/api/runs/{i}").json() for i in ids]
    assert [x["state"] for x in runs] == ["running"] * 2 + ["cancelled"] * 4
    assert all(x["cancel_requested"] for x in runs)
    again = client.post(f"/api/sweeps/{sweep_id}/cancel").json()
    assert again["cancelled"] == 0 and again["cancel_requested"] == 0
    assert client.post("/api/sweeps/999/cancel").status_code == 404


def test_a_cancelled_tuned_sweep_starts_no_stage2(client, api_settings) -> None:
    r = client.post("/api/sweeps", json=tune_body(optimizers=["adam"]))
    sweep_id = r.json()["sweep"]["id"]
    first, *_ = stage1(client, sweep_id)["adam"]["stage1_run_ids"]
    end_with(api_settings.database_url, first, [(0.9, 0.1)])  # one trial had finished
    assert client.post(f"/api/sweeps/{sweep_id}/cancel").json()["cancelled"] == 2
    with session_scope(api_settings.database_url) as session:
        assert tuning.start_stage2(session, sweep_id, "adam") == []
    t = stage1(client, sweep_id)["adam"]
    assert t["stage2_run_ids"] == [] and t["chosen"] is None
