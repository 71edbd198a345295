"""docker-compose.yml agrees with the settings and the design: services, ports, env, GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


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
    assert f"{port}:{port}" in [str(p) for p in api["ports"]]
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
    assert any(v.endswith(":/var/lib/postgresql/data") for v in volumes)


def test_dockerfile_pins_torch_and_installs_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text
    assert "pip install -e ." in text or "pip install ." in text
