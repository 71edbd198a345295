"""A comparison as flat rows (for CSV): one per group, per (group, epoch) or per (run, epoch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bamsprod.app.compare.series import SERIES_METRICS

SUMMARY_COLUMNS = (
    "group",
    "label",
    "n",
    "best_mean",
    "best_std",
    "final_mean",
    "final_std",
    "to_target_mean",
    "to_target_std",
    "reached",
    "reached_at_first_eval",
    "to_target_seconds_mean",
    "to_target_seconds_std",
    "speedup",
    "speedup_seconds",
    "speedup_paired_mean",
    "speedup_paired_std",
    "final_diff_mean",
    "final_diff_std",
    "final_diff_se",
    "final_diff_n",
    "final_diff_paired",
)


def summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per group (for CSV)."""
    rows = []
    for g in result["groups"]:
        sp = g["speedup_paired"] or {}
        fd = g["final_diff"] or {}
        rows.append(
            {
                "group": g["key"],
                "label": g["label"],
                "n": g["n"],
                "best_mean": g["best"]["mean"],
                "best_std": g["best"]["std"],
                "final_mean": g["final"]["mean"],
                "final_std": g["final"]["std"],
                "to_target_mean": g["to_target"]["mean"],
                "to_target_std": g["to_target"]["std"],
                "reached": g["to_target"]["reached"],
                "reached_at_first_eval": g["to_target"].get("at_first_eval", 0),
                "to_target_seconds_mean": g["to_target_seconds"]["mean"],
                "to_target_seconds_std": g["to_target_seconds"]["std"],
                "speedup": g["speedup"],
                "speedup_seconds": g["speedup_seconds"],
                "speedup_paired_mean": sp.get("mean"),
                "speedup_paired_std": sp.get("std"),
                "final_diff_mean": fd.get("mean"),
                "final_diff_std": fd.get("std"),
                "final_diff_se": fd.get("se"),
                "final_diff_n": fd.get("n"),
                "final_diff_paired": fd.get("paired"),
            }
        )
    return rows


def series_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form group series, one row per (group, epoch) (for CSV)."""
    rows = []
    for g in result["groups"]:
        s = g["series"]
        for i, epoch in enumerate(s["epoch"]):
            row: dict[str, Any] = {
                "group": g["key"],
                "epoch": epoch,
                "x": s["x"][i],
                "n": s["n"][i],
            }
            for m in SERIES_METRICS:
                row[f"{m}_mean"] = s["mean"][m][i]
                row[f"{m}_std"] = s["std"][m][i]
            rows.append(row)
    return rows


def runs_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form per-run series, one row per (run, epoch) (for CSV)."""
    rows = []
    for r in result["runs"]:
        s = r["series"] or {"epoch": []}
        for i, epoch in enumerate(s["epoch"]):
            row: dict[str, Any] = {
                "run_id": r["id"],
                "group": r["group"],
                "seed": r["seed"],
                "epoch": epoch,
                "x": s["x"][i],
            }
            for m in SERIES_METRICS:
                row[m] = s[m][i]
            rows.append(row)
    return rows
