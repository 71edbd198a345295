"""``bamsprod reproduce``: the report builders on hand-made compare data, and ``--quick`` end to
end (the command starts its own embedded service; the report's numbers are checked against
``GET /api/compare`` on the same database afterwards)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import compare as cmp
from app import reproduce as rp
from app.api.sweeps import expand
from app.schemas import SweepCreate
from core.spec import DEFAULT_LR

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------ hand-made data


def _run(rid: int, opt: str, seed: int, accs: list[float], qe: float = 0.3) -> dict[str, Any]:
    config = {"optimizer": opt, "model": "mlp", "dataset": "mnist", "seed": seed, "lr": 1e-3}
    metrics = [
        {"epoch": e, "test_acc": a, "train_acc": a, "quant_error": qe, "seconds": 1.0}
        for e, a in enumerate(accs, 1)
    ]
    return {"id": rid, "name": f"{opt} {seed}", "state": "succeeded", "seed": seed,
            "config": config, "config_hash": opt, "metrics": metrics}


# Adam reaches its best 0.90 at epoch 4 (target 0.891); BAMSProd gets there at epoch 2 on every
# seed (speed-up 2x); AMSGrad at epoch 3 (BAMSProd 1.5x faster); Bop ends 0.05 lower than
# BAMSProd on every seed.
CURVES = {
    "bamsprod": [0.80, 0.895, 0.90, 0.91],
    "adam": [0.70, 0.80, 0.85, 0.90],
    "amsgrad": [0.75, 0.85, 0.895, 0.90],
    "bop": [0.60, 0.70, 0.80, 0.86],
    "sgd": [0.50, 0.60, 0.70, 0.80],
}


def hand_made_runs() -> list[dict[str, Any]]:
    runs, rid = [], 1
    for opt, curve in CURVES.items():
        for seed in range(3):
            shift = 0.001 * seed  # a little spread between seeds, the same for all optimizers
            runs.append(_run(rid, opt, seed, [a + shift for a in curve],
                             qe=0.0 if opt == "bop" else 0.3))
            rid += 1
    return runs


def hand_made_compares() -> dict[str, dict[str, Any]]:
    runs = hand_made_runs()
    adam = cmp.compare(runs, group_by=["optimizer"], baseline="adam")
    return {
        "adam": adam,
        "amsgrad": cmp.compare(runs, group_by=["optimizer"], baseline="amsgrad",
                               target=adam["target"]),
        "bop": cmp.compare(runs, group_by=["optimizer"], baseline="bop",
                           target=adam["target"]),
    }


def hand_made_report() -> dict[str, Any]:
    compares = hand_made_compares()
    rows = rp.task_rows(compares)
    plan = rp.make_plan(quick=True)
    return {
        "created": "2026-01-01T00:00:00Z",
        "wall_seconds": 125.0,
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "torch": "2.13.0+cpu"},
        "devices": ["cpu"],
        "service": {"url": "http://x", "mode": "embedded"},
        "n_runs": 15,
        "note": "",
        "plan": plan.to_dict(),
        "tasks": [{
            "key": "mlp-mnist", "title": "mlp on MNIST", "sweep_ids": [1], "run_ids": [],
            "states": {"succeeded": 15}, "target": compares["adam"]["target"],
            "budget": compares["adam"]["budget"], "rows": rows,
            "claims": rp.claim_summary(rows),
            "configs": {o: {"lr": 1e-3, "hparams": {}} for o in CURVES},
            "compare": {"adam": rp.slim_compare(compares["adam"], keep_series=True),
                        "amsgrad": rp.slim_compare(compares["amsgrad"]),
                        "bop": rp.slim_compare(compares["bop"])},
        }],
    }


# ---------------------------------------------------------------------------------- plan


def test_plan_sizes_and_overrides():
    full = rp.make_plan()
    assert full.seeds == (0, 1, 2) and len(full.tasks) == 3 and full.n_runs == 54
    assert {r.optimizer for r in full.recipes} == set(rp.OPTIMIZER_ORDER)
    quick = rp.make_plan(quick=True, epochs=2)
    assert quick.seeds == (0,) and all(t.epochs == 2 for t in quick.tasks)
    assert [t.key for t in quick.tasks] == ["mlp-mnist", "mlp-fashion", "binarynet-fashion"]
    with pytest.raises(ValueError):
        rp.make_plan(seeds=0)


def test_bop_recipe_is_the_spec_recipe():
    bop = next(r for r in rp.RECIPES if r.optimizer == "bop")
    assert bop.lr == 1e-2 and bop.hparams == {"gamma": 1e-4, "threshold": 1e-8}


def _lr_by_optimizer(bodies: list[dict[str, Any]]) -> dict[str, set[float]]:
    out: dict[str, set[float]] = {}
    for body in bodies:
        for config in expand(SweepCreate.model_validate(body)):
            out.setdefault(config.optimizer, set()).add(config.lr)  # type: ignore[arg-type]
    return out


def test_default_recipes_make_one_sweep_per_task_with_each_lr():
    task = rp.QUICK_TASKS[0]
    bodies = rp.sweep_bodies(task, rp.RECIPES, [0, 1])
    assert len(bodies) == 1 and bodies[0]["grid"] == {"optimizer": list(rp.OPTIMIZER_ORDER)}
    lrs = _lr_by_optimizer(bodies)
    assert lrs == {r.optimizer: {r.lr} for r in rp.RECIPES}
    configs = expand(SweepCreate.model_validate(bodies[0]))
    assert len(configs) == 12 and {"reproduce", task.key} <= set(configs[0].tags)


def test_a_non_default_lr_makes_one_sweep_per_optimizer():
    recipes = [*rp.RECIPES[:-1], rp.Recipe("sgd", 0.05, {"momentum": 0.9})]
    assert DEFAULT_LR["sgd"] != 0.05
    bodies = rp.sweep_bodies(rp.QUICK_TASKS[0], recipes, [0])
    assert len(bodies) == len(recipes)
    assert _lr_by_optimizer(bodies)["sgd"] == {0.05}


def test_compare_params_sweep_or_runs():
    assert rp.compare_params([1, 2], [7], "adam") == {
        "group_by": "optimizer", "baseline": "adam", "sweep": 7}
    p = rp.compare_params([1, 2], [7, 8], "bop", 0.5)
    assert p["runs"] == "1,2" and p["target"] == 0.5 and "sweep" not in p


# ------------------------------------------------------------------------------ measures


def test_task_rows_from_hand_made_compares():
    rows = {r["optimizer"]: r for r in rp.task_rows(hand_made_compares())}
    assert list(rows) == ["bamsprod", "adam", "amsgrad", "bop", "sgd"]  # the table's order
    b = rows["bamsprod"]
    assert b["final"]["mean"] == pytest.approx(0.911)
    assert b["to_target"] == {"mean": 2.0, "std": 0.0, "reached": 3, "n": 3}
    assert b["speedup_vs_adam"]["mean"] == pytest.approx(2.0)
    assert b["speedup_vs_adam"]["paired"] is True
    assert b["speedup_vs_amsgrad"]["mean"] == pytest.approx(1.5)
    assert b["diff_vs_bop"]["mean"] == pytest.approx(0.05)
    assert b["diff_vs_bop"]["paired"] is True
    assert rows["sgd"]["to_target"]["reached"] == 0
    assert rows["sgd"]["speedup_vs_adam"]["mean"] is None
    claims = rp.claim_summary(list(rows.values()))
    assert claims["gain_vs_bop_points"]["mean"] == pytest.approx(5.0)
    assert claims["speedup_vs_adam"]["mean"] == pytest.approx(2.0)


def test_formatting():
    assert rp.fmt_pm({"mean": 0.9123, "std": 0.0045}, 100) == "91.23 ± 0.45"
    assert rp.fmt_pm({"mean": 0.05, "std": None}, 100, sign=True) == "+5.00"
    assert rp.fmt_pm(None) == "n/a" and rp.fmt_pm({"mean": None}) == "n/a"
    assert rp.fmt_epochs({"mean": None, "std": None, "reached": 0, "n": 3}) == "not reached (0/3)"
    assert rp.fmt_epochs({"mean": 2.0, "std": 0.0, "reached": 3, "n": 3}) == "2.0 ± 0.0 (3/3)"
    assert rp.fmt_speedup({"mean": 1.5, "std": None, "paired": False}).endswith(
        "(ratio of means)")


def test_markdown_report_has_rows_claims_and_header():
    md = rp.markdown_report(hand_made_report())
    assert "wall time: 2.1 min" in md and "2 cores" in md and "torch 2.13.0+cpu" in md
    assert "≈ 1.2×" in md and "≈ +3.7" in md
    assert "| mlp on MNIST | 2.00 ± 0.00× | 1.50 ± 0.00× | +5.00 ± 0.00 |" in md
    assert re.search(r"\| BAMSProd \| 0\.001 \| 91\.10 ± 0\.10 \| 91\.10 ± 0\.10 "
                     r"\| 2\.0 ± 0\.0 \(3/3\) \| 2\.00 ± 0\.00× \| 1\.50 ± 0\.00× "
                     r"\| \+5\.00 ± 0\.00 \|", md)
    assert "| SGD-momentum |" in md and "not reached (0/3)" in md
    assert "faster than Adam (2.00× vs the paper's 1.2×)" in md
    assert "5.00 points above Bop" in md


def test_html_report_inlines_plotly_and_draws_bands():
    page = rp.html_report(hand_made_report())
    assert not re.search(r"<script[^>]+src=", page)  # no CDN: plotly.js is inlined
    assert page.count("Plotly.newPlot") == 1  # one figure for the one task
    assert len(page) > 1_000_000  # plotly.js itself is inlined
    assert "toself" in page and "quantization error" in page
    assert "<td>BAMSProd</td>" in page


def test_slim_compare_drops_per_run_series():
    compares = hand_made_compares()
    slim = rp.slim_compare(compares["bop"])
    assert all("series" not in g for g in slim["groups"])
    assert all("series" not in r for r in slim["runs"])
    assert rp.task_rows({k: rp.slim_compare(v) for k, v in compares.items()}) == rp.task_rows(
        compares)


# ------------------------------------------------------------------------------ end to end


def _cell_numbers(md: str, title: str) -> dict[str, list[str]]:
    """Rows of the table under ``## title``: optimizer name -> cells."""
    section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in rp.NAMES.values():
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    out = tmp_path / "repro"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "reproduce", "--quick", "--out", str(out), "--poll", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "reproduction.md").read_text()
    page = (out / "reproduction.html").read_text()
    report = json.loads((out / "reproduction.json").read_text())
    assert not re.search(r"<script[^>]+src=", page) and page.count("Plotly.newPlot") == 3
    assert report["n_runs"] == 18 and report["machine"]["cores"]

    home = out / "service"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'bamsprod.db'}",
                        broker_url=f"sqla+sqlite:///{home / 'broker.db'}")
    app = create_app(settings, enqueue=lambda _id: None, broker_check=lambda: True,
                     workers_seen=lambda: [], pages=False)
    with TestClient(app) as client:
        for task in report["tasks"]:
            assert task["states"] == {"succeeded": 6}
            rows = _cell_numbers(md, task["title"])
            assert set(rows) == set(rp.NAMES.values()), task["title"]
            api: dict[str, Any] = {}
            target = None
            for base in rp.BASELINES:
                params = rp.compare_params(task["run_ids"], task["sweep_ids"], base, target)
                r = client.get("/api/compare", params=params)
                assert r.status_code == 200, r.text
                api[base] = r.json()
                target = target or api[base]["target"]
            assert task["target"] == pytest.approx(api["adam"]["target"])
            expected = rp.task_rows(api)
            assert expected == task["rows"]
            lrs = {o: c["lr"] for o, c in task["configs"].items()}
            for row in expected:
                cells = rows[rp.NAMES[row["optimizer"]]]
                assert cells[1] == rp.fmt_lr(lrs[row["optimizer"]])
                assert cells[2] == rp.fmt_pm(row["final"], 100)
                assert cells[3] == rp.fmt_pm(row["best"], 100)
                assert cells[4] == rp.fmt_epochs(row["to_target"])
                assert cells[5] == rp.fmt_speedup(row["speedup_vs_adam"])
                assert cells[6] == rp.fmt_speedup(row["speedup_vs_amsgrad"])
                assert cells[7] == rp.fmt_pm(row["diff_vs_bop"], 100, sign=True)
                group = rp.groups_by_optimizer(api["adam"])[row["optimizer"]]
                assert group["n"] == 1 and group["final"]["mean"] is not None
