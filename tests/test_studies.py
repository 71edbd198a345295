"""Studies as files: the study-file parser (errors name the key and the line), the claims
grammar, the verdict rules on ties, few seeds and censored times, per-run records in both
compare shapes, performance profiles and tuning robustness against hand computations,
environments, the shipped studies' dry runs, and ``study list|show``."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from study_fixtures import ENV, answer

from bamsprod.app.studies import paired as pr
from bamsprod.app.studies import plan as sp
from bamsprod.app.studies import profiles as pf
from bamsprod.app.studies import robustness as rb
from bamsprod.app.studies import stats as rs
from bamsprod.app.studies.claims import parse_claim
from bamsprod.app.studies.cost import study_cost
from bamsprod.app.studies.environment import env_key
from bamsprod.app.studies.fmt import fmt_seconds
from bamsprod.app.studies.studyfile import (
    StudyFileError,
    load_study,
    parse_study,
    shipped_names,
)
from bamsprod.app.studies.toml_lines import key_lines
from bamsprod.core.config import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]

# Issue 18's minimal study file, as written.
MINIMAL = """\
name = "lion-vs-bamsprod"
seeds = 2
[[tasks]]
name = "digits-mlp"
model = "mlp"
model_args = { width = 32, depth = 2 }
dataset = "digits"
epochs = 3
[[optimizers]]
name = "bamsprod"
lr = [1e-3]
[[optimizers]]
name = "lion"
lr = [1e-4, 1e-3]
"""
# The same with a built-in in lion's place, for what does not depend on the plugin.
WITH_ADAM = MINIMAL.replace('"lion"', '"adam"')


# ------------------------------------------------------------------------------ parser


def test_the_minimal_file_needs_its_plugin():
    """Without the lion plugin, the error names the key and the line of the unknown name."""
    if "lion" in OPTIMIZERS:
        pytest.skip("the lion plugin is installed in this environment")
    with pytest.raises(StudyFileError) as exc:
        parse_study(MINIMAL, "lion.toml")
    assert exc.value.key == "optimizers[1].name" and exc.value.line == 13
    assert str(exc.value).startswith("lion.toml:13: optimizers[1].name: unknown optimizer")


def test_the_minimal_file_works_as_written_with_the_plugin(tmp_path, client):
    """Issue 18's file with the example Lion plugin installed: BAMSProd fixed at 1e-3 on two
    seeds, Lion tuned over two rates; its sweeps pass the API as planned."""
    from plugin_fixtures import install_lion, on_path

    with on_path(install_lion(tmp_path)):
        study = parse_study(MINIMAL)
        assert not study.search("bamsprod").tuned and study.search("lion").tuned
        assert study.search("lion").lrs == (1e-4, 1e-3) and study.n_runs == 2 + (2 + 2)
        assert study.target.baseline == "bamsprod"  # no Adam: the first optimizer
        for item in sp.sweep_bodies(study):
            r = client.post("/api/sweeps?dry_run=true", json=item["body"])
            assert r.status_code == 200, r.text
            assert r.json()["count"] == sum(study.tuned_runs(study.search(item["optimizer"])))


@pytest.mark.slow
def test_the_minimal_file_runs_end_to_end(tmp_path):
    """``bamsprod study run`` on issue 18's file as written, the example plugin installed: every
    run succeeds and the report compares Lion with BAMSProd."""
    import json

    from plugin_fixtures import env_with, install_lion

    site = install_lion(tmp_path / "lion")
    study_file = tmp_path / "lion-vs-bamsprod.toml"
    study_file.write_text(MINIMAL)
    out = tmp_path / "out"
    got = subprocess.run([sys.executable, "-m", "bamsprod", "study", "run", str(study_file),
                          "--out", str(out), "--poll", "0.5"], cwd=ROOT, env=env_with(site),
                         capture_output=True, text=True, timeout=540)
    assert got.returncode == 0, got.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (task,) = report["tasks"]
    assert task["states"] == {"succeeded": 6}
    assert {r["optimizer"] for r in task["runs"]} == {"bamsprod", "lion"}
    assert [tu["tuned"] for tu in task["tuning"]] == [False, True]
    md = (out / "report.md").read_text()
    assert "| lion | yes | 0.0001, 0.001 |" in md and "| BAMSProd | no | 0.001 |" in md
    assert "The study states no claims." in md and "| lion |" in md.split("## digits-mlp")[1]


def test_one_rate_is_fixed_and_two_rates_are_tuned(client):
    """``lr = [1e-3]``: one setting, run on every seed (a grid sweep); ``lr = [1e-4, 1e-3]``:
    two settings, so tuned: stage 1 tries both on seed 0 for the task's epochs, stage 2 runs
    the better one on every seed. The target's baseline is Adam when the study has it."""
    study = parse_study(WITH_ADAM)
    assert study.seeds == (0, 1) and study.target == sp.Target("test_acc", "adam", 0.99)
    fixed, tuned = study.search("bamsprod"), study.search("adam")
    assert (fixed.tuned, fixed.lrs) == (False, (1e-3,))
    assert (tuned.tuned, tuned.lrs) == (True, (1e-4, 1e-3))
    task = study.tasks[0]
    assert (task.epochs, task.stage1_epochs, task.val_split, task.batch_size) == (3, 3, 0.1, 128)
    assert study.n_runs == 2 + (2 + 2)
    bodies = {b["optimizer"]: b["body"] for b in sp.sweep_bodies(study)}
    assert "strategy" not in bodies["bamsprod"] and bodies["bamsprod"]["seeds"] == [0, 1]
    assert bodies["bamsprod"]["base"]["lr"] == 1e-3
    tune = bodies["adam"]["tune"]
    assert (tune["lr_min"], tune["lr_max"], tune["n_lr"], tune["stage1_epochs"]) == (
        1e-4, 1e-3, 2, 3)
    assert "evals_per_epoch" not in bodies["adam"]["base"]  # 1 is not sent
    for opt, count in (("bamsprod", 2), ("adam", 4)):
        r = client.post("/api/sweeps?dry_run=true", json=bodies[opt])
        assert r.status_code == 200 and r.json()["count"] == count, r.text
    # tuned = true on one setting is a tuned sweep of one trial; tuned = false on two is an error
    one = parse_study(WITH_ADAM.replace("lr = [1e-3]", "lr = [1e-3]\ntuned = true"))
    assert one.search("bamsprod").tuned and one.n_runs == (1 + 2) + (2 + 2)


