"""Paired seeds: per-seed speed-ups and accuracy gains between two optimizers, their
t-interval (``scipy.stats.t``) and the verdict on a claim (:data:`VERDICT_RULE`).

A record is one run: ``seed``, ``to_target`` / ``to_target_seconds`` (None: never reached),
``first`` (reached at its first evaluation), ``horizon_epochs`` / ``horizon_seconds`` (the last
evaluation within the budget) and ``final`` (test accuracy). A pair is measured when both runs
reached the target after their first evaluation; otherwise it is censored, and only bounds its
ratio (``docs/studies.md``, "Intervals and verdicts").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats as sps

LEVEL = 0.95
MIN_PAIRS = 3
# Paired values whose spread is below this (relative to the mean) are tied: equal up to
# floating-point rounding.
TIE = 1e-9
VERDICT_RULE = (
    f"{LEVEL:.0%} t-interval (scipy.stats.t) over the measured paired seeds (seed k of the "
    "subject with seed k of the baseline). Holds: the interval lies above no effect (1× or 0 "
    "points) and not wholly below the claimed value. Does not hold: it lies wholly below the "
    "claimed value (even if above no effect). Inconclusive: anything else, and always with "
    f"fewer than {MIN_PAIRS} measured pairs, with tied pairs (zero spread: a zero-width "
    "interval is no evidence), with runs from different environments (seconds), or when a "
    "censored pair (a target reached at a run's first evaluation, or never reached by one of "
    "the two) could lie on the other side of the verdict."
)


def ok(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------- t-intervals


def t_quantile(level: float, df: int) -> float:
    """The two-sided ``level`` quantile of Student's t: P(|T| <= q) = level."""
    if df < 1 or not 0 < level < 1:
        raise ValueError("need df >= 1 and 0 < level < 1")
    return float(sps.t.ppf((1 + level) / 2, df))


def interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample std, n, standard error and the t-interval of ``values`` (``lo``/``hi``
    None for n < 2)."""
    xs = [float(v) for v in values if ok(v)]
    n = len(xs)
    out: dict[str, Any] = {"mean": None, "std": None, "n": n, "se": None, "lo": None,
                           "hi": None, "level": level, "paired": True}
    if n:
        out["mean"] = statistics.fmean(xs)
    if n >= 2:
        out["std"] = statistics.stdev(xs)
        out["se"] = out["std"] / math.sqrt(n)
        half = t_quantile(level, n - 1) * out["se"]
        out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def verdict(ci: Mapping[str, Any] | None, claimed: float, null: float) -> dict[str, str]:
    """Holds / does not hold / inconclusive for a claim of ``claimed`` against no effect
    ``null``, from a paired interval (see :data:`VERDICT_RULE`)."""
    if not ci:
        return {"verdict": "inconclusive", "why": "no paired values"}
    if ci.get("mixed"):
        return {"verdict": "inconclusive",
                "why": f"the runs span {len(ci['mixed'])} environments: seconds are not pooled"}
    if not ci.get("paired"):
        return {"verdict": "inconclusive", "why": "the seeds do not pair up"}
    n = ci.get("n", 0)
    extra = _censored_text(ci)
    if n < MIN_PAIRS:
        return {"verdict": "inconclusive",
                "why": f"{n} measured paired seed{'' if n == 1 else 's'} ({MIN_PAIRS} "
                       f"needed){extra}"}
    lo, hi = ci.get("lo"), ci.get("hi")
    if not ok(lo) or not ok(hi) or not ok(ci.get("std")) or ci["std"] <= TIE * max(
            1.0, abs(ci["mean"])):
        return {"verdict": "inconclusive",
                "why": f"the {n} paired values are tied (zero spread): a zero-width interval "
                       "is no evidence"}
    if hi < claimed:
        against = [c for c in ci.get("censored", []) if c["hi"] is None or c["hi"] >= claimed]
        if against:
            return {"verdict": "inconclusive", "why": _against(against, "at or above the claim")}
        side = "above no effect, " if lo > null else ""
        return {"verdict": "does not hold",
                "why": f"the interval lies {side}wholly below the claimed {claimed:g}{extra}"}
    if lo > null:
        against = [c for c in ci.get("censored", []) if not c["lo"] > null]
        if against:
            return {"verdict": "inconclusive", "why": _against(against, "at or below no effect")}
        where = "above" if lo > claimed else "around"
        return {"verdict": "holds",
                "why": f"the interval excludes no effect ({null:g}) and lies {where} the "
                       f"claimed {claimed:g}{extra}"}
    return {"verdict": "inconclusive",
            "why": f"the interval holds both no effect ({null:g}) and the claimed {claimed:g}"
                   f"{extra}"}


def _censored_text(ci: Mapping[str, Any]) -> str:
    parts = []
    if ci.get("censored"):
        parts.append(f"{len(ci['censored'])} censored pair(s) left out")
    if ci.get("neither"):
        parts.append(f"neither reached the target on seed(s) "
                     f"{', '.join(str(s) for s in ci['neither'])}")
    return f"; {'; '.join(parts)}" if parts else ""


def _against(censored: Sequence[Mapping[str, Any]], side: str) -> str:
    seeds = ", ".join(f"{c['seed']} ({c['why']})" for c in censored)
    return f"censored pair(s) could lie {side}: seed {seeds}"


# ------------------------------------------------------------------------ paired values


def _bounds(rec: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """(low, high) of a run's true time to target: exact, (0, t] when reached at its first
    evaluation, (horizon, inf) when never reached; None without data."""
    t = rec.get(key)
    horizon = rec.get("horizon_epochs" if key == "to_target" else "horizon_seconds")
    if t is None:
        return (horizon, math.inf) if ok(horizon) else None
    return (0.0, float(t)) if rec.get("first") else (float(t), float(t))


def _div(a: float, b: float) -> float:
    if b == 0:
        return math.inf
    return 0.0 if math.isinf(b) else a / b


def _by_seed(records: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]] | None:
    seeds = [r.get("seed") for r in records]
    if any(s is None for s in seeds) or len(set(seeds)) != len(seeds):
        return None
    return {int(r["seed"]): r for r in records}


def paired_speedup(subject: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]],
                   unit: str = "epochs") -> dict[str, Any] | None:
    """Speed-up baseline time / subject time, seed by seed. Measured pairs (both reached the
    target after their first evaluation) give the interval; a censored pair gives only bounds
    on its ratio (``censored``: seed, lo, hi, why); seeds where neither reached the target are
    listed in ``neither``. None when there is nothing to pair."""
    key = "to_target" if unit == "epochs" else "to_target_seconds"
    s_seed, b_seed = _by_seed(subject), _by_seed(baseline)
    if s_seed is None or b_seed is None:
        return {**interval([]), "paired": False} if subject and baseline else None
    shared = sorted(set(s_seed) & set(b_seed))
    if not shared:
        return None
    values, censored, neither = [], [], []
    for seed in shared:
        s, b = _bounds(s_seed[seed], key), _bounds(b_seed[seed], key)
        if s is None or b is None:
            continue
        if s[0] == s[1] and b[0] == b[1] and s[0] > 0:
            values.append(b[0] / s[0])
            continue
        if math.isinf(s[1]) and math.isinf(b[1]):
            neither.append(seed)
            continue
        why = []
        for who, (lo, hi), rec in (("subject", s, s_seed[seed]), ("baseline", b, b_seed[seed])):
            if math.isinf(hi):
                why.append(f"{rec.get('optimizer') or who} never reached")
            elif lo != hi:
                why.append(f"{rec.get('optimizer') or who} at its first evaluation")
        censored.append({"seed": seed, "lo": _div(b[0], s[1]), "hi": _div(b[1], s[0]),
                         "why": ", ".join(why)})
    out = interval(values)
    out.update(censored=_finite_json(censored), neither=neither, pairs=len(shared),
               values=values)
    return out


def _finite_json(censored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bounds with an infinite upper bound as None (standard JSON); :func:`verdict` reads
    None as unbounded."""
    return [{**c, "hi": c["hi"] if math.isfinite(c["hi"]) else None} for c in censored]


def paired_gain(subject: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]]
                ) -> dict[str, Any] | None:
    """Final accuracy subject - baseline in points, seed by seed, with its interval."""
    s_seed, b_seed = _by_seed(subject), _by_seed(baseline)
    if s_seed is None or b_seed is None:
        return {**interval([]), "paired": False} if subject and baseline else None
    shared = sorted(set(s_seed) & set(b_seed))
    diffs = [100 * (s_seed[k]["final"] - b_seed[k]["final"]) for k in shared
             if ok(s_seed[k].get("final")) and ok(b_seed[k].get("final"))]
    if not shared:
        return None
    return {**interval(diffs), "pairs": len(shared), "values": diffs}
