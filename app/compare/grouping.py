"""Which group a run belongs to: its config hash, or ``field=value`` over ``group_by``; labels
from the fields that vary; the baseline group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Config fields that never define a group by default (they do not change the result).
_NOT_GROUPING = {"seed", "name", "tags", "device", "data_dir", "schema_version", "compile"}


def get_field(config: Mapping[str, Any], dotted: str) -> Any:
    """``get_field(cfg, "hparams.kappa")``; None when absent."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hparams": {"kappa": 1}}`` -> ``{"hparams.kappa": 1}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def group_key(config: Mapping[str, Any], group_by: Sequence[str] | None, config_hash: str) -> str:
    """The group a run belongs to: its config hash, or ``field=value,...`` over ``group_by``."""
    if not group_by:
        return config_hash
    return ",".join(f"{f}={fmt_value(get_field(config, f))}" for f in group_by)


def varying_fields(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted config fields whose values differ between configs (seed, name etc. left out)."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    out = []
    for k in keys:
        if k.split(".")[0] in _NOT_GROUPING:
            continue
        if len({repr(f.get(k)) for f in flat}) > 1:
            out.append(k)
    return out


def group_label(config: Mapping[str, Any], fields: Sequence[str]) -> str:
    """A readable label from the fields that tell groups apart."""
    if not fields:
        return str(config.get("optimizer", "all"))
    return ", ".join(f"{f}={fmt_value(get_field(config, f))}" for f in fields)


def group_runs(
    runs: Sequence[Mapping[str, Any]], group_by: Sequence[str] | None = None
) -> dict[str, list[Mapping[str, Any]]]:
    """Runs by group key, groups and runs in first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        key = group_key(run["config"], group_by, run["config_hash"])
        groups.setdefault(key, []).append(run)
    return groups


def pick_baseline(
    groups: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str | None
) -> str | None:
    """The baseline group key: an exact key, else the first group whose runs all use that
    optimizer; by default the first Adam group, else the first group. None if nothing matches."""
    if not groups:
        return None
    if baseline:
        if baseline in groups:
            return baseline
        for key, runs in groups.items():
            if all(r["config"].get("optimizer") == baseline for r in runs):
                return key
        return None
    for key, runs in groups.items():
        if all(r["config"].get("optimizer") == "adam" for r in runs):
            return key
    return next(iter(groups))