def test_lr_as_a_log_range_and_searched_hyperparameters():
    text = WITH_ADAM.replace('lr = [1e-4, 1e-3]',
                             'lr = { min = 1e-4, max = 1e-2, n = 3 }\n'
                             'hparams = { beta1 = [0.8, 0.9], eps = 1e-7 }')
    adam = parse_study(text).search("adam")
    assert adam.lrs == (1e-4, 1e-3, 1e-2) and adam.lr_range == (1e-4, 1e-2)
    assert adam.hparams == {"beta1": (0.8, 0.9)} and adam.fixed == {"eps": 1e-7}
    assert adam.n_settings() == 6
    body = sp.tuned_body(parse_study(text), parse_study(text).tasks[0], adam, ("t",))
    assert body["base"]["hparams"] == {"eps": 1e-7} and body["tune"]["hparams"] == {
        "beta1": [0.8, 0.9]}


def test_a_syntax_error_names_its_line():
    with pytest.raises(StudyFileError) as exc:
        parse_study(WITH_ADAM.replace("epochs = 3", "epochs = = 3"), "s.toml")
    assert exc.value.line == 8 and "TOML syntax" in str(exc.value)
    assert str(exc.value).startswith("s.toml:8: TOML syntax")


@pytest.mark.parametrize(("old", "new", "key", "line"), [
    ("epochs = 3", "epochs = 0", "tasks[0].epochs", 8),
    ("width = 32", "width = -1", "tasks[0].model_args.width", 6),
    ("width = 32", "wide = 32", "tasks[0].model_args.wide", 6),
    ('dataset = "digits"', 'dataset = "digit"', "tasks[0].dataset", 7),
    ('model = "mlp"', 'model = "mlp"\nbogus = 1', "tasks[0].bogus", 6),
    ("seeds = 2", "seeds = 0", "seeds", 2),
    ("seeds = 2", "seeds = [0, 0]", "seeds", 2),
    ('name = "digits-mlp"\n', "", "tasks[0].name", 3),
    ("lr = [1e-4, 1e-3]", "lr = [1e-4, 2e-4, 1e-3]", "optimizers[1].lr", 14),
    ("lr = [1e-4, 1e-3]", "lr = 1e-3", "optimizers[1].lr", 14),
    ("lr = [1e-4, 1e-3]", "lr = [1e-4, 1e-3]\ntuned = false", "optimizers[1].tuned", 15),
    ("lr = [1e-3]", "lr = [1e-3]\nhparams = { kappa = [1, -2] }", "optimizers[0].hparams.kappa",
     12),
    ("lr = [1e-3]", "lr = [1e-3]\nhparams = { momentum = 0.9 }",
     "optimizers[0].hparams.momentum", 12),
    ('name = "adam"', 'name = "bamsprod"', "optimizers[1].name", 13),
])
def test_a_validation_error_names_the_key_and_its_line(old, new, key, line):
    text = WITH_ADAM.replace(old, new, 1)
    assert text != WITH_ADAM
    with pytest.raises(StudyFileError) as exc:
        parse_study(text, "s.toml")
    assert (exc.value.key, exc.value.line) == (key, line), str(exc.value)
    assert str(exc.value).startswith(f"s.toml:{line}: {key}: ")


