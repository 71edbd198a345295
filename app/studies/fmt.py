"""Formatting the report's numbers: optimizer names, mean ± std, intervals, times to target,
seconds and markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bamsprod.app.studies.paired import ok

NAMES = {
    "bamsprod": "BAMSProd", "adam": "Adam", "amsgrad": "AMSGrad", "adabound": "AdaBound",
    "amsbound": "AMSBound", "bop": "Bop", "sgd": "SGD-momentum",
}


def name(opt: str) -> str:
    return NAMES.get(opt, opt)


# ----------------------------------------------------------------------------- formatting


def fmt_pm(stat: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2,
           sign: bool = False, suffix: str = "") -> str:
    """``mean ± std`` (std left out when undefined); ``n/a`` when there is no mean."""
    if not stat or not ok(stat.get("mean")):
        return "n/a"
    text = format(stat["mean"] * scale, f"{'+' if sign else ''}.{digits}f") + suffix
    if ok(stat.get("std")):
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def fmt_ci(ci: Mapping[str, Any] | None, digits: int = 2, sign: bool = False,
           suffix: str = "") -> str:
    """``mean [lo, hi] (n=k)``, the 95% t-interval over measured paired seeds, with censored
    pairs counted; ``n/a`` without a value."""
    if not ci:
        return "n/a"
    if ci.get("mixed"):
        return f"not pooled ({len(ci['mixed'])} environments)"
    if not ok(ci.get("mean")):
        return "n/a" + _left_out(ci)
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(ci["mean"], spec) + suffix
    if not ci.get("paired", True):
        return text + " (unpaired)"
    if ok(ci.get("lo")) and ok(ci.get("hi")):
        text += f" [{format(ci['lo'], spec)}, {format(ci['hi'], spec)}]"
    return text + f" (n={ci.get('n')})" + _left_out(ci)


def _left_out(ci: Mapping[str, Any]) -> str:
    parts = []
    if ci.get("censored"):
        parts.append(f"{len(ci['censored'])} censored")
    if ci.get("neither"):
        parts.append(f"{len(ci['neither'])} neither reached")
    return f" ({', '.join(parts)})" if parts else ""


def fmt_mean(st: Mapping[str, Any] | None, sign: bool = False, suffix: str = "") -> str:
    """The mean alone (2 decimals), ``n/a`` without one."""
    if not st or not ok(st.get("mean")):
        return "n/a"
    return format(st["mean"], f"{'+' if sign else ''}.2f") + suffix


def fmt_reach(to: Mapping[str, Any], digits: int = 2, suffix: str = "") -> str:
    reached, n = to.get("reached", 0), to.get("n", 0)
    if not reached:
        return f"not reached (0/{n})"
    first = f", {to['first']} at first eval" if to.get("first") else ""
    return f"{fmt_pm(to, digits=digits, suffix=suffix)} ({reached}/{n}{first})"


def fmt_num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def fmt_seconds(s: Any) -> str:
    if not ok(s):
        return "n/a"
    s = float(s)
    if s >= 7200:  # below two hours minutes say more: a 75-minute budget reads "74.0 min"
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def fmt_choice(chosen: Mapping[str, Any] | None) -> str:
    if not chosen:
        return "none (no stage-1 run succeeded)"
    return ", ".join(f"{k.removeprefix('hparams.')} {fmt_num(v)}" for k, v in chosen.items())


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines
