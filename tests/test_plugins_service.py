"""Plugins through the real service: installed with pip (to a scratch directory on the
processes' PYTHONPATH: the shared virtualenv stays clean), they show in the API, the CLI and the
form, train through a real worker, are recorded on their runs and compared with BAMSProd.

- One ``bamsprod up`` (API + worker, SQLite) with the example ``bamsprod-lion`` and the tests'
  own ``bamsprod-testplug`` (which holds three broken entries) serves most tests, the browser's
  too (it overrides ``browser_fixtures``' ``live_server``).
- The worker check runs an API with ``bamsprod-lion`` 0.1.0 against workers that lack it, then
  have 0.2.0, then 0.1.0: the run fails twice with what to install, then a retry trains it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from plugin_fixtures import TESTPLUG_VERSION, env_with, install_lion, install_testplug
from service_fixtures import ROOT, stop_process_group, wait_for

if TYPE_CHECKING:
    from browser_fixtures import LiveServer

pytest_plugins = ["browser_fixtures"]  # imported by pytest (its asserts rewritten), used below
pytestmark = [pytest.mark.service, pytest.mark.slow]

LION = {"kind": "optimizer", "name": "lion", "dist": "bamsprod-lion", "version": "0.1.0"}
TINY = {"dataset": "digits", "model": "mlp", "model_args": {"width": 32, "depth": 1},
        "epochs": 2}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return (install_lion(tmp_path_factory.mktemp("lion")),
            install_testplug(tmp_path_factory.mktemp("testplug")))


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bamsprod", *argv], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _health(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/api/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory,
                targets: tuple[Path, Path]) -> Iterator[LiveServer]:
    """``bamsprod up`` with both plugin packages on its PYTHONPATH (API and worker alike)."""
    from browser_fixtures import ARTIFACTS, LiveServer, free_port

    home = tmp_path_factory.mktemp("plugin-home")
    port = free_port()
    env = env_with(*targets, BAMSPROD_HOME=str(home), BAMSPROD_SSE_POLL_SECONDS="0.1")
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "plugins-server.log"
    log.write_bytes(b"")
    proc = _start(["up", "--host", "127.0.0.1", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or (_health(url) or {}).get("workers"), 120,
                 "bamsprod up with plugins to report a worker")
        assert proc.poll() is None, log.read_text()
        yield LiveServer(url, home, proc, f"127.0.0.1:{port}")
    finally:
        stop_process_group(proc, timeout=30)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bamsprod", *args], cwd=ROOT,
                          env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=300)


def test_lion_sweep_against_bamsprod_succeeds_is_recorded_and_compared(
        live_server: LiveServer) -> None:
    body = {"name": "lion-vs-bamsprod", "base": TINY, "grid": {"optimizer": ["lion", "bamsprod"]},
            "n_seeds": 2}
    with live_server.api() as c:
        r = c.post("/api/sweeps", json=body)
        assert r.status_code == 201, r.text
        sweep, ids = r.json()["sweep"]["id"], r.json()["run_ids"]
        r = c.post("/api/runs", json={**TINY, "optimizer": "lion", "model": "tinymlp",
                                      "model_args": {"width": 16}, "lr": 1e-3, "epochs": 1})
        assert r.status_code == 201, r.text
        both = r.json()["id"]
    runs = live_server.wait_runs([*ids, both], timeout=300)
    assert [r["state"] for r in runs] == ["succeeded"] * 5, [r["error"] for r in runs]
    by_opt: dict[str, list[dict[str, Any]]] = {}
    for r in runs[:4]:
        by_opt.setdefault(r["optimizer"], []).append(r)
    assert {r["seed"] for r in by_opt["lion"]} == {0, 1}
    assert all(r["plugins"] == [LION] for r in by_opt["lion"])
    assert all(r["plugins"] == [] for r in by_opt["bamsprod"])
    assert all(r["config"]["hparams"] == {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}
               for r in by_opt["lion"])
    tiny = runs[4]
    assert tiny["plugins"] == [LION, {**LION, "kind": "model", "name": "tinymlp"}]
    assert tiny["final_quant_error"] is not None and tiny["final_quant_error"] > 0
    with live_server.api() as c:
        r = c.get("/api/compare", params={"sweep": sweep, "baseline": "bamsprod"})
        assert r.status_code == 200, r.text
        groups = {g["fields"]["optimizer"]: g for g in r.json()["groups"]}
        assert set(groups) == {"lion", "bamsprod"}
        assert all(g["n"] == 2 and g["final"]["n"] == 2 for g in groups.values())
        assert sorted(groups["lion"]["run_ids"]) == sorted(r["id"] for r in by_opt["lion"])
        epochs = c.get(f"/api/runs/{by_opt['lion'][0]['id']}/metrics").json()["items"]
        assert [m["epoch"] for m in epochs] == [1, 2] and epochs[-1]["flip_rate"] is not None


def test_a_plugin_shows_in_options_health_and_validation(live_server: LiveServer) -> None:
    with live_server.api() as c:
        opts = c.get("/api/schema/options").json()
        health = c.get("/api/health").json()
        nope = c.post("/api/runs", json={"optimizer": "nope"})
        broken = c.post("/api/runs", json={"optimizer": "broken"})
        bad_hp = c.post("/api/runs", json={"optimizer": "signmom", "hparams": {"warmup": 1000}})
        bad_data = c.post("/api/runs", json={"dataset": "blobs", "model": "tinymlp",
                                             "model_args": {"width": 1}})
        tune = c.post("/api/sweeps?dry_run=true", json={
            "base": {**TINY, "dataset": "blobs"}, "strategy": "tune", "n_seeds": 2,
            "tune": {"optimizers": ["lion", "signmom"], "lr_min": 1e-4, "lr_max": 1e-2,
                     "n_lr": 2, "hparams": {"warmup": [0, 3]}, "stage1_epochs": 1}})
    sign = opts["optimizers"]["signmom"]
    assert sign["default_lr"] == 0.02 and sign["lr"]["log"] and sign["lr"]["max"] == 1.0
    assert set(sign["hparams"]) == {"beta1", "beta2", "warmup", "nesterov"}
    assert sign["hparams"]["warmup"] == {"default": 2, "min": 0.0, "max": 100.0,
                                         "help": "steps at lr / 10", "type": "int", "log": False}
    assert sign["hparams"]["nesterov"]["type"] == "bool"
    assert sign["source"] == {"dist": "bamsprod-testplug", "version": TESTPLUG_VERSION,
                              "builtin": False}
    assert opts["optimizers"]["bamsprod"]["source"]["builtin"]
    assert opts["datasets"]["blobs"]["shape"] == [1, 4, 4]
    assert opts["models"]["tinymlp"]["args"]["width"]["default"] == 64
    fields = {f["name"]: f for f in opts["fields"]}
    assert {"lion", "signmom"} <= set(fields["optimizer"]["choices"])
    assert "broken" not in fields["optimizer"]["choices"]
    assert "blobs" in fields["dataset"]["choices"] and "tinymlp" in fields["model"]["choices"]

    assert health["status"] == "ok"  # a broken plugin never takes the service down
    listed = {(p["name"], p["dist"]): p for p in health["plugins"]}
    assert listed["lion", "bamsprod-lion"]["ok"]
    bad = listed["broken", "bamsprod-testplug"]
    assert not bad["ok"] and "ImportError" in bad["error"] and "notinstalled" in bad["error"]

    assert nope.status_code == 422
    err = nope.json()["detail"][0]
    assert err["loc"] == ["body", "optimizer"] and "lion" in err["msg"] and "signmom" in err["msg"]
    assert broken.status_code == 422 and "notinstalled" in broken.json()["detail"][0]["msg"]
    assert bad_hp.status_code == 422
    assert bad_hp.json()["detail"][0]["loc"] == ["body", "hparams", "warmup"]
    assert bad_data.status_code == 422
    assert bad_data.json()["detail"][0]["loc"] == ["body", "model_args", "width"]
    assert tune.status_code == 200, tune.text
    # per optimizer: 2 rates (x 2 warmups for signmom, which has that hparam) + 2 seeds
    assert tune.json()["count"] == (2 + 2) + (2 * 2 + 2)


def test_the_cli_lists_plugins_and_trains_one(live_server: LiveServer,
                                              targets: tuple[Path, Path]) -> None:
    env = env_with(*targets, BAMSPROD_HOME=str(live_server.home))
    listed = cli(env, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {(e["kind"], e["name"], e["dist"]): e
               for e in map(json.loads, listed.stdout.splitlines())}
    assert entries["optimizer", "signmom", "bamsprod-testplug"]["ok"]
    assert entries["optimizer", "bamsprod", "bamsprod"]["builtin"]
    assert "notinstalled" in entries["optimizer", "broken", "bamsprod-testplug"]["error"]
    table = cli(env, "plugins")
    assert table.returncode == 0 and "broken: ImportError" in table.stdout
    assert "bamsprod-testplug 0.3.0" in table.stdout

    helped = cli(env, "train", "--help")
    assert "signmom" in helped.stdout and "blobs" in helped.stdout
    trained = cli(env, "train", "--optimizer", "signmom", "--dataset", "blobs", "--model", "mlp",
                  "--model-arg", "width=16", "--model-arg", "depth=1", "--hp", "warmup=1",
                  "--hp", "beta1=0.6", "--epochs", "2", "--batch-size", "32", "--json")
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.splitlines()[-1])["result"]
    assert result["state"] == "succeeded" and result["config"]["hparams"] == {
        "beta1": 0.6, "beta2": 0.9, "warmup": 1, "nesterov": False}
    wrong = cli(env, "train", "--optimizer", "nope", "--epochs", "1")
    assert wrong.returncode == 2 and "--optimizer" in wrong.stderr
    assert "signmom" in wrong.stderr


def test_the_form_shows_a_plugins_fields_and_trains_it(page: Any, shoot: Any,
                                                       live_server: LiveServer) -> None:
    page.goto("/runs/new")
    page.wait_for_selector("#run-form[data-ready='1']")
    assert page.locator('[data-field="hparams.warmup"]').count() == 0
    page.select_option('[data-field="optimizer"] select', "signmom")
    for key, value in (("beta1", "0.5"), ("beta2", "0.9"), ("warmup", "2")):
        assert page.locator(f'[data-field="hparams.{key}"] input').input_value() == value
    assert not page.locator('[data-field="hparams.nesterov"] input').is_checked()
    assert page.locator('[data-field="hparams.kappa"]').count() == 0
    assert page.locator('[data-field="lr"] input').input_value() == "0.02"
    help_text = page.locator('[data-field="optimizer"] .help').inner_text()
    assert f"plugin: bamsprod-testplug {TESTPLUG_VERSION}" in help_text
    page.select_option('[data-field="dataset"] select', "blobs")
    assert "120 train / 60 test, 1×4×4, 3 classes" in page.locator(
        '[data-field="dataset"] .help').inner_text()
    page.select_option('[data-field="model"] select', "tinymlp")
    page.locator('[data-field="model_args.width"] input').fill("16")
    page.locator('[data-field="hparams.warmup"] input').fill("1")
    page.locator('[data-field="epochs"] input').fill("1")
    shoot(page, "plugin-form")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").split("/")[-1])
    (run,) = live_server.wait_runs([run_id], timeout=120)
    assert run["state"] == "succeeded", run["error"]
    assert run["config"]["hparams"]["warmup"] == 1
    page.wait_for_selector("#run-state:has-text('succeeded')")
    info = page.locator("#info-table").inner_text()
    assert f"dataset blobs: bamsprod-testplug {TESTPLUG_VERSION}" in info
    assert "optimizer signmom" in info and "model tinymlp: bamsprod-lion 0.1.0" in info
    shoot(page, "plugin-run")


def _retry(url: str, run_id: int) -> int:
    # A change without a JSON body says it comes from a script (the API's CSRF guard).
    return httpx.post(f"{url}/api/runs/{run_id}/retry", timeout=10,
                      headers={"X-Requested-With": "test"}).status_code


def _finished(url: str, run_id: int) -> dict[str, Any] | None:
    run = httpx.get(f"{url}/api/runs/{run_id}", timeout=10).json()
    return run if run["state"] not in ("queued", "running") else None


def test_a_worker_without_the_plugin_version_refuses_the_run_and_retry_works(
        tmp_path: Path, targets: tuple[Path, Path], browser: Any) -> None:
    from browser_fixtures import free_port

    lion, _ = targets
    other = install_lion(tmp_path / "lion2", version="0.2.0")
    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "services.log"
    api = _start(["serve", "--port", str(port)],
                 env_with(lion, BAMSPROD_HOME=str(home)), log)
    workers: list[subprocess.Popen] = []

    def worker(name: str, *paths: Path) -> None:
        for w in workers:
            stop_process_group(w, timeout=30)
        workers[:] = [_start(["worker", "--name", f"{name}@%h"],
                             env_with(*paths, BAMSPROD_HOME=str(home)), log)]

    try:
        wait_for(lambda: _health(url), 60, "the API")
        worker("nolion")
        r = httpx.post(f"{url}/api/runs", json={**TINY, "optimizer": "lion", "epochs": 1,
                                                "name": "needs lion"}, timeout=10)
        assert r.status_code == 201, r.text
        run_id, config = r.json()["id"], r.json()["config"]
        assert r.json()["plugins"] == [LION]
        run = wait_for(lambda: _finished(url, run_id), 120, "the run to end on nolion")
        assert run["state"] == "failed"
        for words in ("plugin optimizer 'lion' from bamsprod-lion 0.1.0", "nolion@",
                      "does not have it installed", "pip install 'bamsprod-lion==0.1.0'",
                      "then retry the run"):
            assert words in run["error"], (words, run["error"])
        assert run["epochs_done"] == 0 and run["config"] == config

        page = browser.new_page()  # the run page says why
        try:
            page.goto(f"{url}/runs/{run_id}")
            page.wait_for_selector("#run-error:not([hidden])")
            assert "does not have it installed" in page.locator("#run-error").inner_text()
            assert "optimizer lion: bamsprod-lion 0.1.0" in page.locator(
                "#info-table").inner_text()
        finally:
            page.close()

        worker("oldlion", other)
        assert _retry(url, run_id) == 200
        run = wait_for(lambda: _finished(url, run_id), 120, "the retry to end on oldlion")
        assert run["state"] == "failed" and "oldlion@" in run["error"]
        assert "has bamsprod-lion 0.2.0" in run["error"] and "0.1.0" in run["error"]

        worker("lion", lion)
        assert _retry(url, run_id) == 200
        run = wait_for(lambda: _finished(url, run_id), 180, "the retry to end on lion")
        assert run["state"] == "succeeded", run["error"]
        assert run["retries"] == 2 and run["config"] == config and run["plugins"] == [LION]
        assert run["worker_host"].startswith("lion@") and run["epochs_done"] == 1
    finally:
        for p in (*workers, api):
            stop_process_group(p, timeout=30)