def test_errors_in_tables_claims_and_the_map_name_their_line():
    head, tail = WITH_ADAM.split("[[tasks]]", 1)
    claims = head + 'claims = [\n  "speed-up over adam >= 1.2",\n  "gain over adam",\n]\n'
    with pytest.raises(StudyFileError) as exc:
        parse_study(claims + "[[tasks]]" + tail)
    assert (exc.value.key, exc.value.line) == ("claims[1]", 3)  # the key's line
    mapped = WITH_ADAM + '[map]\ntask = "nope"\nkappa = [1.0]\ngamma = [1e-3]\n'
    with pytest.raises(StudyFileError) as exc:
        parse_study(mapped)
    assert (exc.value.key, exc.value.line) == ("map.task", 16)
    target = WITH_ADAM + '[target]\nmetric = "loss"\n'
    with pytest.raises(StudyFileError) as exc:
        parse_study(target)
    assert (exc.value.key, exc.value.line) == ("target.metric", 16)
    # a top-level key written after a table belongs to that table, as TOML says
    with pytest.raises(StudyFileError) as exc:
        parse_study(WITH_ADAM + 'claims = ["speed-up over adam >= 1.2"]\n')
    assert (exc.value.key, exc.value.line) == ("optimizers[1].claims", 15)


def test_key_lines_follow_tables_arrays_and_multiline_values():
    text = ('name = "x"  # a comment = not a key\ncuts = [\n  "a = b",\n]\n[[tasks]]\n'
            'name = "t"\n[tasks.model_args]\nwidth = 8\n[[tasks]]\nname = "u"\n[map]\n'
            'kappa = [1, 2]\n')
    lines = key_lines(text)
    assert lines[("name",)] == 1 and lines[("cuts",)] == 2 and ("a",) not in lines
    assert lines[("tasks", 0)] == 5 and lines[("tasks", 0, "name")] == 6
    assert lines[("tasks", 0, "model_args", "width")] == 8
    assert lines[("tasks", 1, "name")] == 10 and lines[("map", "kappa")] == 12


def test_a_study_by_name_or_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(WITH_ADAM)
    assert load_study(path).name == "lion-vs-bamsprod"
    assert load_study("quick").name == "quick"
    with pytest.raises(StudyFileError, match="shipped: cpu, paper, quick"):
        load_study(tmp_path / "missing.toml")


# ------------------------------------------------------------------------------ claims


@pytest.mark.parametrize(("text", "expected"), [
    ("speed-up over adam >= 1.2", ("bamsprod", "speedup_epochs", "adam", 1.2)),
    ("Speedup in epochs over Adam ≥ 1.5x", ("bamsprod", "speedup_epochs", "adam", 1.5)),
    ("speed-up in seconds over adam >= 1.1 ×", ("bamsprod", "speedup_seconds", "adam", 1.1)),
    ("accuracy gain over bop >= 3.7", ("bamsprod", "gain", "bop", 3.7)),
    ("adam accuracy gain over bop >= -0.5 points", ("adam", "gain", "bop", -0.5)),
    ("bop speed-up over sgd >= .8", ("bop", "speedup_epochs", "sgd", 0.8)),
])
def test_claims_grammar(text, expected):
    c = parse_claim(text, "bamsprod", ["bamsprod", "adam", "bop", "sgd"])
    assert (c.subject, c.measure, c.baseline, c.claimed) == expected
    assert c.null == (0.0 if c.measure == "gain" else 1.0)


