"""Service settings from the environment (prefix ``BAMSPROD_``), via pydantic-settings.

The embedded default needs nothing set: a SQLite database and a SQLite-backed Celery broker
under ``BAMSPROD_HOME``. Scale-out sets ``BAMSPROD_DATABASE_URL`` (PostgreSQL) and
``BAMSPROD_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from platformdirs import user_data_dir
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bamsprod.core.config import MAX_EPOCHS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAMSPROD_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path(user_data_dir("bamsprod")))
    database_url: str = ""
    broker_url: str = ""
    queue: str = "bamsprod"
    # Bearer tokens (see app/api/security.py): unset, the API is open (the embedded default).
    api_token: str | None = Field(default=None, repr=False)
    read_token: str | None = Field(default=None, repr=False)
    data_dir: Path | None = None
    # Directories a run's data_dir must lie in (app.data_roots); empty: any. JSON or commas.
    data_roots: Annotated[list[Path], NoDecode] = []
    checkpoint_dir: Path | None = None
    # torch intra-op threads per worker process (unset: torch's default, one per core). Small
    # BNNs on a shared machine often train faster with 1.
    torch_threads: int | None = Field(default=None, ge=1, le=1024)
    # Runs one `bamsprod worker` trains at once (its --concurrency default); unset: 1, the solo
    # pool. docker-compose.yml sets it per GPU worker.
    worker_concurrency: int | None = Field(default=None, ge=1, le=64)
    # The niceness training processes run at (at least): on a machine the API shares, requests
    # come first (training loses little: the API idles between requests). 0: as started.
    worker_nice: int = Field(default=10, ge=0, le=19)
    # Database connections kept open per process (PostgreSQL), and extra ones allowed under
    # load; a request beyond both waits for a free one. Overflow ones are closed after use.
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    db_max_overflow: int = Field(default=10, ge=0, le=1000)
    # ... and waits at most this long for one (then the API answers 503 with Retry-After).
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A write waits this long for another process's lock (SQLite's busy timeout, PostgreSQL's
    # lock_timeout); then the API answers 503 and workers retry.
    db_busy_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_sweep_runs: int = 500
    # This server's limit, at most the run config's own (core.config.MAX_EPOCHS).
    max_epochs: int = Field(default=MAX_EPOCHS, ge=1, le=MAX_EPOCHS)
    # How often the reconciler re-queues runs whose message was lost (queued for this long).
    reconcile_seconds: float = 30.0
    # A running run whose worker has not beaten its heartbeat for this long is stale: the
    # reconciler re-queues it, and cancel or delete end it at once. Workers beat every tenth.
    stale_running_seconds: float = Field(default=15.0, gt=0, le=30)
    # Claims of one run before it is given up: each time its worker was lost (SIGKILL, out of
    # memory) before it ended. Then the run ends failed, saying why.
    max_attempts: int = Field(default=3, ge=1, le=100)
    # The worker's cache of decoded data sets, least recently used evicted beyond this many
    # bytes (unset: core.data's default, 512 MiB; 0: no cache).
    data_cache_bytes: int | None = Field(default=None, ge=0)
    # Parameter memory (weights, gradients, optimizer state) a submitted run may need.
    max_param_bytes: int = Field(default=4 * 2**30, ge=1)
    # Activation memory one training step of a submitted run may need (core.model_size's
    # estimate, which grows with batch_size).
    max_activation_bytes: int = Field(default=8 * 2**30, ge=1)
    # Server-Sent Events: how often the shared poller reads new epochs.
    sse_poll_seconds: float = 0.25
    # Server-Sent Events: a comment line this often keeps idle connections open through proxies.
    sse_heartbeat_seconds: float = 15.0
    # The largest request body the API accepts (413 beyond it).
    max_body_bytes: int = 1_000_000
    # bamsprod serve/up (app.web.server): a request head must arrive within this long, a body
    # within this long after its head (408 and closed otherwise), and at most this many
    # connections are open at once (one more: 503 with Retry-After).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=512, ge=1, le=100_000)
    # Finished comparisons kept per API process, in bytes of answer (0: none).
    compare_cache_bytes: int = Field(default=32 * 2**20, ge=0)
    # GET /api/health gives the broker and worker checks this long.
    health_timeout_seconds: float = 3.0
    # A submit waits this long for the broker to take the run's message; then the run stays
    # queued in SQL and the reconciler sends it once the broker answers (a hung broker).
    enqueue_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # How long a worker waits for another process's build of BAMSProd's C++ kernel before it
    # trains on the foreach path instead (core.optim._fused reads it from the environment).
    kernel_wait_seconds: float = Field(default=300.0, ge=0, le=86_400)

    # --- request security (app/api/security.py) ---
    # Host names the API answers to (400 for any other Host header: DNS rebinding); "*" for any.
    # JSON or comma-separated: BAMSPROD_ALLOWED_HOSTS=lab.example.org,127.0.0.1
    allowed_hosts: Annotated[list[str], NoDecode] = [
        "127.0.0.1", "localhost", "[::1]", "testserver"]  # IPv6 in brackets, as in Host
    # Signs the short-lived event-stream tickets; unset, one is drawn at random per process.
    ticket_secret: str | None = Field(default=None, repr=False)
    ticket_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Open event streams per API process; one more is a 503 with Retry-After (each costs memory
    # and a share of every poll, and hundreds slowed every request).
    max_sse_connections: int = Field(default=200, ge=1)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _roots(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [
                r.strip() for r in text.split(",") if r.strip()]
        return value

    @field_validator("data_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.expanduser().is_absolute():
                raise ValueError(f"data root {root} must be an absolute directory")
        return [r.expanduser() for r in roots]

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [
                h.strip() for h in text.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.home = self.home.expanduser()
        # An empty token (``BAMSPROD_API_TOKEN=``) means none, never "the empty string".
        self.api_token = (self.api_token or "").strip() or None
        self.read_token = (self.read_token or "").strip() or None
        for name in ("api_token", "read_token"):
            token = getattr(self, name)
            if token is not None and not (token.isascii() and token.isprintable()):
                # It travels in an HTTP header: printable ASCII only (e.g. `openssl rand -hex 32`).
                raise ValueError(f"{name} must be printable ASCII characters")
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'bamsprod.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.home / 'broker.db'}"
        # Accept the common postgres:// spellings; we use psycopg 3.
        for prefix in ("postgres://", "postgresql://"):
            if self.database_url.startswith(prefix):
                self.database_url = "postgresql+psycopg://" + self.database_url[len(prefix) :]
        if self.checkpoint_dir is None:
            self.checkpoint_dir = self.home / "checkpoints"
        return self

    def run_checkpoint_dir(self, run_id: int) -> Path:
        """Where run ``run_id`` keeps its checkpoint: ``<checkpoint_dir>/<run id>``. The worker
        writes and resumes it there; the API deletes it with the run."""
        assert self.checkpoint_dir is not None  # set by the validator above
        return Path(self.checkpoint_dir) / str(int(run_id))

    def stale_before(self) -> datetime:
        """Running runs whose heartbeat is older than this are stale."""
        return datetime.now(UTC) - timedelta(seconds=self.stale_running_seconds)

    @property
    def embedded(self) -> bool:
        """True when the broker is the server-less SQLite transport."""
        return self.broker_url.startswith("sqla+")

    def ensure_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
