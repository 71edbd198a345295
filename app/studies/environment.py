"""Where runs ran: one text key per environment, so seconds are compared only within one.

A run's ``environment`` (``torch``, ``python``, ``bamsprod``, ``device_name``, ``threads``;
stored by the worker that trained it) gives the key; a run stored before that field existed
falls back to its ``device`` text (``cpu``, ``cuda (NVIDIA H100 ...)``) without the optimizer
path. Two runs share an environment only when every part of the key agrees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

PARTS = ("device_name", "threads", "torch", "python", "bamsprod")


def device_of(run: Mapping[str, Any]) -> str:
    """The device a run trained on: its stored device without the optimizer path
    (``cuda (NVIDIA H100 80GB HBM3) · compiled`` -> ``cuda (NVIDIA H100 80GB HBM3)``)."""
    return str(run.get("device") or "?").split(" · ")[0]


def _text(value: Any) -> str:
    if isinstance(value, Mapping):  # {"version": "0.1.0", "commit": "b26f480c..."}
        return "+".join(str(v)[:12] if k == "commit" else str(v) for k, v in value.items()
                        if v not in (None, ""))
    return str(value)


def env_key(run: Mapping[str, Any]) -> str:
    """``AMD EPYC 7B13 · 1 thread · torch 2.13.0+cpu · python 3.11.7 · bamsprod 0.9.0``, or
    ``device cpu`` for a run without an ``environment``."""
    env = run.get("environment")
    if not isinstance(env, Mapping) or not env:
        return f"device {device_of(run)}"
    parts = []
    for key in PARTS:
        if env.get(key) in (None, ""):
            continue
        value = _text(env[key])
        if key == "threads":
            parts.append(f"{value} thread{'' if value == '1' else 's'}")
        elif key == "device_name":
            parts.append(value)
        else:
            parts.append(f"{key} {value}")
    extra = sorted(k for k in env if k not in PARTS)
    parts += [f"{k} {_text(env[k])}" for k in extra]
    return " · ".join(parts)


def summary(keys: Iterable[str]) -> list[dict[str, Any]]:
    """Each environment with its number of runs, most runs first."""
    return [{"environment": k, "runs": n} for k, n in Counter(keys).most_common()]
