"""core.metric_schema.METRICS is the one declaration of the epoch metrics.

The test adds one line to it, in a fresh interpreter that loads the module's own source with
that line inserted before anything imports it, and follows the new metric through the trainer's
record, the SQL table (one Alembic ``add_column`` is the whole schema change), the store, the
API (schema, JSON, CSV), the compare series and the run page's charts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

NEW_METRIC = 'Metric("grad_norm", "grad norm", ".3f", "loss", "grad norm", description="new")'

SCRIPT = textwrap.dedent(
    """
    import csv
    import importlib.util
    import io
    import json
    import re
    import sys
    from dataclasses import fields
    from pathlib import Path

    import bamsprod.core

    # The schema module with one line more, in place before anything imports it.
    spec = importlib.util.find_spec("bamsprod.core.metric_schema")
    source = Path(spec.origin).read_text()
    anchor = "METRICS: tuple[Metric, ...] = (\\n"
    assert source.count(anchor) == 1, "the METRICS tuple moved: update this test's anchor"
    schema = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = schema
    bamsprod.core.metric_schema = schema
    exec(compile(source.replace(anchor, anchor + "    " + NEW_METRIC + ",\\n"), spec.origin,
                 "exec"), schema.__dict__)
    assert schema.METRIC_NAMES[0] == "grad_norm"

    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from fastapi.testclient import TestClient
    from sqlmodel import SQLModel

    from bamsprod.app import store
    from bamsprod.app.store.engine import get_engine, init_db, session_scope
    from bamsprod.app.web.main import create_app
    from bamsprod.app.schemas import EpochMetricPublic
    from bamsprod.app.settings import Settings
    from bamsprod.app.store.tables import EpochMetric
    from bamsprod.core.train import EpochMetrics

    # The trainer's record and the table carry it.
    assert "grad_norm" in {f.name for f in fields(EpochMetrics)}
    column = EpochMetric.__table__.c.grad_norm
    assert isinstance(column.type, sa.Float) and column.nullable
    assert "grad_norm" in EpochMetricPublic.model_fields

    # Today's migrations lack only its column; one add_column (the migration to write) closes
    # the gap.
    home = Path(sys.argv[1])
    url = f"sqlite:///{home / 'bamsprod.db'}"
    init_db(url)
    with get_engine(url).begin() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert [(d[0], d[2], d[3].name) for d in diff] == [
            ("add_column", "epoch_metric", "grad_norm")
        ], diff
        Operations(MigrationContext.configure(conn)).add_column(
            "epoch_metric", sa.Column("grad_norm", sa.Float(), nullable=True)
        )
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []

    settings = Settings(home=home, database_url=url, broker_url="memory://")
    with TestClient(create_app(settings, enqueue=lambda run_id: None)) as client:
        r = client.post("/api/runs", json={"epochs": 1})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        record = EpochMetrics(epoch=1, train_loss=0.5, test_acc=0.75, grad_norm=2.5).to_dict()
        with session_scope(url) as session:  # a worker's part: claim, write the epoch
            assert store.claim_run(session, run_id, "test", "cpu")
            store.record_epoch(session, run_id, record)
            assert store.metric_rows(session, run_id)[0]["grad_norm"] == 2.5

        # The API: its schema, the epochs as JSON and as CSV.
        props = client.get("/openapi.json").json()["components"]["schemas"]["EpochMetricPublic"]
        assert props["properties"]["grad_norm"]["description"] == "new"
        items = client.get(f"/api/runs/{run_id}/metrics").json()["items"]
        assert items[0]["grad_norm"] == 2.5 and items[0]["test_acc"] == 0.75
        text = client.get(f"/api/runs/{run_id}/metrics?format=csv").text
        assert next(csv.DictReader(io.StringIO(text)))["grad_norm"] == "2.5"

        # The compare series.
        r = client.get(f"/api/compare?runs={run_id}&include=runs")
        assert r.status_code == 200, r.text
        assert r.json()["runs"][0]["series"]["grad_norm"] == [2.5]

        # The charts: in the options the dashboard reads, and in the run page's own data.
        def traces(charts):
            return {(c["id"], *t) for c in charts for t in c["traces"]}

        new_trace = ("chart-loss", "grad_norm", "grad norm")
        assert new_trace in traces(client.get("/api/schema/options").json()["charts"])
        page = client.get(f"/runs/{run_id}").text
        data = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page)
        assert new_trace in traces(json.loads(data.group(1))["charts"])
    print("OK")
    """
)


def test_one_new_line_in_the_schema_reaches_the_table_api_and_charts(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"NEW_METRIC = {NEW_METRIC!r}\n{SCRIPT}", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-4000:]