@pytest.mark.parametrize(("text", "why"), [
    ("speed-up over adam", "cannot read the claim"),
    ("faster than adam >= 1.2", "cannot read the claim"),
    ("speed-up over adam >= 1.2 points", "unit 'points' does not fit"),
    ("accuracy gain over bop >= 3 x", "unit 'x' does not fit"),
    ("speed-up over adam >= 0", "must be claimed > 0"),
    ("speed-up over lamb >= 1.2", "the baseline 'lamb' is not an optimizer of the study"),
    ("speed-up over bamsprod >= 1.2", "the subject and the baseline are both"),
])
def test_bad_claims_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_claim(text, "bamsprod", ["bamsprod", "adam", "bop"])


# ---------------------------------------------------------------------- verdict rules


def _records(opt: str, times: list[float | None], first: tuple[int, ...] = (),
             horizon: float = 4.0, finals: list[float] | None = None) -> list[dict]:
    return [{"optimizer": opt, "seed": k, "to_target": t, "to_target_seconds": t,
             "first": k in first and t is not None, "horizon_epochs": horizon,
             "horizon_seconds": horizon, "final": (finals or [0.9] * len(times))[k],
             "environment": "e"} for k, t in enumerate(times)]


def test_tied_pairs_never_give_a_decisive_verdict():
    """Issue 19: three seeds agreeing on a whole-epoch ratio gave ``1.00× [1.00, 1.00]`` and
    read as "does not hold". A zero-width interval is no evidence, either way."""
    tied = pr.paired_speedup(_records("b", [2.0, 2.0, 2.0]), _records("a", [2.0, 2.0, 2.0]))
    assert tied["values"] == [1.0, 1.0, 1.0] and tied["lo"] == tied["hi"] == 1.0
    got = pr.verdict(tied, 1.2, 1.0)
    assert got["verdict"] == "inconclusive" and "tied (zero spread)" in got["why"]
    fast = pr.paired_speedup(_records("b", [1.0, 1.0, 1.0]), _records("a", [3.0, 3.0, 3.0]))
    assert pr.verdict(fast, 1.2, 1.0)["verdict"] == "inconclusive"  # 3x on every seed, tied
    gain = pr.paired_gain(_records("b", [1, 1, 1], finals=[0.9, 0.9, 0.9]),
                          _records("a", [1, 1, 1], finals=[0.8, 0.8, 0.8]))
    assert gain["mean"] == pytest.approx(10.0)
    assert pr.verdict(gain, 3.7, 0.0)["verdict"] == "inconclusive"


def test_a_verdict_needs_three_measured_pairs():
    two = pr.paired_speedup(_records("b", [1.0, 1.1]), _records("a", [3.0, 3.1]))
    assert two["n"] == 2 and pr.verdict(two, 1.2, 1.0) == {
        "verdict": "inconclusive", "why": "2 measured paired seeds (3 needed)"}
    three = pr.paired_speedup(_records("b", [1.0, 1.1, 0.9]), _records("a", [3.0, 3.1, 3.05]))
    assert pr.verdict(three, 1.2, 1.0)["verdict"] == "holds"
    # a third seed where the subject never reached the target is not a measured pair
    censored = pr.paired_speedup(_records("b", [1.0, 1.1, None]), _records("a", [3.0, 3.1, 3.0]))
    assert censored["n"] == 2 and len(censored["censored"]) == 1
    assert "2 measured paired seeds (3 needed); 1 censored pair" in pr.verdict(
        censored, 1.2, 1.0)["why"]
    assert pr.verdict(None, 1.2, 1.0)["verdict"] == "inconclusive"
    assert pr.verdict({"mean": 2.0, "n": 5, "paired": False}, 1.2, 1.0)["verdict"] == (
        "inconclusive")


