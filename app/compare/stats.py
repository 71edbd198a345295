"""Statistics over runs: mean/std/n, and differences and ratios paired by seed where seeds
pair up (Welch otherwise)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2), count and standard error."""

    mean: float | None
    std: float | None
    n: int
    se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def stat(values: Iterable[Any]) -> Stat:
    """Mean/std/n of the finite values (None and NaN are left out)."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    mean = sum(xs) / n
    if n < 2:
        return Stat(mean, None, 1)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stat(mean, std, n, std / math.sqrt(n))


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _by_seed(pairs: Sequence[tuple[int | None, float | None]]) -> dict[int, float | None] | None:
    """Seed -> value, or None when seeds are missing or repeat (then nothing can be paired)."""
    seeds = [s for s, _ in pairs]
    if any(s is None for s in seeds) or len(set(seeds)) != len(seeds):
        return None
    return {int(s): v for s, v in pairs}  # type: ignore[arg-type]


def paired_or_welch(
    group: Sequence[tuple[int | None, float | None]],
    baseline: Sequence[tuple[int | None, float | None]],
) -> dict[str, Any]:
    """Difference group - baseline from (seed, value) pairs: per-seed differences over shared
    seeds when seeds pair up, otherwise the difference of means with the Welch standard error
    (``std`` is then the spread of one draw from each group)."""
    g_seed, b_seed = _by_seed(group), _by_seed(baseline)
    if g_seed is not None and b_seed is not None:
        shared = [
            s for s in g_seed if s in b_seed and g_seed[s] is not None and b_seed[s] is not None
        ]
        if shared:
            st = stat(g_seed[s] - b_seed[s] for s in shared)  # type: ignore[operator]
            return {**st.to_dict(), "paired": True}
    g, b = stat(v for _, v in group), stat(v for _, v in baseline)
    if g.mean is None or b.mean is None:
        return {"mean": None, "std": None, "n": 0, "se": None, "paired": False}
    both = g.std is not None and b.std is not None
    se = math.sqrt(g.std**2 / g.n + b.std**2 / b.n) if both else None  # type: ignore[operator]
    std = math.sqrt(g.std**2 + b.std**2) if both else None  # type: ignore[operator]
    return {"mean": g.mean - b.mean, "std": std, "n": min(g.n, b.n), "se": se, "paired": False}


def paired_ratios(
    baseline: Sequence[tuple[int | None, float | None]],
    group: Sequence[tuple[int | None, float | None]],
) -> Stat | None:
    """Per-seed ratios baseline / group over shared seeds; None when seeds do not pair up."""
    b_seed, g_seed = _by_seed(baseline), _by_seed(group)
    if b_seed is None or g_seed is None:
        return None
    st = stat(ratio(b_seed[s], g_seed[s]) for s in g_seed if s in b_seed)
    return st if st.n else None
