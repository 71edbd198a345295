"""app.compare on hand-made series: statistics, grouping and the paper's two measures."""

from __future__ import annotations

import math

import pytest

from bamsprod.app import compare as cmp


def run(
    rid: int,
    optimizer: str,
    seed: int,
    accs: list[float],
    seconds: float = 1.0,
    kappa: float = 1.0,
    chash: str | None = None,
) -> dict:
    config = {
        "optimizer": optimizer,
        "seed": seed,
        "lr": 0.001,
        "hparams": {"kappa": kappa},
        "name": f"r{rid}",
    }
    return {
        "id": rid,
        "name": f"r{rid}",
        "seed": seed,
        "state": "succeeded",
        "config": config,
        "config_hash": chash or f"{optimizer}-{kappa}",
        "metrics": [
            {"epoch": i + 1, "test_acc": a, "train_acc": a, "seconds": seconds}
            for i, a in enumerate(accs)
        ],
    }


def test_stat() -> None:
    s = cmp.stat([1.0, 2.0, 3.0, None, math.nan])
    assert (s.mean, s.n) == (2.0, 3)
    assert s.std == pytest.approx(1.0) and s.se == pytest.approx(1 / math.sqrt(3))
    assert cmp.stat([5.0]) == cmp.Stat(5.0, None, 1)
    assert cmp.stat([]) == cmp.Stat(None, None, 0)


def test_fields_keys_and_labels() -> None:
    cfg = {"optimizer": "bop", "hparams": {"kappa": 0.5, "on": True}}
    assert cmp.get_field(cfg, "hparams.kappa") == 0.5 and cmp.get_field(cfg, "hparams.x") is None
    assert cmp.flatten(cfg) == {"optimizer": "bop", "hparams.kappa": 0.5, "hparams.on": True}
    assert (
        cmp.group_key(cfg, ["optimizer", "hparams.kappa"], "h") == "optimizer=bop,hparams.kappa=0.5"
    )
    assert cmp.group_key(cfg, None, "h") == "h"
    configs = [
        {"optimizer": "a", "seed": 1, "name": "x", "hparams": {"k": 1}},
        {"optimizer": "a", "seed": 2, "name": "y", "hparams": {"k": 2}},
    ]
    assert cmp.varying_fields(configs) == ["hparams.k"]
    assert cmp.group_label(configs[0], ["hparams.k"]) == "hparams.k=1"


def test_run_series_and_aggregate_by_epoch_and_time() -> None:
    s1 = cmp.run_series(
        [
            {"epoch": 2, "test_acc": 0.6, "seconds": 2.0},
            {"epoch": 1, "test_acc": 0.4, "seconds": 1.0},
        ],
        x="time",
    )
    assert s1["epoch"] == [1, 2] and s1["x"] == [1.0, 3.0] and s1["test_acc"] == [0.4, 0.6]
    s2 = cmp.run_series([{"epoch": 1, "test_acc": 0.6, "seconds": 3.0}], x="time")
    agg = cmp.aggregate([s1, s2], metrics=["test_acc"])
    assert agg["epoch"] == [1, 2] and agg["n"] == [2, 1]
    assert agg["x"] == [2.0, 3.0]  # mean elapsed seconds at that epoch
    assert agg["mean"]["test_acc"] == pytest.approx([0.5, 0.6])
    assert agg["std"]["test_acc"][0] == pytest.approx(math.sqrt(0.02))
    assert agg["std"]["test_acc"][1] is None  # n = 1


def near(got: cmp.Reach, epochs: float, seconds: float, at_first: bool = False) -> bool:
    """``got`` is ``(epochs, seconds, at_first)``, to rounding."""
    return (got.epochs, got.seconds, got.at_first) == (
        pytest.approx(epochs), pytest.approx(seconds), at_first)