def test_censored_pairs_hold_back_a_verdict_they_could_contradict():
    subject = _records("b", [1.0, 1.1, 0.9, None])  # seed 3: never reached within 4 epochs
    baseline = _records("a", [3.0, 3.1, 3.05, 3.0])
    got = pr.paired_speedup(subject, baseline)
    (c,) = got["censored"]
    assert (c["seed"], c["lo"], c["hi"]) == (3, 0.0, pytest.approx(3.0 / 4.0))
    assert "b never reached" in c["why"]
    v = pr.verdict(got, 1.2, 1.0)  # the measured three say "holds"; seed 3 may be slower
    assert v["verdict"] == "inconclusive" and "at or below no effect" in v["why"]
    # the baseline never reached on seed 3: the subject was faster there, whatever the ratio
    got = pr.paired_speedup(_records("b", [1.0, 1.1, 0.9, 2.0]),
                            _records("a", [3.0, 3.1, 3.05, None]))
    assert got["censored"][0]["lo"] == pytest.approx(4.0 / 2.0) and got["censored"][0]["hi"] is None
    assert pr.verdict(got, 1.2, 1.0)["verdict"] == "holds"
    # reached at its first evaluation (0.25 epochs): the subject's time is at most that
    got = pr.paired_speedup(_records("b", [0.25, 3.0, 3.1, 2.9], first=(0,)),
                            _records("a", [1.0, 3.0, 3.0, 3.0]))
    assert got["censored"][0]["lo"] == pytest.approx(4.0) and got["censored"][0]["hi"] is None
    assert pr.verdict(got, 1.2, 1.0)["verdict"] == "inconclusive"  # "does not hold" held back
    # neither reached: no information on speed, left out and said
    got = pr.paired_speedup(_records("b", [1.0, 1.1, 0.9, None]),
                            _records("a", [3.0, 3.1, 3.05, None]))
    assert got["neither"] == [3] and not got["censored"]
    assert pr.verdict(got, 1.2, 1.0)["verdict"] == "holds"


# --------------------------------------------------------------------- per-run records


def test_run_records_take_compare_per_run_times_when_it_gives_them():
    runs = [{"id": 1, "optimizer": "adam", "seed": 0, "to_target": 2.5,
             "to_target_seconds": 10.0, "finals": [0.8, 0.85, 0.9, 0.91]},
            {"id": 2, "optimizer": "bamsprod", "seed": 0, "to_target": 0.25,
             "to_target_seconds": 1.0, "first": True, "finals": [0.9, 0.9, 0.91, 0.92]},
            {"id": 3, "optimizer": "bop", "seed": 0, "to_target": None,
             "to_target_seconds": None, "finals": [0.5, 0.6, 0.7, 0.8, 0.85]}]
    got = {r["id"]: r for r in rs.run_records(answer(runs, budget=4),
                                              {1: {"environment": ENV, "state": "succeeded"}})}
    assert (got[1]["to_target"], got[1]["to_target_seconds"], got[1]["first"]) == (2.5, 10.0,
                                                                                    False)
    assert got[2]["first"] is True and got[3]["to_target"] is None
    assert got[3]["final"] == 0.8 and got[3]["horizon_epochs"] == 4.0  # within the budget
    assert got[3]["horizon_seconds"] == 4.0 and got[1]["best"] == 0.91
    assert got[1]["environment"] == env_key({"environment": ENV})
    assert got[2]["environment"] is None  # not listed: unknown


def test_run_records_read_the_epochs_of_a_compare_without_per_run_times():
    """Runs whose compare answer has no per-run times (one evaluation an epoch): the first
    epoch at or above the target, its cumulative seconds; reached at epoch 1 is censored."""
    from study_fixtures import hand_made_compare, hand_made_runs

    runs = hand_made_runs()
    records = {r["id"]: r for r in rs.run_records(hand_made_compare(runs),
                                                  {r["id"]: r for r in runs})}
    bams0 = records[1]  # bamsprod seed 0 reaches 0.891 at epoch 2, 1.5 s an epoch
    assert (bams0["to_target"], bams0["to_target_seconds"], bams0["first"]) == (2.0, 3.0, False)
    early = answer([{"id": 9, "optimizer": "x", "seed": 0, "finals": [0.95, 0.96]}], target=0.9)
    for entry in early["runs"]:
        del entry["to_target"], entry["to_target_seconds"], entry["reached_at_first_eval"]
    (rec,) = rs.run_records(early, {})
    assert rec["to_target"] == 1.0 and rec["first"] is True


