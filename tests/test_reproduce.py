"""``bamsprod reproduce`` (the alias of ``bamsprod study run paper|quick``): the shipped paper
and quick studies and their cost, the paired intervals and verdicts against hand computations,
the report builders on hand-made compare data, the sweep bodies against the real API, and the
quick study end to end (its own embedded service; the report's numbers are then checked against
``GET /api/compare`` on the same database)."""

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
from study_fixtures import BOP_FINAL, hand_made_records, hand_made_report

from bamsprod.app.studies import cost as rc
from bamsprod.app.studies import paired as pr
from bamsprod.app.studies import plan as rp
from bamsprod.app.studies import report_md as rmd
from bamsprod.app.studies import stats as rs
from bamsprod.app.studies.fmt import table
from bamsprod.app.studies.report_html import html_report
from bamsprod.app.studies.runner import REPORT_FORMAT, rerender, write_report
from bamsprod.app.studies.studyfile import load_study
from bamsprod.core.config import DEFAULT_LR

ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105, 9: 2.262157163}  # Student-t tables


def _hand_ci(values: list[float]) -> tuple[float, float, float]:
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T975[len(values) - 1] * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


# ------------------------------------------------------------------- intervals, verdicts


def test_t_quantile_matches_the_tables():
    for df, q in T975.items():
        assert pr.t_quantile(0.95, df) == pytest.approx(q, abs=1e-8)
    assert pr.t_quantile(0.95, 1) == pytest.approx(math.tan(0.95 * math.pi / 2))
    with pytest.raises(ValueError):
        pr.t_quantile(0.95, 0)


def test_paired_intervals_against_a_hand_computation():
    by = rs.by_optimizer(hand_made_records())
    b, adam, bop = by["bamsprod"], by["adam"], by["bop"]
    for got, values in ((pr.paired_speedup(b, adam, "epochs"), [4 / 2, 4 / 4, 4 / 3]),
                        (pr.paired_speedup(b, adam, "seconds"), [4 / 3, 4 / 6, 4 / 4.5]),
                        (pr.paired_gain(b, bop), [5.0, 3.0, 4.0])):
        mean, lo, hi = _hand_ci(values)
        assert got["paired"] and got["n"] == 3
        assert (got["mean"], got["lo"], got["hi"]) == pytest.approx((mean, lo, hi))
    sgd = pr.paired_speedup(by["sgd"], adam, "epochs")  # never reached: only bounds
    assert sgd["n"] == 0 and len(sgd["censored"]) == 3 and sgd["mean"] is None
    # SGD never reached within 4 epochs, Adam took 4: its speed-up is at most 4 / 4
    assert all(c["lo"] == 0 and c["hi"] == pytest.approx(1.0) for c in sgd["censored"])


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (1.3, 1.6, "holds"),  # faster, above the claim
    (1.05, 1.4, "holds"),  # faster, the claim inside
    (1.01, 1.15, "does not hold"),  # faster, but wholly below the claim
    (0.5, 0.9, "does not hold"),  # slower
    (0.8, 1.1, "does not hold"),  # no effect, the claim excluded
    (0.9, 1.5, "inconclusive"),  # holds both no effect and the claim
])
def test_verdict_rules(lo, hi, expected):
    ci = {"mean": (lo + hi) / 2, "std": 0.1, "lo": lo, "hi": hi, "n": 3, "paired": True}
    assert pr.verdict(ci, 1.2, 1.0)["verdict"] == expected


def test_claims_on_hand_made_records():
    report = rs.analyse(hand_made_report())
    got = {c["measure"]: c for c in report["tasks"][0]["claims"]}
    # speed-ups 2, 1, 4/3: [0.18, 2.71] holds both 1 and 1.2
    assert got["speedup_epochs"]["verdict"] == "inconclusive"
    # 5, 3, 4 points: [1.52, 6.48] excludes 0 and holds 3.7
    assert got["gain"]["verdict"] == "holds" and got["gain"]["claimed"] == 3.7