def test_time_to_target_is_interpolated_between_the_straddling_points() -> None:
    epochs, seconds, ys = [1, 2, 3, 4], [10.0, 20.0, 30.0, 40.0], [0.2, 0.4, 0.8, 0.9]
    # Straddled by epochs 2 (0.4) and 3 (0.8): half-way, in epochs and in seconds alike.
    assert near(cmp.reach(epochs, seconds, ys, 0.6), 2.5, 25.0)
    # A quarter of the way from 3 (0.8) to 4 (0.9).
    assert near(cmp.reach(epochs, seconds, ys, 0.825), 3.25, 32.5)
    # Reached exactly on a point: that point.
    assert cmp.reach(epochs, seconds, ys, 0.8) == cmp.Reach(3.0, 30.0)
    assert cmp.reach(epochs, seconds, ys, 0.9) == cmp.Reach(4.0, 40.0)
    # Reached at the first point: that point, flagged; nothing extrapolated before it.
    assert cmp.reach(epochs, seconds, ys, 0.1) == cmp.Reach(1.0, 10.0, at_first=True)
    assert cmp.reach(epochs, seconds, ys, 0.2) == cmp.Reach(1.0, 10.0, at_first=True)
    # Never reached, or not within the budget.
    assert cmp.reach(epochs, seconds, ys, 0.95) == cmp.Reach(None, None)
    assert cmp.reach(epochs, seconds, ys, 0.6, budget=2) == cmp.Reach(None, None)
    assert near(cmp.reach(epochs, seconds, ys, 0.6, budget=3), 2.5, 25.0)
    # Missing and non-finite values are skipped: straddled by epochs 1 (0.2) and 4 (0.8).
    gappy = [0.2, None, math.nan, 0.8]
    assert near(cmp.reach(epochs, seconds, gappy, 0.5), 2.5, 25.0)
    assert cmp.crossing(gappy, 0.5) == (0, 3, pytest.approx(0.5))
    assert cmp.crossing([None, 0.7], 0.5) == (1, 1, 1.0)  # the first usable point
    assert cmp.crossing([0.1, 0.2], 0.5) is None


def test_time_to_target_within_epochs_from_evaluation_points() -> None:
    # Four evaluations an epoch: straddled by 0.5 (0.50) and 0.75 (0.60), half-way.
    evals = {"epoch": [0.25, 0.5, 0.75, 1.0], "train_seconds": [1.5, 3.0, 4.5, 6.0],
             "val_acc": [0.3, 0.5, 0.6, 0.7]}
    series = {"epoch": [1], "seconds": [6.0], "val_acc": [0.7], "test_acc": [0.65]}
    got = cmp.run_reach(series, evals, "val_acc", 0.55)
    assert near(got, 0.625, 3.75) and got.source == "evals"
    # The same run's epochs alone say only "by epoch 1", at its first (and only) evaluation.
    assert cmp.run_reach(series, None, "val_acc", 0.55) == cmp.Reach(1.0, 6.0, at_first=True)
    # Test accuracy is read from the epochs, whatever evaluation points the run has.
    assert cmp.run_reach(series, evals, "test_acc", 0.6).source == "epochs"
    assert cmp.run_reach(series, evals, "val_acc", None) == cmp.Reach(None, None, source="evals")