def test_seconds_are_not_pooled_across_environments():
    subject = _records("b", [1.0, 1.1, 0.9])
    baseline = _records("a", [3.0, 3.1, 3.05])
    baseline[2]["environment"] = "other"
    task = {"key": "t", "runs": [*subject, *baseline], "tuning": []}
    claims = [{"subject": "b", "baseline": "a", "measure": "speedup_seconds", "claimed": 1.2,
               "null": 1.0, "kind": "speed"},
              {"subject": "b", "baseline": "a", "measure": "speedup_epochs", "claimed": 1.2,
               "null": 1.0, "kind": "speed"}]
    seconds, epochs = rs.claim_results(task, claims)
    assert seconds["verdict"] == "inconclusive" and "span 2 environments" in seconds["why"]
    assert epochs["verdict"] == "holds"
    prof = rs.study_profiles([task], ["a", "b"])
    assert prof["seconds"]["n_tasks"] == 0 and "t" in prof["seconds"]["left_out"]
    assert prof["epochs"]["n_tasks"] == 1


def test_environment_keys():
    assert env_key({"environment": ENV}) == (
        "Test CPU · 1 thread · torch 2.13.0+cpu · python 3.11.7 · bamsprod 0.1")
    two = {**ENV, "threads": 2, "bamsprod": {"version": "0.1", "commit": "abc"}}
    assert env_key({"environment": two}) == (
        "Test CPU · 2 threads · torch 2.13.0+cpu · python 3.11.7 · bamsprod 0.1+abc")
    old = {"device": "cuda (NVIDIA H100 80GB HBM3) · compiled"}
    assert env_key(old) == "device cuda (NVIDIA H100 80GB HBM3)"


# ------------------------------------------------------------------- profiles, robustness


def test_profile_score_against_a_hand_computation():
    """Three tasks, three optimizers. Times (median over seeds; inf: never reached):
    A: x 2, y 4, z inf;  B: x 3, y 3, z 9;  C: x inf, y 5, z 10. Ratios to the fastest:
    A: 1, 2, inf;  B: 1, 1, 3;  C: inf, 1, 2. Area under rho on [1, 4] is the sum of
    (4 - r) over finite r, over 3 tasks, divided by 3:
    x (3 + 3 + 0) / 9 = 2/3;  y (2 + 3 + 3) / 9 = 8/9;  z (0 + 1 + 2) / 9 = 1/3."""
    inf = math.inf
    times = {"A": {"x": 2.0, "y": 4.0, "z": inf}, "B": {"x": 3.0, "y": 3.0, "z": 9.0},
             "C": {"x": inf, "y": 5.0, "z": 10.0}}
    p = pf.profile(times, ["x", "y", "z"])
    assert p["scores"] == pytest.approx({"x": 2 / 3, "y": 8 / 9, "z": 1 / 3})
    assert p["ratios"]["A"] == {"x": 1.0, "y": 2.0, "z": None}
    assert p["solved"] == {"x": 2, "y": 3, "z": 2}
    assert p["steps"]["y"] == {"tau": [1.0, 2.0, 4.0], "rho": [2 / 3, 1.0, 1.0]}
    assert pf.rho([1.0, 3.0, inf], 2.9, 3) == pytest.approx(1 / 3)
    # the exact area against a fine Riemann sum of the step function
    taus = [1 + 3 * (i + 0.5) / 30000 for i in range(30000)]
    for opt in ("x", "y", "z"):
        ratios = [p["ratios"][t][opt] or inf for t in times]
        riemann = sum(pf.rho(ratios, t, 3) for t in taus) / 30000
        assert p["scores"][opt] == pytest.approx(riemann, abs=1e-4)


def test_profile_times_are_medians_over_seeds_with_never_reached_as_infinity():
    assert pf.median_time([2.0, None, 7.0]) == 7.0
    assert pf.median_time([2.0, None, None]) == math.inf
    assert pf.median_time([1.0, 3.0]) == 2.0 and pf.median_time([]) == math.inf
    task = {"key": "t", "runs": [*_records("a", [1.0, 2.0, None]),
                                 *_records("b", [4.0, None, None])]}
    prof = rs.study_profiles([task], ["a", "b"])
    assert prof["epochs"]["times"]["t"] == {"a": 2.0, "b": None}
    assert prof["epochs"]["scores"] == {"a": 1.0, "b": 0.0}


