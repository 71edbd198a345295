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


def test_first_reach_and_budget() -> None:
    xs, ys = [1, 2, 3, 4], [0.1, 0.5, None, 0.9]
    assert cmp.first_reach(xs, ys, 0.5) == 2
    assert cmp.first_reach(xs, ys, 0.8) == 4
    assert cmp.first_reach(xs, ys, 0.8, epochs=xs, budget=3) is None
    assert cmp.first_reach(xs, ys, 0.95) is None


def test_two_claims_on_paired_seeds() -> None:
    # Adam reaches its best 0.80 by epoch 4; BAMSProd reaches 0.792 (= 0.99 x 0.80) sooner.
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
    assert adam["to_target"]["mean"] == 4 and adam["speedup"] == 1.0
    assert bams["to_target"]["mean"] == 2.5  # epochs 2 and 3
    assert bams["speedup"] == pytest.approx(4 / 2.5)
    assert bams["speedup_paired"]["mean"] == pytest.approx((4 / 2 + 4 / 3) / 2)
    assert bams["speedup_paired"]["n"] == 2
    diff = bams["final_diff"]
    assert diff["paired"] and diff["n"] == 2
    assert diff["mean"] == pytest.approx(0.03) and diff["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert bams["best"]["mean"] == pytest.approx(0.83) and bams["final"]["n"] == 2
    assert adam["final_diff"]["mean"] == 0.0
    assert bams["series"]["mean"]["test_acc"][0] == pytest.approx(0.60)
    assert [r["group"] for r in out["runs"]] == ["optimizer=adam"] * 2 + ["optimizer=bamsprod"] * 2


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
    # Target 0.8 (given). adam: epochs of 2 s reach it at epoch 3 (seed 0) and 2 (seed 1):
    # 6 s and 4 s, mean 5 s. bamsprod: epochs of 3 s reach it at epoch 2 (both seeds): 6 s.
    # In epochs bamsprod is faster (2 vs 2.5: 1.25x); in seconds it is slower (5/6 = 0.83x).
    runs = [
        run(1, "adam", 0, [0.5, 0.7, 0.85, 0.9], seconds=2.0),
        run(2, "adam", 1, [0.6, 0.81, 0.85, 0.9], seconds=2.0),
        run(3, "bamsprod", 0, [0.7, 0.82, 0.9, 0.9], seconds=3.0),
        run(4, "bamsprod", 1, [0.7, 0.85, 0.9, 0.9], seconds=3.0),
    ]
    result = cmp.compare(runs, group_by=["optimizer"], baseline="optimizer=adam", target=0.8)
    groups = {g["key"]: g for g in result["groups"]}
    adam, bams = groups["optimizer=adam"], groups["optimizer=bamsprod"]
    assert adam["to_target_seconds"]["mean"] == pytest.approx(5.0)
    assert adam["to_target_seconds"]["reached"] == 2
    assert bams["to_target_seconds"]["mean"] == pytest.approx(6.0)
    assert bams["to_target"]["mean"] == pytest.approx(2.0)
    assert bams["speedup"] == pytest.approx(1.25)
    assert bams["speedup_seconds"] == pytest.approx(5.0 / 6.0)
    row = next(r for r in cmp.summary_rows(result) if r["group"] == "optimizer=bamsprod")
    assert row["to_target_seconds_mean"] == pytest.approx(6.0)


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