def test_plateau_rule():
    def group(vals: list[float]) -> dict[str, Any]:
        return {"series": {"epoch": list(range(1, len(vals) + 1)), "mean": {"val_acc": vals}}}

    rising = rs.plateau(group([0.70, 0.80, 0.85, 0.90]), 4)  # best of 1-2 is 0.80, then 0.90
    assert rising["plateaued"] is False and rising["rise_points"] == pytest.approx(10.0)
    assert rising["last_epochs"] == 2
    flat = rs.plateau(group([0.80, 0.85, 0.851, 0.852]), 4)
    assert flat["plateaued"] is True and flat["rise_points"] == pytest.approx(0.2)
    assert rs.plateau(group([0.80, 0.85, 0.9]), 1)["plateaued"] is None  # one epoch in budget


def test_map_cells_against_the_tuned_baselines():
    report = rs.analyse(hand_made_report())
    cells = {(c["kappa"], c["gamma"]): c for c in report["sensitivity"]["cells"]}
    assert set(cells) == {(1.0, 1e-3), (4.0, 1e-2)}
    good, bad = cells[(1.0, 1e-3)], cells[(4.0, 1e-2)]
    # reached at epoch 2 on every seed (Adam at 4): the ratio 2 on each seed, a tie
    assert good["speedup_epochs"]["values"] == [2.0, 2.0, 2.0]
    assert good["gain"]["mean"] == pytest.approx(5.0) and good["meets"]
    assert bad["to_target"]["reached"] == 0 and not bad["meets"]


# ------------------------------------------------------------------------- plan and cost


def test_paper_study_contents():
    study = load_study("paper")
    assert {s.optimizer for s in study.searches} == {"bamsprod", "adam", "amsgrad", "adabound",
                                                      "bop", "sgd"}
    assert {t.model for t in study.tasks} == {"mlp", "binarynet", "resnet18"}
    assert {t.dataset for t in study.tasks} == {"mnist", "fashion-mnist"}
    for t in study.tasks:  # full data sets, full width, several evaluations an epoch
        assert t.train_subset is None and t.test_subset is None and t.val_split > 0
        assert t.model_args in ({"width": 512, "depth": 2}, {"width_mult": 1.0})
        assert 1 <= t.stage1_epochs <= t.epochs and t.evals_per_epoch >= 4
    assert len(study.seeds) >= 3 and all(len(s.grid()) >= 3 for s in study.searches)
    assert all(s.tuned for s in study.searches) and study.device == "gpu"
    m = study.sensitivity
    assert m is not None and m.n_cells == 15
    assert set(m.kappas) == {0, 0.5, 1, 2, 4} and set(m.gammas) == {1e-4, 1e-3, 1e-2}
    bop = study.search("bop")
    assert 1e-4 in bop.hparams["gamma"]  # larq's recipe is among the settings tried
    for s in study.searches:  # every grid brackets the optimizer's default rate
        assert min(s.grid()) <= DEFAULT_LR[s.optimizer] <= max(s.grid()), s.optimizer
    # the plan as it was before it became a file: 3 rates a decade around each default
    assert study.search("adam").grid() == [0.0003162, 0.001, 0.003162]
    assert study.search("sgd").grid() == [0.01, 0.03162, 0.1]
    cost = rc.study_cost(study)
    assert cost["runs"] == study.n_runs == 171 and cost["gpu_wall_seconds"] <= 11 * 60
    assert study.cuts  # what was cut is stated
    assert [c.measure for c in study.claims] == ["speedup_epochs", "speedup_seconds", "gain"]
    assert [c.claimed for c in study.claims] == [1.2, 1.2, 3.7]