def test_expected_best_of_k_trials_against_a_hand_computation():
    values = [0.80, 0.90, 0.85]
    # k=2: P(max = v_(i)) = ((i/3)^2 - ((i-1)/3)^2) = 1/9, 3/9, 5/9
    assert rb.curve(values) == pytest.approx([
        0.85, (0.80 + 3 * 0.85 + 5 * 0.90) / 9, (0.80 + 7 * 0.85 + 19 * 0.90) / 27])
    # the closed form is the bootstrap's exact mean: every k-tuple drawn with replacement
    for vals in ([0.80, 0.90, 0.85], [0.7, 0.7, 0.9, 0.6]):
        for k in range(1, len(vals) + 1):
            draws = list(itertools.product(vals, repeat=k))
            assert rb.expected_max(vals, k) == pytest.approx(
                sum(max(d) for d in draws) / len(draws))
    with pytest.raises(ValueError):
        rb.expected_max([], 1)


def test_tuning_luck_compares_the_lead_with_the_spread():
    got = rb.task_robustness({"adam": [0.80, 0.90, 0.85], "bamsprod": [0.86, 0.87, None],
                              "bop": [None]})
    assert set(got["rows"]) == {"bamsprod", "adam"}  # bop has no trial with a score
    luck = got["luck"]
    assert (luck["winner"], luck["second"], luck["leader_at_1"]) == ("adam", "bamsprod",
                                                                    "bamsprod")
    e_adam = (0.80 + 7 * 0.85 + 19 * 0.90) / 27
    e_bams = 0.86 * 1 / 4 + 0.87 * 3 / 4
    assert luck["gap_points"] == pytest.approx(100 * (e_adam - e_bams))
    assert luck["spread_points"] == pytest.approx(100 * (e_adam - 0.85))
    assert luck["luck"] is True  # a 0.6-point lead against a 3.3-point spread


# -------------------------------------------------------------------------- shipped studies


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bamsprod", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("name", ["paper", "quick", "cpu"])
def test_dry_run_of_each_shipped_study_states_counts_and_cost(name):
    study = load_study(name)
    cost = study_cost(study)
    got = _cli("study", "run", name, "--dry-run")
    assert got.returncode == 0, got.stderr
    assert f"| **total** | **{cost['runs']}** | **{cost['epochs']}** |" in got.stdout
    assert cost["runs"] == study.n_runs
    assert "GPU: about" in got.stdout and "CPU: about" in got.stdout
    assert "wall time with" in got.stdout


def test_the_cpu_study_fits_75_minutes_with_two_workers():
    """Issue 19's shape: full training sets with a 10% validation split, mlp 512x2 on
    Fashion-MNIST and MNIST, >= 12 epochs and >= 4 evaluations an epoch, six optimizers each
    tuned on validation with >= 3 rates (Bop's gamma too), >= 3 seeds, the map on one seed,
    two worker processes of one thread."""
    study = load_study("cpu")
    assert {t.dataset for t in study.tasks} == {"fashion-mnist", "mnist"}
    for t in study.tasks:
        assert (t.model, t.model_args) == ("mlp", {"width": 512, "depth": 2})
        assert t.train_subset is None and t.test_subset is None and t.val_split == 0.1
        assert t.epochs >= 12 and t.evals_per_epoch >= 4
    assert {s.optimizer for s in study.searches} == {"bamsprod", "adam", "amsgrad", "adabound",
                                                      "bop", "sgd"}
    assert all(s.tuned and len(s.lrs) >= 3 for s in study.searches)
    assert len(study.search("bop").hparams["gamma"]) >= 2
    assert len(study.seeds) >= 3 and study.sensitivity and len(study.sensitivity.seeds) == 1
    assert (study.device, study.workers, study.threads) == ("cpu", 2, 1)
    assert study.target.metric == "val_acc"
    cost = study_cost(study)
    assert cost["cpu_workers"] == 2 and cost["cpu_wall_seconds"] <= 75 * 60
    got = _cli("study", "run", "cpu", "--dry-run")
    wall = fmt_seconds(cost["cpu_wall_seconds"])
    assert f"CPU: about **{wall}** wall time with 2 worker processes of 1 torch thread" \
        in got.stdout


