"""Where ``data_dir`` may point (``BAMSPROD_DATA_ROOTS``), and no server paths in what readers
see (``app.data_roots``), against the real API, database and worker code."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bamsprod.app import store
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import session_scope
from bamsprod.app.web.main import create_app
from bamsprod.core.config import RunConfig
from bamsprod.worker.tasks import execute_run

TINY = {"model": "mlp", "dataset": "cifar10", "model_args": {"width": 8}, "epochs": 1}


@pytest.fixture
def rooted(db_url: str, tmp_path: Path) -> tuple[TestClient, Settings, Path]:
    root = tmp_path / "srv" / "data"
    root.mkdir(parents=True)
    s = Settings(home=tmp_path / "home", database_url=db_url, broker_url="memory://",
                 data_roots=[root])
    app = create_app(s, enqueue=lambda i: None, broker_check=lambda: True,
                     workers_seen=lambda: ["w"])
    with TestClient(app, headers={"X-Requested-With": "t"}) as client:
        yield client, s, root


def test_data_dir_must_lie_in_a_data_root(rooted) -> None:
    client, _, root = rooted
    assert client.post("/api/runs", json={**TINY, "data_dir": str(root / "cifar")}
                       ).status_code == 201
    for outside in ("/etc", f"{root}/../../../etc", f"{root}X/cifar", "~/cifar"):
        r = client.post("/api/runs", json={**TINY, "data_dir": outside})
        assert r.status_code == 422, (outside, r.text)
        err = r.json()["detail"][0]
        assert err["loc"] == ["body", "data_dir"] and "BAMSPROD_DATA_ROOTS" in err["msg"]
    sweep = {"name": "s", "base": {**TINY, "data_dir": "/etc"}, "grid": {"seed": [0, 1]}}
    r = client.post("/api/sweeps", json=sweep)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base", "data_dir"]


def test_another_users_home_is_a_422_not_a_worker_error(client) -> None:
    r = client.post("/api/runs", json={**TINY, "data_dir": "~nosuchuser/cifar"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "data_dir"]
    assert "~user" in r.json()["detail"][0]["msg"]


def test_the_worker_follows_links_out_of_the_roots_and_refuses(rooted, tmp_path: Path) -> None:
    """A link inside a root that points outside it passes the API's check on the text; the
    worker, which opens it, resolves it and fails the run instead of reading elsewhere."""
    _, s, root = rooted
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with session_scope(s.database_url) as session:
        run_id = int(store.create_run(session, RunConfig(**TINY, data_dir=str(root / "link"))).id)
    assert execute_run(run_id, settings=s) == "failed"
    with session_scope(s.database_url) as session:
        run = store.get_run(session, run_id)
    assert "BAMSPROD_DATA_ROOTS" in run.error and run.attempts == 1


def test_failed_runs_show_no_paths_of_the_worker(db_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "worker-home" / "data"
    root.mkdir(parents=True)
    monkeypatch.setenv("BAMSPROD_DATA_DIR", str(root))  # the worker's default data root
    s = Settings(home=tmp_path / "bamsprod-home", database_url=db_url, broker_url="memory://")
    with session_scope(db_url) as session:
        run_id = int(store.create_run(session, RunConfig(**TINY)).id)
    assert execute_run(run_id, settings=s) == "failed"
    with session_scope(db_url) as session:
        error = store.get_run(session, run_id).error
    assert "cifar10" in error and "<data root>" in error, error
    assert str(root) not in error and str(tmp_path) not in error
