"""The ``bamsprod`` command line: train, convex and data, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BAMSPROD = [sys.executable, "-m", "app"]


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