def test_quick_study_and_overrides():
    quick = load_study("quick")
    assert quick.seeds == (0, 1) and all(t.epochs <= 2 for t in quick.tasks)
    assert all(t.train_subset and t.train_subset <= 2000 for t in quick.tasks)
    assert {s.optimizer for s in quick.searches} == {s.optimizer for s in
                                                      load_study("paper").searches}
    assert quick.n_runs == 119 and rc.study_cost(quick)["cpu_seconds"] < 5 * 60
    one = load_study("paper").override(seeds=4, epochs=1)
    assert one.seeds == (0, 1, 2, 3) and all(t.epochs == t.stage1_epochs == 1
                                               for t in one.tasks)
    with pytest.raises(ValueError):
        quick.override(seeds=0)


def test_cost_arithmetic_by_hand():
    task = rp.Task("t", "t", "mlp", "mnist", {"width": 512, "depth": 2}, epochs=4,
                   stage1_epochs=2)
    small = rp.Task("s", "s", "mlp", "mnist", {"width": 512, "depth": 2}, epochs=4,
                    stage1_epochs=2, train_subset=6000, test_subset=1000)
    searches = (rp.Search("adam", rp.log_rates(1e-4, 1e-2, 3)),
                rp.Search("bop", rp.log_rates(1e-3, 1e-1, 3), {"gamma": (1, 2)}),
                rp.Search("sgd", (0.05,), tuned=False))
    study = rp.Study("x", "x", (task, small), searches, seeds=(0, 1, 2), target=rp.Target(),
                     sensitivity=rp.SensitivityMap("s", seeds=(0, 1)), workers=2)
    # per task: stage 1 = 3 + 3 x 2 = 9 runs x 2 epochs; stage 2 = 3 x 3 runs x 4 epochs
    full = rc.task_cost(study, task)
    assert (full["runs"], full["epochs"]) == (18, 9 * 2 + 9 * 4)
    assert full["gpu_run_seconds"] == pytest.approx(18 * 3.0 + 54 * 2.5)
    assert full["cpu_seconds"] == pytest.approx(18 * 2.0 + 54 * 5.5)
    sub = rc.task_cost(study, small)  # 7,000 of 70,000 examples: a tenth of an epoch's time
    assert sub["gpu_epoch_seconds"] == pytest.approx(0.25)
    m = rc.map_cost(study)  # 15 cells x 2 seeds x 4 epochs on the small task
    assert m is not None and (m["runs"], m["epochs"]) == (30, 120)
    assert m["gpu_run_seconds"] == pytest.approx(30 * 3.0 + 120 * 0.25)
    total = rc.study_cost(study)
    assert total["runs"] == study.n_runs == 18 + 18 + 30
    gpu = full["gpu_run_seconds"] + sub["gpu_run_seconds"] + m["gpu_run_seconds"] + 4 * 30.0
    assert total["gpu_run_seconds"] == pytest.approx(gpu)
    assert total["gpu_wall_seconds"] == pytest.approx(gpu / 4)
    cpu = full["cpu_seconds"] + sub["cpu_seconds"] + m["cpu_seconds"]
    assert total["cpu_wall_seconds"] == pytest.approx(cpu / (2 * 0.76))  # two processes
    # three evaluations an epoch: two more passes over the 6,000 validation examples at a
    # third of a training pass each
    evals = rp.Task("e", "e", "mlp", "mnist", {"width": 512, "depth": 2}, 4, 2,
                    evals_per_epoch=3)
    assert rc.epoch_seconds(evals, "cpu")[0] == pytest.approx(5.5 * (70_000 + 4_000) / 70_000)
    # a width without its own reference takes the full-width one (flagged)
    narrow = rp.Task("n", "n", "binarynet", "mnist", {"width_mult": 0.5}, 1, 1)
    assert rc.epoch_seconds(narrow, "gpu") == (5.7, False)


