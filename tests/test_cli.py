"""The ``bamsprod`` command line: train, convex and data, run as a real subprocess."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BAMSPROD = [sys.executable, "-m", "bamsprod"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*BAMSPROD, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_train_json_lines_per_epoch():
    p = run(
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--model-arg",
        "width=64",
        "--hp",
        "kappa=2.0",
        "--seed",
        "1",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [row["epoch"] for row in lines[:-1]] == [1, 2]
    for row in lines[:-1]:
        assert 0.0 <= row["test_acc"] <= 1.0
        assert set(row) >= {
            "train_loss",
            "train_acc",
            "test_loss",
            "quant_error",
            "flip_rate",
            "lr",
            "seconds",
            "quant_error_layers",
        }
    result = lines[-1]["result"]
    assert result["state"] == "succeeded"
    assert result["config"]["hparams"]["kappa"] == 2.0


def test_bad_values_name_the_option():
    p = run("train", "--epochs", "0")
    assert p.returncode != 0 and "--epochs" in p.stderr
    p = run("train", "--hp", "kappa=-1")
    assert p.returncode != 0 and "--hp" in p.stderr and "kappa" in p.stderr
    p = run("train", "--hp", "bogus=1")
    assert p.returncode != 0 and "bogus" in p.stderr
    p = run("train", "--optimizer", "rmsprop")
    assert p.returncode != 0 and "--optimizer" in p.stderr
    p = run("train", "--model-arg", "width")
    assert p.returncode != 0 and "--model-arg" in p.stderr


def test_missing_dataset_names_the_install_command(tmp_path):
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    p = run("train", "--dataset", "cifar10", "--data-dir", str(env_dir), "--epochs", "1")
    assert p.returncode == 2
    assert "cifar" in p.stderr.lower()


def test_convex_writes_chart_and_reports_signs(tmp_path):
    out = tmp_path / "convex.html"
    p = run("convex", "--steps", "600", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    final = json.loads(p.stdout)
    assert final["adam"]["x"] > 0 > final["bamsprod"]["x"]
    assert out.exists() and out.stat().st_size > 1_000_000  # plotly.js is inlined


MARKUP = "[/bold] [link=https://x.example]hidden[/link] [red]x"


def test_user_text_is_printed_plainly(start_api, tmp_path: Path) -> None:
    """Run names, config values and errors reach the terminal as typed: Rich markup in them is
    text (no crash on ``[/bold]``, no hidden ``[link]``), control characters are escaped."""
    import sqlalchemy as sa
    from service_fixtures import make_settings, settings_env

    from bamsprod.app import store
    from bamsprod.app.store.engine import get_engine, init_db, session_scope
    from bamsprod.app.store.tables import Run
    from bamsprod.core.config import RunConfig

    s = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}",
                      broker_url="memory://")
    init_db(s.database_url)
    with session_scope(s.database_url) as session:
        run_id = store.create_run(session, RunConfig(name=MARKUP, tags=["[b]t"])).id
        bell = store.create_run(session, RunConfig(name="x")).id
    with get_engine(s.database_url).begin() as conn:  # stored before validation existed
        conn.execute(sa.update(Run).where(Run.id == bell).values(
            name="\x1b[2J\x07bell", error="\x1b]8;;https://evil.example\x07click\x1b]8;;\x07"))
    url = start_api(s)
    env = {**settings_env(s), "COLUMNS": "250"}
    runs = subprocess.run([*BAMSPROD, "runs", "--url", url], capture_output=True, text=True,
                          env=env, timeout=120)
    assert runs.returncode == 0, runs.stderr
    assert MARKUP in runs.stdout and "\\x1b[2J\\x07bell" in runs.stdout
    assert "\x1b" not in runs.stdout and "\x07" not in runs.stdout
    for shown in (run_id, bell):
        show = subprocess.run([*BAMSPROD, "show", str(shown), "--url", url],
                              capture_output=True, text=True, env=env, timeout=120)
        assert show.returncode == 0, show.stderr
        assert "\x1b" not in show.stdout and "\x07" not in show.stdout
    assert MARKUP in subprocess.run([*BAMSPROD, "show", str(run_id), "--url", url],
                                    capture_output=True, text=True, env=env, timeout=120).stdout
    assert "\\x1b]8;;https://evil.example\\x07click" in show.stdout
    # A server error quoting user text: printed as text too.
    bad = subprocess.run([*BAMSPROD, "runs", "--url", url, "--tag", "[/bold]\x1b"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "\x1b" not in bad.stderr


def test_relative_data_dir_means_this_directory_and_batch_size_one_is_refused(
        tmp_path: Path) -> None:
    from bamsprod.app.commands.run_options import with_run_config

    seen: list = []
    command = with_run_config(lambda config: seen.append(config))
    command(**{**{p.name: p.default.default for p in
                  inspect.signature(command).parameters.values()}, "data_dir": "cifar"})
    assert seen[0].data_dir == str(Path.cwd() / "cifar")
    p = run("train", "--dataset", "digits", "--batch-size", "1", "--epochs", "1", cwd=tmp_path)
    assert p.returncode == 2 and "--batch-size" in p.stderr, p.stderr


LONG = "an-experiment-with-a-long-descriptive-name-" * 3 + "end"
BIDI = "report\u202etxt.exe\ufeff"


def test_piped_and_narrow_output_keeps_every_value(start_api, tmp_path: Path) -> None:
    """Piped into another program, ``runs``, ``show`` and ``data list`` print the header and
    one tab-separated line per row with every value whole (before: "api…", "succ…"); in an
    80-column terminal the cells wrap instead of being cut; ``--json`` gives the API's JSON.
    Invisible formatting (a bidi override, a BOM) is printed as an escape."""
    from service_fixtures import make_settings, settings_env

    from bamsprod.app import store
    from bamsprod.app.store.engine import init_db, session_scope
    from bamsprod.core.config import RunConfig

    s = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}",
                      broker_url="memory://")
    init_db(s.database_url)
    with session_scope(s.database_url) as session:
        run_id = int(store.create_run(session, RunConfig(name=LONG, optimizer="amsbound")).id)
        bidi_id = int(store.create_run(session, RunConfig(name=BIDI)).id)
        assert store.claim_run(session, run_id, "w@host", "cpu")
        store.record_epoch(session, run_id, {"epoch": 1, "train_loss": 0.123456789,
                                             "test_acc": 0.987654321, "quant_error": 0.5})
    url = start_api(s)
    piped = {**settings_env(s), "TTY_COMPATIBLE": "0", "COLUMNS": "80"}

    def cli(*args: str, env: dict[str, str] = piped) -> str:
        where = [] if args[0] == "data" else ["--url", url]
        p = subprocess.run([*BAMSPROD, *args, *where], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    lines = cli("runs").splitlines()
    assert lines[0].split("\t")[:3] == ["id", "name", "state"]
    row = next(line.split("\t") for line in lines if line.startswith(f"{run_id}\t"))
    assert row[1] == LONG and row[2] == "running" and row[3] == "amsbound"
    assert "…" not in "\n".join(lines)
    assert f"{bidi_id}\treport\\u202etxt.exe\\ufeff\t" in "\n".join(lines)
    assert "\u202e" not in "\n".join(lines)

    shown = cli("show", str(run_id)).splitlines()
    assert f"name\t{LONG}" in shown and "config.optimizer\tamsbound" in shown
    epoch = next(line.split("\t") for line in shown if line.startswith("1\t"))
    assert len(epoch) > 4 and "…" not in "\n".join(shown)

    data = cli("data", "list").splitlines()
    assert data[0] == "data set\tinstalled\tpath\tnote" and any(
        line.startswith("digits\t") for line in data)

    page = json.loads(cli("runs", "--json"))
    assert page["total"] == 2 and {r["name"] for r in page["items"]} == {LONG, BIDI}
    detail = json.loads(cli("show", str(run_id), "--json"))
    assert detail["run"]["name"] == LONG and detail["epochs"][0]["epoch"] == 1

    narrow = re.sub(r"\x1b\[[0-9;]*m", "", cli("runs", env={**piped, "TTY_COMPATIBLE": "1"}))
    assert "…" not in narrow, narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    name_column = "".join(line.split("│")[2].strip() for line in narrow.splitlines()
                          if line.startswith("│"))
    assert LONG in name_column  # folded over lines, every character there


@pytest.mark.parametrize("token", ["tök", "abc\ndef", "tab\there"])
def test_a_token_that_cannot_travel_is_a_usage_error(token: str) -> None:
    p = subprocess.run([*BAMSPROD, "runs", "--url", "http://127.0.0.1:9", "--token", token],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "--token" in p.stderr and "printable ASCII" in p.stderr
    assert "Traceback" not in p.stderr and "cannot reach" not in p.stderr