def test_two_claims_on_paired_seeds() -> None:
    # Adam's best mean is 0.80 (epoch 4), so the target is 0.792. Adam crosses it 60% of the
    # way from epoch 3 (0.78) to 4 (0.80): 3.6 epochs. BAMSProd seed 0: 96% of the way from
    # epoch 1 (0.60) to 2 (0.80), 1.96; seed 1: 84% from epoch 2 (0.75) to 3 (0.80), 2.84.
    runs = [
        run(1, "adam", 0, [0.50, 0.70, 0.78, 0.80]),
        run(2, "adam", 1, [0.50, 0.70, 0.78, 0.80]),
        run(3, "bamsprod", 0, [0.60, 0.80, 0.82, 0.84]),
        run(4, "bamsprod", 1, [0.60, 0.75, 0.80, 0.82]),
    ]
    out = cmp.compare(runs, group_by=["optimizer"], baseline="adam")
    assert out["baseline"] == "optimizer=adam" and out["budget"] == 4
    assert out["target"] == pytest.approx(0.792)
    adam, bams = out["groups"]
    assert adam["to_target"]["mean"] == pytest.approx(3.6) and adam["speedup"] == 1.0
    assert bams["to_target"]["mean"] == pytest.approx((1.96 + 2.84) / 2)
    assert bams["to_target"]["at_first_eval"] == 0
    assert bams["speedup"] == pytest.approx(3.6 / 2.4)
    assert bams["speedup_paired"]["mean"] == pytest.approx((3.6 / 1.96 + 3.6 / 2.84) / 2)
    assert bams["speedup_paired"]["n"] == 2
    # Per run, in epochs and in seconds (epochs of 1 s here), for per-seed measures.
    by_id = {r["id"]: r for r in out["runs"]}
    assert by_id[3]["to_target"] == pytest.approx(1.96)
    assert by_id[3]["to_target_seconds"] == pytest.approx(1.96)
    assert by_id[4]["to_target"] == pytest.approx(2.84)
    assert not by_id[4]["reached_at_first_eval"] and by_id[4]["to_target_from"] == "epochs"
    diff = bams["final_diff"]
    assert diff["paired"] and diff["n"] == 2
    assert diff["mean"] == pytest.approx(0.03) and diff["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert bams["best"]["mean"] == pytest.approx(0.83) and bams["final"]["n"] == 2
    assert adam["final_diff"]["mean"] == 0.0
    assert bams["series"]["mean"]["test_acc"][0] == pytest.approx(0.60)
    assert [r["group"] for r in out["runs"]] == ["optimizer=adam"] * 2 + ["optimizer=bamsprod"] * 2


def test_ties_in_whole_epochs_are_told_apart_between_them() -> None:
    # Both optimizers cross the target within epoch 2: counted in whole epochs they tie at 2
    # on every seed (a zero-width 1.00x), interpolated they do not.
    runs = [
        run(1, "adam", 0, [0.5, 0.9]), run(2, "adam", 1, [0.5, 0.9]),
        run(3, "bamsprod", 0, [0.7, 0.9]), run(4, "bamsprod", 1, [0.6, 0.9]),
    ]
    out = cmp.compare(runs, group_by=["optimizer"], baseline="adam", target=0.8)
    adam, bams = out["groups"]
    assert adam["to_target"]["mean"] == pytest.approx(1.75)  # 3/4 of the way from 0.5 to 0.9
    assert [r["to_target"] for r in out["runs"][2:]] == pytest.approx([1.5, 1 + 2 / 3])
    assert bams["speedup_paired"]["mean"] == pytest.approx((1.75 / 1.5 + 1.75 / (5 / 3)) / 2)
    assert bams["speedup_paired"]["std"] > 0


def test_reached_at_the_first_evaluation_is_flagged() -> None:
    runs = [run(1, "adam", 0, [0.5, 0.9]), run(2, "bamsprod", 0, [0.85, 0.9]),
            run(3, "bamsprod", 1, [0.7, 0.9])]
    out = cmp.compare(runs, group_by=["optimizer"], baseline="adam", target=0.8)
    first, later = out["runs"][1], out["runs"][2]
    assert first["reached_at_first_eval"] and first["to_target"] == 1.0
    assert not later["reached_at_first_eval"] and later["to_target"] == pytest.approx(1.5)
    assert out["groups"][1]["to_target"]["at_first_eval"] == 1
    assert cmp.summary_rows(out)[1]["reached_at_first_eval"] == 1


def test_an_old_run_without_evaluation_points_compares_with_a_new_one() -> None:
    # The old run evaluated once an epoch (its epochs' val_acc); the new one four times an
    # epoch (its evaluation points). Target 0.6 on val_acc:
    # old: 2/3 of the way from epoch 1 (0.4) to 2 (0.7): 1.667 epochs, 2 + 2 * 2/3 s;
    # new: 5/6 of the way from 1.0 (0.50) to 1.25 (0.62): 1.208 epochs, 2 + 0.5 * 5/6 s.
    old = run(1, "adam", 0, [0.5, 0.7, 0.8], seconds=2.0)
    for m, v in zip(old["metrics"], [0.4, 0.7, 0.8], strict=True):
        m["val_acc"] = v
    new = run(2, "bamsprod", 0, [0.5, 0.7, 0.8], seconds=2.0)
    vals = [0.2, 0.3, 0.4, 0.5, 0.62, 0.65, 0.68, 0.7, 0.75, 0.77, 0.79, 0.8]
    for m, v in zip(new["metrics"], vals[3::4], strict=True):
        m["val_acc"] = v
    new["evals"] = {"step": list(range(1, 13)), "epoch": [k / 4 for k in range(1, 13)],
                    "train_seconds": [k / 2 for k in range(1, 13)], "val_acc": vals}
    out = cmp.compare([old, new], group_by=["optimizer"], baseline="adam", target=0.6,
                      metric="val_acc")
    o, n = out["runs"]
    assert (o["to_target_from"], n["to_target_from"]) == ("epochs", "evals")
    assert o["to_target"] == pytest.approx(1 + 2 / 3)
    assert o["to_target_seconds"] == pytest.approx(2 + 2 * 2 / 3)
    assert n["to_target"] == pytest.approx(1 + 0.25 * 5 / 6)
    assert n["to_target_seconds"] == pytest.approx(2 + 0.5 * 5 / 6)
    bams = out["groups"][1]
    assert bams["speedup"] == pytest.approx((1 + 2 / 3) / (1 + 0.25 * 5 / 6))
    assert bams["speedup_seconds"] == pytest.approx((2 + 4 / 3) / (2 + 5 / 12))
    assert bams["speedup_paired"]["n"] == 1
    timed = cmp.compare([old, new], group_by=["optimizer"], baseline="adam", target=0.6,
                        metric="val_acc", x="time")
    assert timed["groups"][1]["to_target"]["mean"] == pytest.approx(2 + 5 / 12)
    with_runs = cmp.compare([old, new], target=0.6, metric="val_acc", include_runs=True)
    assert with_runs["runs"][1]["evals"]["val_acc"] == vals
    assert with_runs["runs"][0]["evals"] is None


def test_unpaired_difference_uses_welch_and_budget_is_common() -> None:
    runs = [
        run(1, "bop", 0, [0.5, 0.6]),
        run(2, "bop", 1, [0.5, 0.8]),
        run(3, "bamsprod", 7, [0.7, 0.9, 0.99]),  # a third epoch past the common budget
        run(4, "bamsprod", 8, [0.7, 0.8, 0.99]),
    ]
    out = cmp.compare(runs, group_by=["optimizer"], baseline="bop", target=0.8)
    assert out["budget"] == 2 and out["target"] == 0.8 and out["target_source"] == "given"
    bop, bams = out["groups"]
    diff = bams["final_diff"]
    assert not diff["paired"]
    assert diff["mean"] == pytest.approx(0.85 - 0.7)
    var_bop, var_bams = 0.02, 0.005  # sample variances of finals 0.6/0.8 and 0.9/0.8
    assert diff["se"] == pytest.approx(math.sqrt(var_bop / 2 + var_bams / 2))
    assert diff["std"] == pytest.approx(math.sqrt(var_bop + var_bams))
    assert bams["best"]["mean"] == pytest.approx(0.85)  # epoch 3 is outside the budget
    assert bop["to_target"]["reached"] == 1 and bams["to_target"]["reached"] == 2
    assert bams["speedup_paired"] is None  # no shared seeds


def test_default_groups_pool_seeds_and_default_baseline() -> None:
    runs = [
        run(1, "bop", 0, [0.5], chash="h1"),
        run(2, "bop", 1, [0.7], chash="h1"),
        run(3, "adam", 0, [0.6], chash="h2"),
    ]
    out = cmp.compare(runs)
    assert [g["key"] for g in out["groups"]] == ["h1", "h2"]
    assert out["baseline"] == "h2"  # Adam, as the spec's speed measure uses
    assert out["groups"][0]["n"] == 2 and out["groups"][0]["label"] == "optimizer=bop"
    assert out["fields"] == ["optimizer"]
    with pytest.raises(ValueError, match="matches no group"):
        cmp.compare(runs, baseline="sgd")
    with pytest.raises(ValueError, match="metric"):
        cmp.compare(runs, metric="train_loss")


def test_repeated_seeds_in_a_group_are_not_paired() -> None:
    # group_by optimizer pools two kappas with the same seeds: pairing would be ambiguous.
    runs = [
        run(1, "adam", 0, [0.5]),
        run(2, "bamsprod", 0, [0.6], kappa=1.0),
        run(3, "bamsprod", 0, [0.8], kappa=2.0),
    ]
    out = cmp.compare(runs, group_by=["optimizer"], baseline="adam")
    diff = out["groups"][1]["final_diff"]
    assert not diff["paired"] and diff["mean"] == pytest.approx(0.2)
    assert out["groups"][1]["n"] == 2


def test_csv_rows() -> None:
    out = cmp.compare(
        [run(1, "adam", 0, [0.5, 0.6]), run(2, "bop", 0, [0.4, 0.7])], group_by=["optimizer"]
    )
    assert len(cmp.series_rows(out)) == 4 and cmp.series_rows(out)[0]["test_acc_mean"] == 0.5
    summary = cmp.summary_rows(out)
    assert [r["group"] for r in summary] == ["optimizer=adam", "optimizer=bop"]
    assert tuple(summary[0]) == cmp.SUMMARY_COLUMNS
    assert len(cmp.runs_rows(out)) == 4


def test_columns_input_gives_the_same_answer_as_per_epoch_dicts() -> None:
    runs = [run(1, "adam", 0, [0.5, 0.7, 0.8], seconds=2.0), run(2, "adam", 1, [0.4, 0.6]),
            run(3, "bop", 0, [0.3, 0.5, 0.75], seconds=0.5)]
    as_columns = []
    for r in runs:
        cols = {k: [m.get(k) for m in r["metrics"]] for k in ("epoch", *cmp.SERIES_METRICS)}
        as_columns.append({k: v for k, v in r.items() if k != "metrics"} | {"columns": cols})
    for x in ("epoch", "time"):
        want = cmp.compare(runs, group_by=["optimizer"], x=x)
        got = cmp.compare(as_columns, group_by=["optimizer"], x=x)
        assert got == want
        slim = cmp.compare(as_columns, group_by=["optimizer"], x=x, include_runs=False)
        assert slim["groups"] == want["groups"] and slim["runs"][0]["series"] is None
    assert got["runs"][0]["series"]["x"] == [2.0, 4.0, 6.0]


def test_seconds_to_target_by_hand() -> None:
    # Target 0.8 (given), interpolated. adam, epochs of 2 s: seed 0 crosses 2/3 of the way from
    # epoch 2 (0.70) to 3 (0.85): 2.667 epochs, 4 + 2 * 2/3 = 5.333 s; seed 1 crosses 20/21 of
    # the way from epoch 1 (0.60) to 2 (0.81): 1.952 epochs, 2 + 2 * 20/21 = 3.905 s.
    # bamsprod, epochs of 3 s: seed 0, 5/6 of the way from 1 (0.70) to 2 (0.82): 1.833 epochs,
    # 5.5 s; seed 1, 2/3 from 1 (0.70) to 2 (0.85): 1.667 epochs, 5 s. In epochs bamsprod is
    # faster, in seconds slower.
    runs = [
        run(1, "adam", 0, [0.5, 0.7, 0.85, 0.9], seconds=2.0),
        run(2, "adam", 1, [0.6, 0.81, 0.85, 0.9], seconds=2.0),
        run(3, "bamsprod", 0, [0.7, 0.82, 0.9, 0.9], seconds=3.0),
        run(4, "bamsprod", 1, [0.7, 0.85, 0.9, 0.9], seconds=3.0),
    ]
    result = cmp.compare(runs, group_by=["optimizer"], baseline="optimizer=adam", target=0.8)
    groups = {g["key"]: g for g in result["groups"]}
    adam, bams = groups["optimizer=adam"], groups["optimizer=bamsprod"]
    adam_s, adam_e = (16 / 3 + 2 + 40 / 21) / 2, (8 / 3 + 1 + 20 / 21) / 2
    assert adam["to_target_seconds"]["mean"] == pytest.approx(adam_s)
    assert adam["to_target_seconds"]["reached"] == 2
    assert adam["to_target"]["mean"] == pytest.approx(adam_e)
    assert bams["to_target_seconds"]["mean"] == pytest.approx(5.25)
    assert bams["to_target"]["mean"] == pytest.approx(1.75)
    assert bams["speedup"] == pytest.approx(adam_e / 1.75)
    assert bams["speedup_seconds"] == pytest.approx(adam_s / 5.25)
    row = next(r for r in cmp.summary_rows(result) if r["group"] == "optimizer=bamsprod")
    assert row["to_target_seconds_mean"] == pytest.approx(5.25)


def _aggregate_by_hand(series: list[dict], name: str) -> tuple[list, list, list, list]:
    """Epochs, n, mean and sample std of ``name`` per epoch, one epoch at a time."""
    epochs = sorted({e for s in series for e in s["epoch"]})
    ns, means, stds = [], [], []
    for e in epochs:
        held = [s[name][s["epoch"].index(e)] for s in series if e in s["epoch"]]
        ns.append(len(held))
        xs = [v for v in held if v is not None and math.isfinite(v)]
        mean = sum(xs) / len(xs) if xs else None
        means.append(mean)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in xs) / (len(xs) - 1))
                    if len(xs) > 1 else None)
    return epochs, ns, means, stds