def test_sweep_bodies_pass_the_api_with_the_planned_counts(client):
    for name in ("paper", "cpu"):
        study = load_study(name)
        bodies = rp.sweep_bodies(study, tags=("study", "study-x"))
        n_map = study.sensitivity.n_cells if study.sensitivity else 0
        assert len(bodies) == len(study.tasks) * len(study.searches) + bool(n_map)
        assert bodies[0]["task"] == study.tasks[-1].key  # the most expensive task first
        total = 0
        for item in bodies:
            body = item["body"]
            if "evals_per_epoch" not in rs_fields():  # a server before the field
                body["base"].pop("evals_per_epoch", None)
            r = client.post("/api/sweeps?dry_run=true", json=body)
            assert r.status_code == 200, (item["task"], item["optimizer"], r.text)
            if item["optimizer"] is None:
                assert r.json()["count"] == n_map
            else:
                assert r.json()["count"] == sum(study.tuned_runs(study.search(item["optimizer"])))
            total += r.json()["count"]
        assert total == study.n_runs


def rs_fields() -> set[str]:
    from bamsprod.core.config import RunConfig

    return set(RunConfig.model_fields)


def test_dry_run_prints_the_plan_and_its_cost():
    env = {**os.environ, "COLUMNS": "200"}
    run = [sys.executable, "-m", "bamsprod", "reproduce", "--dry-run"]
    paper = subprocess.run([*run, "--plan", "paper"], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=120)
    assert paper.returncode == 0, paper.stderr
    cost = rc.study_cost(load_study("paper"))
    assert f"| **total** | **{cost['runs']}** | **{cost['epochs']}** |" in paper.stdout
    assert "GPU: about" in paper.stdout and "Cut to fit:" in paper.stdout
    quick = subprocess.run([*run, "--quick"], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
    assert quick.returncode == 0 and quick.stdout.startswith("Study `quick`")
    bad = subprocess.run([*run, "--plan", "huge"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "unknown plan 'huge'" in bad.stderr


# ------------------------------------------------------------------------------ reports


def test_markdown_report_states_verdicts_tuning_map_and_cost():
    md = rmd.markdown_report(rs.analyse(hand_made_report()))
    assert "environment: **Test CPU · 1 thread · torch 2.13.0+cpu" in md
    assert "**1.5 min** summed over 20 runs" in md
    mean, lo, hi = _hand_ci([5.0, 3.0, 4.0])
    assert (f"| mlp on MNIST | BAMSProd: final test accuracy − Bop (points) | ≥ +3.7 | "
            f"+{mean:.2f} [+{lo:.2f}, +{hi:.2f}] (n=3) | **holds**") in md
    assert "Rule: 95% t-interval" in md and "inconclusive on 1 of 1 task(s)" in md
    assert "Adam's validation accuracy: **still rising**" in md
    assert ("| BAMSProd | lr: 0.0001, 0.001 | lr 0.001 | 90.00 | 2 (pruned 1, succeeded 1) | 3 |"
            in md)
    assert "| SGD-momentum | lr: 0.001, 0.01, 0.1 | lr 0.001 (grid edge) |" in md
    final = statistics.mean(BOP_FINAL[s] + 0.05 for s in range(3))
    assert f"| 1 | {100 * final:.2f} ± 0.50 (+5.00) | — |" in md  # kappa 1 x gamma 0.001
    assert "| 4 | — | not reached (0/3) (n/a) |" in md
    assert "Cells where the point estimates reach the claimed values" in md
    assert "κ 1, γ 0.001" in md and "| **total** |" in md
    assert "## Performance profiles" in md and "| BAMSProd | 1.000 | 1/1 |" in md
    assert "Tuning robustness" in md and "| Adam | 3 | 85.00 | 87.22 (k=2) | 88.33 |" in md


def test_html_report_loads_plotly_from_its_folder_and_draws_the_charts(tmp_path):
    report = rs.analyse(hand_made_report())
    page = html_report(report)
    assert re.findall(r"<script[^>]+src=['\"]([^'\"]+)", page) == ["plotly.min.js"]
    assert "Plotly.newPlot" in page and len(page.encode()) < 2_000_000
    assert page.count("Plotly.newPlot") == 4  # profiles, robustness, the task, the map
    assert "toself" in page and "validation accuracy" in page and '"heatmap"' in page
    assert "<td>BAMSProd</td>" in page
    files = write_report(report, tmp_path, "study")
    assert [f.name for f in files] == ["study.md", "study.html", "study.json"]
    js = (tmp_path / "plotly.min.js").read_text()
    assert len(js) > 1_000_000 and js not in page  # beside the page, not in it


def test_rerender_from_json(tmp_path):
    saved = tmp_path / "in.json"
    saved.write_text(json.dumps(hand_made_report()))
    files = rerender(saved, tmp_path / "out")
    assert files[0].read_text() == rmd.markdown_report(rs.analyse(hand_made_report()))
    assert json.loads(files[2].read_text())["tasks"][0]["claims"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": 2, "plan": {"name": "quick"}, "tasks": []}))
    with pytest.raises(ValueError, match=f"format 2, this one reads {REPORT_FORMAT}"):
        rerender(old, tmp_path / "old")


# --------------------------------------------------------------------------- end to end


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    from fastapi.testclient import TestClient

    from bamsprod.app.settings import Settings
    from bamsprod.app.web.main import create_app

    out = tmp_path / "repro"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bamsprod", "reproduce", "--plan", "quick", "--out", str(out),
         "--poll", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| **total** |" in proc.stderr  # the cost came before the runs
    study = load_study("quick")
    md = (out / "reproduction.md").read_text()
    report = json.loads((out / "reproduction.json").read_text())
    assert report["devices"] == ["cpu"] and report["compute"]["runs"] == study.n_runs
    assert (out / "reproduction.html").stat().st_size < 2_000_000
    assert (out / "plotly.min.js").is_file()

    home = out / "service"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'bamsprod.db'}",
                        broker_url=f"sqla+sqlite:///{home / 'broker.db'}")
    app = create_app(settings, enqueue=lambda _id: None, broker_check=lambda: True,
                     workers_seen=lambda: [], pages=False)
    with TestClient(app) as client:
        runs = client.get("/api/runs", params={"tag": "study", "limit": 500}).json()
        assert runs["total"] == study.n_runs
        assert {r["state"] for r in runs["items"]} <= {"succeeded", "pruned"}
        by_id = {r["id"]: r for r in runs["items"]}
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
                assert sorted(seeds) == list(study.seeds)
                assert len(task["trials"][tu["optimizer"]]) == len(tu["stage1_run_ids"])
            params = rp.compare_params(task["run_ids"], "adam", include="runs",
                                       metric="test_acc")
            r = client.get("/api/compare", params=params)
            assert r.status_code == 200, r.text
            api = r.json()
            assert task["target"] == pytest.approx(api["target"])
            assert rs.run_records(api, by_id) == task["runs"]
            rows = rs.task_rows({**task, "runs": rs.run_records(api, by_id)}, report["baselines"])
            assert rows == task["rows"] and len(rows) == len(study.searches)
            results = table(rmd.results_head(report["baselines"]),
                            rmd.results_rows(task, report["baselines"]))
            assert "\n".join(results) in section
            assert {c["verdict"] for c in task["claims"]} == {"inconclusive"}  # 2 seeds
        sens = report["sensitivity"]
        assert len(sens["cells"]) == 15 and sens["states"] == {"succeeded": 15}
        assert {c["kappa"] for c in sens["cells"]} == set(study.sensitivity.kappas)
        seconds = 0.0
        for r in runs["items"]:
            seconds += (_time(r["finished_at"]) - _time(r["started_at"]))
        assert report["compute"]["run_seconds"] == pytest.approx(seconds)
    assert "## Sensitivity: κ × γ" in md and "## Verdicts" in md
    assert "## Performance profiles" in md and "Tuning robustness" in md


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
