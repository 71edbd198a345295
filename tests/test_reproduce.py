"""``bamsprod reproduce``: the plans and their cost, the paired intervals and verdicts against
hand computations, the report builders on hand-made compare data, the sweep bodies against the
real API, and ``--plan quick`` end to end (its own embedded service; the report's numbers are
then checked against ``GET /api/compare`` on the same database)."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bamsprod.app import compare as cmp
from bamsprod.app import reproduce_cost as rc
from bamsprod.app import reproduce_md as rmd
from bamsprod.app import reproduce_plan as rp
from bamsprod.app import reproduce_stats as rs
from bamsprod.app.reproduce_html import html_report
from bamsprod.core.spec import DEFAULT_LR

ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105, 9: 2.262157163}  # Student-t tables

# ------------------------------------------------------------------------ hand-made data


def _run(rid: int, opt: str, seed: int, accs: list[float], secs: float = 1.0,
         hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"optimizer": opt, "model": "mlp", "dataset": "mnist", "seed": seed, "lr": 1e-3,
              "hparams": hparams or {}}
    metrics = [{"epoch": e, "test_acc": a, "val_acc": a, "train_acc": a, "quant_error": 0.3,
                "seconds": secs} for e, a in enumerate(accs, 1)]
    return {"id": rid, "name": f"{opt} {seed}", "state": "succeeded", "seed": seed,
            "config": config, "config_hash": f"{opt}{sorted((hparams or {}).items())}",
            "metrics": metrics}


# Adam reaches its best 0.90 at epoch 4 on every seed (target 0.891), crossing the target 82%
# of the way from epoch 3 to 4 (app.compare.target interpolates). BAMSProd crosses it within
# epochs 2, 4 and 3 (speed-ups about 2, 1, 4/3) at 1.5 s per epoch (Adam 1 s), and ends 5, 3
# and 4 points above Bop.
ADAM = [0.70, 0.80, 0.85, 0.90]
BAMS = {0: [0.80, 0.895, 0.90, 0.91], 1: [0.70, 0.80, 0.85, 0.90], 2: [0.75, 0.85, 0.895, 0.905]}
BOP_FINAL = {0: 0.86, 1: 0.87, 2: 0.865}
# Epochs to 0.891, interpolated between the epochs that straddle it.
ADAM_REACH = 3 + 0.041 / 0.05
BAMS_REACH = {0: 1 + 0.091 / 0.095, 1: ADAM_REACH, 2: 2 + 0.041 / 0.045}


def hand_made_runs() -> list[dict[str, Any]]:
    runs = []
    for seed in range(3):
        runs.append(_run(len(runs) + 1, "bamsprod", seed, BAMS[seed], secs=1.5))
        runs.append(_run(len(runs) + 1, "adam", seed, ADAM))
        runs.append(_run(len(runs) + 1, "bop", seed, [0.6, 0.7, 0.8, BOP_FINAL[seed]]))
        runs.append(_run(len(runs) + 1, "sgd", seed, [0.5, 0.6, 0.7, 0.8]))
    return runs


def hand_made_compares(runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    runs = runs or hand_made_runs()
    adam = cmp.compare(runs, group_by=["optimizer"], baseline="adam")
    t = adam["target"]
    return {"adam": adam,
            "adam_time": cmp.compare(runs, group_by=["optimizer"], baseline="adam", target=t,
                                     x="time"),
            "bop": cmp.compare(runs, group_by=["optimizer"], baseline="bop", target=t)}


def hand_made_map() -> dict[str, Any]:
    """Two BAMSProd cells next to the hand-made Adam and Bop: (kappa 1, gamma 1e-3) reaches the
    target within epoch 2 on every seed and ends 5 points above Bop's 0.86-0.87; (kappa 4, gamma
    1e-2) never reaches it."""
    runs = [r for r in hand_made_runs() if r["config"]["optimizer"] in ("adam", "bop")]
    for seed in range(3):
        runs.append(_run(100 + seed, "bamsprod", seed, [0.8, 0.895, 0.9, BOP_FINAL[seed] + 0.05],
                         hparams={"kappa": 1.0, "gamma": 1e-3}))
        runs.append(_run(200 + seed, "bamsprod", seed, [0.5, 0.6, 0.7, 0.8],
                         hparams={"kappa": 4.0, "gamma": 1e-2}))
    by = ["optimizer", "hparams.kappa", "hparams.gamma"]
    adam = cmp.compare(runs, group_by=by, baseline="adam")
    return {"adam": adam, "bop": cmp.compare(runs, group_by=by, baseline="bop",
                                             target=adam["target"])}


def hand_made_report() -> dict[str, Any]:
    plan = rp.make_plan("quick")
    compares = hand_made_compares()
    tuning = [{"optimizer": o, "criterion": "best_val_acc", "searched": {"lr": [1e-4, 1e-3]},
               "stage1_run_ids": [1, 2], "chosen": {"lr": 1e-3}, "value": 0.9,
               "best_run_id": 2, "stage2_run_ids": [3, 4, 5], "sweep_id": 1,
               "stage1_states": {"succeeded": 1, "pruned": 1}}
              for o in ("bamsprod", "adam", "bop", "sgd")]
    tuning[-1]["searched"] = {"lr": [1e-3, 1e-2, 1e-1]}  # SGD's choice is the lowest rate
    return {
        "format": 2, "created": "2026-01-01T00:00:00Z", "wall_seconds": 125.0,
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "torch": "2.13.0+cpu"},
        "devices": ["cpu"], "workers": ["w@host"],
        "service": {"url": "http://x", "mode": "embedded"}, "note": "",
        "plan": plan.to_dict(), "cost": rc.plan_cost(plan),
        "compute": {"runs": 20, "run_seconds": 90.0, "run_seconds_by_device": {"cpu": 90.0},
                    "epoch_seconds": 80.0},
        "tasks": [{"key": "mlp-mnist", "title": "mlp on MNIST", "states": {"succeeded": 12},
                   "tuning": tuning, "run_ids": [], "stage2": {},
                   "target": compares["adam"]["target"], "budget": compares["adam"]["budget"],
                   "configs": {}, "compare": {k: rs.slim_compare(v, keep_series=k == "adam")
                                              for k, v in compares.items()}}],
        "sensitivity": {"task": "mlp-fashion", "sweep_id": 9, "run_ids": [], "lr": 1e-3,
                        "kappas": [1.0, 4.0], "gammas": [1e-3, 1e-2], "seeds": [0, 1, 2],
                        "target": 0.891, "states": {"succeeded": 6},
                        "compare": {k: rs.slim_compare(v) for k, v in hand_made_map().items()}},
    }


# ------------------------------------------------------------------- intervals, verdicts


def test_t_quantile_matches_the_tables():
    for df, q in T975.items():
        assert rs.t_quantile(0.95, df) == pytest.approx(q, abs=1e-8)
    assert rs.t_quantile(0.95, 1) == pytest.approx(math.tan(0.95 * math.pi / 2))
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (3, 7, 30, 200):
        for level in (0.8, 0.95, 0.99):
            assert rs.t_quantile(level, df) == pytest.approx(
                scipy_stats.t.ppf((1 + level) / 2, df), rel=1e-9)


def _hand_ci(values: list[float]) -> tuple[float, float, float]:
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T975[len(values) - 1] * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def test_paired_intervals_against_a_hand_computation():
    rows = {r["optimizer"]: r for r in rs.task_rows(hand_made_compares())}
    b = rows["bamsprod"]
    for key, values in (("speedup_epochs", [ADAM_REACH / BAMS_REACH[k] for k in range(3)]),
                        ("speedup_seconds", [ADAM_REACH / (1.5 * BAMS_REACH[k])
                                             for k in range(3)]),
                        ("diff_vs_bop", [5.0, 3.0, 4.0])):
        mean, lo, hi = _hand_ci(values)
        ci = b[key]
        assert ci["paired"] and ci["n"] == 3, key
        assert (ci["mean"], ci["lo"], ci["hi"]) == pytest.approx((mean, lo, hi)), key
    # the epochs interval sits on the API's own paired statistic
    api = rs.groups_by_optimizer(hand_made_compares()["adam"])["bamsprod"]["speedup_paired"]
    assert b["speedup_epochs"]["mean"] == pytest.approx(api["mean"])
    assert rows["sgd"]["speedup_epochs"] is None  # never reached: nothing to pair
    assert rows["bop"]["diff_vs_bop"]["mean"] == 0


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (1.3, 1.6, "holds"),  # faster, above the claim
    (1.05, 1.4, "holds"),  # faster, the claim inside
    (1.01, 1.15, "does not hold"),  # faster, but wholly below the claim
    (0.5, 0.9, "does not hold"),  # slower
    (0.8, 1.1, "does not hold"),  # no effect, the claim excluded
    (0.9, 1.5, "inconclusive"),  # holds both no effect and the claim
])
def test_verdict_rules(lo, hi, expected):
    ci = {"mean": (lo + hi) / 2, "lo": lo, "hi": hi, "n": 3, "paired": True}
    assert rs.verdict(ci, rp.PAPER_SPEEDUP, 1.0)["verdict"] == expected


def test_verdict_needs_a_paired_interval():
    assert rs.verdict(None, 1.2, 1.0)["verdict"] == "inconclusive"
    one = {"mean": 2.0, "lo": None, "hi": None, "n": 1, "paired": True}
    assert "1 paired seed " in rs.verdict(one, 1.2, 1.0)["why"]
    means = {"mean": 2.0, "lo": 1.5, "hi": 2.5, "n": 3, "paired": False}
    assert rs.verdict(means, 1.2, 1.0)["verdict"] == "inconclusive"


def test_claims_on_hand_made_compares():
    got = {c["key"]: c for c in rs.claims(rs.task_rows(hand_made_compares()))}
    # speed-ups about 1.95, 1, 1.31: an interval that holds both 1 and 1.2
    assert got["speedup_epochs"]["verdict"] == "inconclusive"
    # 5, 3, 4 points: [1.52, 6.48] excludes 0 and holds 3.7
    assert got["diff_vs_bop"]["verdict"] == "holds"
    assert got["diff_vs_bop"]["claimed"] == rp.PAPER_GAIN_POINTS


def test_plateau_rule():
    def group(vals: list[float]) -> dict[str, Any]:
        return {"series": {"epoch": list(range(1, len(vals) + 1)), "mean": {"val_acc": vals}}}

    rising = rs.plateau(group(ADAM), 4)  # best of epochs 1-2 is 0.80, then 0.90: +10 points
    assert rising["plateaued"] is False and rising["rise_points"] == pytest.approx(10.0)
    assert rising["last_epochs"] == 2
    flat = rs.plateau(group([0.80, 0.85, 0.851, 0.852]), 4)
    assert flat["plateaued"] is True and flat["rise_points"] == pytest.approx(0.2)
    assert rs.plateau(group([0.80, 0.85, 0.9]), 1)["plateaued"] is None  # one epoch in budget


def test_map_cells_against_adam_and_bop():
    by = hand_made_map()
    cells = {(c["kappa"], c["gamma"]): c for c in rs.map_cells(by["adam"], by["bop"])}
    assert set(cells) == {(1.0, 1e-3), (4.0, 1e-2)}
    good, bad = cells[(1.0, 1e-3)], cells[(4.0, 1e-2)]
    assert good["speedup_epochs"]["mean"] == pytest.approx(ADAM_REACH / BAMS_REACH[0])
    assert good["diff_vs_bop"]["mean"] == pytest.approx(5.0) and good["meets_paper"]
    assert bad["to_target"]["reached"] == 0 and not bad["meets_paper"]


# ------------------------------------------------------------------------- plan and cost


def test_paper_plan_contents():
    plan = rp.make_plan("paper")
    assert {s.optimizer for s in plan.searches} == {"bamsprod", "adam", "amsgrad", "adabound",
                                                    "bop", "sgd"}
    assert {t.model for t in plan.tasks} == {"mlp", "binarynet", "resnet18"}
    assert {t.dataset for t in plan.tasks} == {"mnist", "fashion-mnist"}
    for t in plan.tasks:  # full data sets, full width
        assert t.train_subset is None and t.test_subset is None and t.val_split > 0
        assert t.model_args in ({"width": 512, "depth": 2}, {"width_mult": 1.0})
        assert 1 <= t.stage1_epochs <= t.epochs
    assert len(plan.seeds) >= 3 and plan.n_lr >= 3
    m = plan.sensitivity
    assert m is not None and m.n_cells == 15
    assert set(m.kappas) == {0, 0.5, 1, 2, 4} and set(m.gammas) == {1e-4, 1e-3, 1e-2}
    bop = next(s for s in plan.searches if s.optimizer == "bop")
    assert 1e-4 in bop.hparams["gamma"]  # larq's recipe is among the settings tried
    for s in plan.searches:  # every grid brackets the optimizer's default rate
        grid = s.grid(plan.n_lr)
        assert min(grid) <= DEFAULT_LR[s.optimizer] <= max(grid), s.optimizer
    cost = rc.plan_cost(plan)
    assert cost["runs"] == plan.n_runs and cost["gpu_wall_seconds"] <= 10.5 * 60
    assert plan.cuts  # what was cut is stated


def test_quick_plan_and_overrides():
    quick = rp.make_plan("quick")
    assert quick.seeds == (0, 1) and all(t.epochs <= 2 for t in quick.tasks)
    assert all(t.train_subset and t.train_subset <= 2000 for t in quick.tasks)
    assert {s.optimizer for s in quick.searches} == {s.optimizer for s in rp.SEARCHES}
    assert rc.plan_cost(quick)["cpu_seconds"] < 5 * 60
    one = rp.make_plan("paper", seeds=4, epochs=1)
    assert one.seeds == (0, 1, 2, 3) and all(t.epochs == t.stage1_epochs == 1
                                               for t in one.tasks)
    with pytest.raises(ValueError):
        rp.make_plan("huge")
    with pytest.raises(ValueError):
        rp.make_plan("quick", seeds=0)


def test_cost_arithmetic_by_hand():
    task = rp.Task("t", "t", "mlp", "mnist", {"width": 512, "depth": 2}, epochs=4,
                   stage1_epochs=2)
    small = rp.Task("s", "s", "mlp", "mnist", {"width": 512, "depth": 2}, epochs=4,
                    stage1_epochs=2, train_subset=6000, test_subset=1000)
    searches = (rp.Search("adam", 1e-4, 1e-2), rp.Search("bop", 1e-3, 1e-1, {"gamma": (1, 2)}))
    plan = rp.Plan("x", "x", (task, small), searches, n_lr=3, seeds=(0, 1, 2),
                   sensitivity=rp.SensitivityMap("s", seeds=(0, 1)))
    # per task: stage 1 = 3 + 3 x 2 = 9 runs x 2 epochs; stage 2 = 2 x 3 runs x 4 epochs
    full = rc.task_cost(plan, task)
    assert (full["runs"], full["epochs"]) == (15, 9 * 2 + 6 * 4)
    assert full["gpu_run_seconds"] == pytest.approx(15 * 3.0 + 42 * 2.5)
    assert full["cpu_seconds"] == pytest.approx(15 * 0.3 + 42 * 10.5)
    sub = rc.task_cost(plan, small)  # 7,000 of 70,000 examples: a tenth of an epoch's time
    assert sub["gpu_epoch_seconds"] == pytest.approx(0.25)
    m = rc.map_cost(plan)  # 15 cells x 2 seeds x 4 epochs on the small task
    assert m is not None and (m["runs"], m["epochs"]) == (30, 120)
    assert m["gpu_run_seconds"] == pytest.approx(30 * 3.0 + 120 * 0.25)
    total = rc.plan_cost(plan)
    assert total["runs"] == plan.n_runs == 15 + 15 + 30
    gpu = full["gpu_run_seconds"] + sub["gpu_run_seconds"] + m["gpu_run_seconds"] + 4 * 30.0
    assert total["gpu_run_seconds"] == pytest.approx(gpu)
    assert total["gpu_wall_seconds"] == pytest.approx(gpu / 4)
    # a width without its own reference takes the full-width one (flagged)
    narrow = rp.Task("n", "n", "binarynet", "mnist", {"width_mult": 0.5}, 1, 1)
    assert rc.epoch_seconds(narrow, "gpu") == (5.7, False)


def test_sweep_bodies_pass_the_api_with_the_planned_counts(client):
    plan = rp.make_plan("paper")
    bodies = rp.sweep_bodies(plan, tags=("reproduce", "reproduce-x"))
    assert len(bodies) == len(plan.tasks) * len(plan.searches) + 1
    assert bodies[0]["task"] == plan.tasks[-1].key  # the most expensive task first
    total = 0
    for item in bodies:
        r = client.post("/api/sweeps?dry_run=true", json=item["body"])
        assert r.status_code == 200, (item["task"], item["optimizer"], r.text)
        if item["optimizer"] is None:
            assert r.json()["count"] == 15
        else:
            s = next(s for s in plan.searches if s.optimizer == item["optimizer"])
            assert r.json()["count"] == sum(plan.tuned_runs(s))
        total += r.json()["count"]
    assert total == plan.n_runs


def test_dry_run_prints_the_plan_and_its_cost():
    env = {**os.environ, "COLUMNS": "200"}
    run = [sys.executable, "-m", "bamsprod", "reproduce", "--dry-run"]
    paper = subprocess.run([*run, "--plan", "paper"], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=120)
    assert paper.returncode == 0, paper.stderr
    cost = rc.plan_cost(rp.make_plan("paper"))
    assert f"| **total** | **{cost['runs']}** | **{cost['epochs']}** |" in paper.stdout
    assert "GPU: about" in paper.stdout and "Cut to fit:" in paper.stdout
    quick = subprocess.run([*run, "--quick"], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
    assert quick.returncode == 0 and quick.stdout.startswith("Plan `quick`")


# ------------------------------------------------------------------------------ reports


def test_markdown_report_states_verdicts_tuning_map_and_cost():
    md = rmd.markdown_report(rs.analyse(hand_made_report()))
    assert "runs trained on **cpu**" in md and "**1.5 min** summed over 20 runs" in md
    mean, lo, hi = _hand_ci([5.0, 3.0, 4.0])
    assert (f"| mlp on MNIST | final test accuracy − Bop (points) | ≈ +3.7 | "
            f"+{mean:.2f} [+{lo:.2f}, +{hi:.2f}] (n=3) | **holds**") in md
    assert "Rule: 95% t-interval" in md and "inconclusive on 1 of 1 task(s)" in md
    assert "Adam's validation accuracy: **still rising**" in md
    assert ("| BAMSProd | lr: 0.0001, 0.001 | lr 0.001 | 90.00 | 2 (pruned 1, succeeded 1) | 3 |"
            in md)
    assert "| SGD-momentum | lr: 0.001, 0.01, 0.1 | lr 0.001 (grid edge) |" in md
    assert "| 1 | 91.50 ± 0.50 (+5.00) | — |" in md  # final acc, kappa 1 x gamma 0.001
    assert "| 4 | — | not reached (0/3) (n/a) |" in md
    assert "paper's numbers (speed-up ≥ 1.2× and ≥ +3.7 points over Bop" in md
    assert "κ 1, γ 0.001" in md and "| **total** |" in md


def test_html_report_inlines_plotly_and_draws_the_map():
    page = html_report(rs.analyse(hand_made_report()))
    assert not re.search(r"<script[^>]+src=", page)  # no CDN: plotly.js is inlined
    assert page.count("Plotly.newPlot") == 2  # the task's charts and the map
    assert "toself" in page and "validation accuracy" in page and '"heatmap"' in page
    assert "<td>BAMSProd</td>" in page


def test_rerender_from_json(tmp_path):
    import typer

    from bamsprod.app.commands.reproduce_cmds import rerender

    saved = tmp_path / "in.json"
    saved.write_text(json.dumps(hand_made_report()))
    files = rerender(saved, tmp_path / "out")
    assert files[0].read_text() == rmd.markdown_report(rs.analyse(hand_made_report()))
    assert json.loads(files[2].read_text())["tasks"][0]["claims"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"plan": {"quick": True}, "tasks": []}))
    with pytest.raises(typer.Exit):
        rerender(old, tmp_path / "old")


# --------------------------------------------------------------------------- end to end


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    from fastapi.testclient import TestClient

    from bamsprod.app.main import create_app
    from bamsprod.app.settings import Settings

    out = tmp_path / "repro"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bamsprod", "reproduce", "--plan", "quick", "--out", str(out),
         "--poll", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| **total** |" in proc.stderr  # the cost came before the runs
    plan = rp.make_plan("quick")
    md = (out / "reproduction.md").read_text()
    report = json.loads((out / "reproduction.json").read_text())
    assert report["devices"] == ["cpu"] and report["compute"]["runs"] == plan.n_runs

    home = out / "service"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'bamsprod.db'}",
                        broker_url=f"sqla+sqlite:///{home / 'broker.db'}")
    app = create_app(settings, enqueue=lambda _id: None, broker_check=lambda: True,
                     workers_seen=lambda: [], pages=False)
    with TestClient(app) as client:
        runs = client.get("/api/runs", params={"tag": "reproduce", "limit": 500}).json()
        assert runs["total"] == plan.n_runs
        assert {r["state"] for r in runs["items"]} <= {"succeeded", "pruned"}
        for task in report["tasks"]:
            section = _section(md, task["title"])
            for tu in task["tuning"]:  # stage 2 ran the setting stage 1 chose, on every seed
                detail = client.get(f"/api/sweeps/{tu['sweep_id']}").json()["tuning"][0]
                assert detail["chosen"] == tu["chosen"] and detail["chosen"]
                seeds = []
                for rid in tu["stage2_run_ids"]:
                    config = client.get(f"/api/runs/{rid}").json()["config"]
                    assert config["lr"] == tu["chosen"]["lr"] and config["epochs"] == 2
                    seeds.append(config["seed"])
                assert sorted(seeds) == list(plan.seeds)
            api: dict[str, Any] = {}
            for key, base, x in (("adam", "adam", "epoch"), ("adam_time", "adam", "time"),
                                 ("bop", "bop", "epoch")):
                params = rp.compare_params(task["run_ids"], base,
                                           api["adam"]["target"] if api else None, x)
                r = client.get("/api/compare", params=params)
                assert r.status_code == 200, r.text
                api[key] = r.json()
            assert task["target"] == pytest.approx(api["adam"]["target"])
            rows = rs.task_rows(api)
            assert rows == task["rows"] and len(rows) == len(plan.searches)
            table = rmd.table(rmd.RESULTS_HEAD, rmd.results_rows({**task, "rows": rows}))
            assert "\n".join(table) in section
            assert [c["verdict"] for c in task["claims"]] == [c["verdict"] for c in
                                                             rs.claims(rows)]
        sens = report["sensitivity"]
        assert len(sens["cells"]) == 15 and sens["states"] == {"succeeded": 15}
        kappas = {c["kappa"] for c in sens["cells"]}
        assert kappas == set(plan.sensitivity.kappas)
        seconds = 0.0
        for r in runs["items"]:
            seconds += (_time(r["finished_at"]) - _time(r["started_at"]))
        assert report["compute"]["run_seconds"] == pytest.approx(seconds)
    assert "## BAMSProd sensitivity: κ × γ" in md and "## Verdicts" in md


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