def test_aggregate_matches_a_hand_computation_with_gaps_missing_and_non_finite_values() -> None:
    import random

    rng = random.Random(7)
    series = []
    for _ in range(9):
        epochs = sorted(rng.sample(range(1, 13), rng.randint(0, 12)))  # gaps; one may be empty
        values = [rng.choice([None, math.nan, math.inf, rng.random()]) if rng.random() < 0.2
                  else rng.random() for _ in epochs]
        series.append({"epoch": epochs, "x": epochs, "test_acc": values})
    agg = cmp.aggregate(series, metrics=["test_acc"])
    epochs, ns, means, stds = _aggregate_by_hand(series, "test_acc")
    assert agg["epoch"] == epochs and agg["n"] == ns
    assert [m is None for m in agg["mean"]["test_acc"]] == [m is None for m in means]
    assert [s is None for s in agg["std"]["test_acc"]] == [s is None for s in stds]
    for got, want in zip(agg["mean"]["test_acc"] + agg["std"]["test_acc"], means + stds,
                         strict=True):
        assert got == want or got == pytest.approx(want, rel=1e-12)
    assert agg["x"] == [float(e) for e in epochs]
    assert cmp.aggregate([], metrics=["test_acc"]) == {
        "epoch": [], "x": [], "n": [], "mean": {"test_acc": []}, "std": {"test_acc": []}}
