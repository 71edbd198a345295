"""docker-compose.yml agrees with the settings and the design: services, ports, env, GPU.

The file is read the way compose reads it: Debian's ``docker-compose config`` interpolates the
variables and merges the YAML anchors (no container engine needed). Without ``docker-compose``
these tests skip, or with ``CI=true`` fail (``scripts/services.sh`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from service_fixtures import service_missing

from bamsprod.app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {"BAMSPROD_API_TOKEN": "test-token", "POSTGRES_PASSWORD": "test-pw"}


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on the file with exactly ``env`` (no ``.env``, no BAMSPROD_*)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        service_missing("docker-compose", FileNotFoundError(
            "not on PATH (scripts/services.sh installs it: apt-get install docker-compose)"))
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("BAMSPROD_", "POSTGRES_", "COMPOSE_"))}
    return subprocess.run(
        [exe, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config"],
        env={**base, **env}, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = compose_config(tmp_path_factory.mktemp("compose"), **SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.parametrize("unset", ["BAMSPROD_API_TOKEN", "POSTGRES_PASSWORD"])
@pytest.mark.parametrize("empty", [False, True], ids=["unset", "empty"])
def test_a_missing_secret_is_an_error(tmp_path: Path, unset: str, empty: bool) -> None:
    env = {k: v for k, v in SECRETS.items() if k != unset}
    if empty:
        env[unset] = ""
    done = compose_config(tmp_path, **env)
    assert done.returncode != 0
    assert f"set {unset}" in done.stderr, done.stderr


def test_every_bamsprod_name_in_the_file_is_a_setting() -> None:
    """Also the names only interpolated (``${BAMSPROD_...}``), not only the environment keys."""
    fields = {f"BAMSPROD_{name.upper()}" for name in Settings.model_fields}
    names = set(re.findall(r"\bBAMSPROD_[A-Z0-9_]+", COMPOSE_FILE.read_text()))
    assert "BAMSPROD_API_TOKEN" in names and "BAMSPROD_WORKER_CONCURRENCY" in names
    assert not names - fields, f"{names - fields} are not app.settings.Settings fields"


def test_the_password_reaches_postgres_and_the_url(compose: dict[str, Any]) -> None:
    assert env_of(compose["services"]["postgres"])["POSTGRES_PASSWORD"] == "test-pw"
    for name in ("api", "worker"):
        env = env_of(compose["services"][name])
        assert ":test-pw@postgres:5432/" in env["BAMSPROD_DATABASE_URL"]
        assert env["BAMSPROD_API_TOKEN"] == "test-token"
    assert "bamsprod:bamsprod@" not in COMPOSE_FILE.read_text()


def test_worker_concurrency_is_one_variable(tmp_path: Path, compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "--concurrency" not in worker["command"]
    assert Settings(worker_concurrency=env_of(worker)["BAMSPROD_WORKER_CONCURRENCY"]
                    ).worker_concurrency == 2
    done = compose_config(tmp_path, **SECRETS, BAMSPROD_WORKER_CONCURRENCY="4")
    assert done.returncode == 0, done.stderr
    env = env_of(yaml.safe_load(done.stdout)["services"]["worker"])
    assert env["BAMSPROD_WORKER_CONCURRENCY"] == "4"


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_bamsprod_worker_reads_its_concurrency_from_the_environment(
    service_settings: Settings, start_worker: Any
) -> None:
    """What the compose worker runs: ``bamsprod worker`` with BAMSPROD_WORKER_CONCURRENCY=2."""
    from bamsprod.app.queue import celery_app

    s = service_settings.model_copy(update={"worker_concurrency": 2})
    w = start_worker(s, concurrency=None)
    stats = celery_app.control.inspect([w.name], timeout=5).stats() or {}
    assert stats[w.name]["pool"]["max-concurrency"] == 2, stats


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    for name in ("api", "worker", "redis", "postgres"):
        assert "test" in services[name].get("healthcheck", {}), f"{name} has no health check"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"


def test_api_port_matches_its_command(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    port = command[command.index("--port") + 1]
    assert {"published": int(port), "target": int(port)} in api["ports"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert f":{port}/api/health" in " ".join(api["healthcheck"]["test"])


def test_env_names_are_settings_fields(compose: dict[str, Any]) -> None:
    fields = {f"BAMSPROD_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker"):
        env = env_of(compose["services"][name])
        unknown = {k for k in env if k.startswith("BAMSPROD_")} - fields
        assert not unknown, f"{name}: {unknown} are not app.settings.Settings fields"
        s = Settings(**{k.removeprefix("BAMSPROD_").lower(): v for k, v in env.items()})
        assert s.database_url.startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in s.database_url
        assert s.broker_url == "redis://redis:6379/0" and not s.embedded
    pg_env = env_of(compose["services"]["postgres"])
    url = env_of(compose["services"]["api"])["BAMSPROD_DATABASE_URL"]
    assert url.endswith(f"/{pg_env['POSTGRES_DB']}")
    assert f"//{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@" in url


def test_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    assert worker["command"][:2] == ["bamsprod", "worker"]


def test_database_has_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    named = [v.split(":", 1)[0] for v in volumes if not v.startswith((".", "/"))]
    assert any(v in compose.get("volumes", {}) for v in named)
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in volumes)


def test_dockerfile_pins_torch_and_installs_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text
    assert "pip install -e ." in text or "pip install ." in text