def test_study_list_and_show():
    assert shipped_names() == ["cpu", "paper", "quick"]
    listed = _cli("study", "list")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == shipped_names()
    shown = _cli("study", "show", "quick")
    assert shown.returncode == 0 and parse_study(shown.stdout).n_runs == 119
    missing = _cli("study", "show", "nope")
    assert missing.returncode == 2 and "shipped: cpu, paper, quick" in missing.stderr


def test_study_run_names_the_bad_key_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(WITH_ADAM.replace("epochs = 3", "epochs = 0"))
    got = _cli("study", "run", str(bad), "--dry-run")
    assert got.returncode == 2
    assert f"{bad}:8: tasks[0].epochs:" in " ".join(got.stderr.split())


def test_planning_a_study_imports_no_torch_sql_or_optuna():
    """Issue 21: the plan imported app.tuning (SQLModel, the store, Optuna) for ``lr_grid``."""
    code = ("import sys; import bamsprod.app.studies.studyfile, bamsprod.app.studies.cost, "
            "bamsprod.app.studies.stats, bamsprod.app.studies.report_md; "
            "print(sorted(m for m in ('torch', 'sqlmodel', 'sqlalchemy', 'optuna', 'celery') "
            "if m in sys.modules))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert got.returncode == 0 and got.stdout.strip() == "[]", got.stdout + got.stderr


def test_values_equal_up_to_rounding_are_tied():
    ci = pr.interval([2.0, 2.0 + 1e-12, 2.0 - 1e-12])
    assert 0 < ci["std"] < 1e-11
    assert pr.verdict(ci, 1.2, 1.0)["verdict"] == "inconclusive"


def test_claims_from_interpolated_per_run_times():
    """An answer with per-run times between evaluations: BAMSProd 1.3, 1.25, 1.4 epochs, Adam
    2.1, 2.0, 2.2; speed-ups 2.1/1.3, 2.0/1.25, 2.2/1.4 with their t-interval, by hand."""
    from scipy import stats as sps

    runs = [{"id": 10 + k, "optimizer": "bamsprod", "seed": k, "to_target": t,
             "to_target_seconds": 4 * t, "finals": [0.9, 0.91]}
            for k, t in enumerate([1.3, 1.25, 1.4])]
    runs += [{"id": 20 + k, "optimizer": "adam", "seed": k, "to_target": t,
              "to_target_seconds": 4 * t, "finals": [0.9, 0.9]}
             for k, t in enumerate([2.1, 2.0, 2.2])]
    task = {"key": "t", "runs": rs.run_records(answer(runs, budget=2), {}), "tuning": []}
    claim = {"subject": "bamsprod", "baseline": "adam", "measure": "speedup_epochs",
             "claimed": 1.2, "null": 1.0, "kind": "speed"}
    (got,) = rs.claim_results(task, [claim])
    ratios = [2.1 / 1.3, 2.0 / 1.25, 2.2 / 1.4]
    mean = sum(ratios) / 3
    sd = math.sqrt(sum((r - mean) ** 2 for r in ratios) / 2)
    half = sps.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (got["ci"]["mean"], got["ci"]["lo"], got["ci"]["hi"]) == pytest.approx(
        (mean, mean - half, mean + half))
    assert got["verdict"] == "holds"  # [1.48, 1.69]: above 1 and around... above 1.2


def test_the_embedded_service_gets_the_study_workers_and_threads(monkeypatch, tmp_path):
    from bamsprod.app.studies.service import service_env

    monkeypatch.setenv("BAMSPROD_DATABASE_URL", "postgresql+psycopg://elsewhere/db")
    monkeypatch.setenv("BAMSPROD_API_TOKEN", "t")
    env = service_env(tmp_path, workers=2, threads=1)
    assert env["BAMSPROD_HOME"] == str(tmp_path) and "BAMSPROD_DATABASE_URL" not in env
    assert env["BAMSPROD_WORKER_CONCURRENCY"] == "2" and env["BAMSPROD_API_TOKEN"] == "t"
    assert env["OMP_NUM_THREADS"] == env["BAMSPROD_TORCH_THREADS"] == "1"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in service_env(tmp_path, workers=1, threads=0)
