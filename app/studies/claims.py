"""Claims a study tests, written as short sentences and parsed into :class:`Claim`.

Grammar (case-insensitive; ``docs/studies.md``)::

    claim    := [SUBJECT] MEASURE "over" BASELINE (">=" | "≥") NUMBER [UNIT]
    MEASURE  := "speed-up" ["in epochs" | "in seconds"] | "accuracy gain"
    UNIT     := "x" | "×"                (a speed-up)
              | "points" | "point" | "pts"   (an accuracy gain)

- ``speed-up`` (``in epochs``, the default, or ``in seconds``): BASELINE's time to the task's
  target / SUBJECT's, paired by seed; no effect is 1.
- ``accuracy gain``: SUBJECT's final test accuracy minus BASELINE's, in points, paired by
  seed; no effect is 0.
- SUBJECT and BASELINE are optimizer names of the study; SUBJECT defaults to the study's first
  optimizer. NUMBER is the claimed value: the claim is that the effect is at least that.

``"speed-up over adam >= 1.2"`` and ``"bamsprod accuracy gain over bop ≥ 3.7 points"`` parse.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

GRAMMAR = ('[SUBJECT] (speed-up [in epochs|in seconds] | accuracy gain) over BASELINE >= '
           'NUMBER [x | points], e.g. "speed-up over adam >= 1.2"')

_CLAIM = re.compile(
    r"^\s*(?:(?P<subject>[\w.-]+)\s+)??"
    r"(?P<measure>speed-?up(?:\s+in\s+(?P<unit>epochs|seconds))?|accuracy\s+gain)"
    r"\s+over\s+(?P<baseline>[\w.-]+)\s*(?P<op>>=|≥)\s*"
    r"(?P<value>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(?P<suffix>x|×|points?|pts)?\s*$",
    re.IGNORECASE,
)

LABELS = {
    "speedup_epochs": "speed-up over {b}, epochs to target",
    "speedup_seconds": "speed-up over {b}, seconds to target",
    "gain": "final test accuracy − {b} (points)",
}


@dataclass(frozen=True)
class Claim:
    """``subject``'s ``measure`` against ``baseline`` is at least ``claimed`` (``null``: no
    effect)."""

    text: str
    subject: str
    measure: str  # speedup_epochs | speedup_seconds | gain
    baseline: str
    claimed: float

    @property
    def kind(self) -> str:
        return "gain" if self.measure == "gain" else "speed"

    @property
    def null(self) -> float:
        return 0.0 if self.kind == "gain" else 1.0

    @property
    def unit(self) -> str:
        return "" if self.kind == "gain" else "×"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind, "null": self.null}


def parse_claim(text: str, default_subject: str,
                optimizers: Collection[str] | None = None) -> Claim:
    """The claim ``text`` says; ``ValueError`` naming what is wrong (and the grammar)."""
    m = _CLAIM.match(text)
    if m is None:
        raise ValueError(f"cannot read the claim {text!r}; write {GRAMMAR}")
    measure = m["measure"].lower()
    if measure.startswith("accuracy"):
        key = "gain"
    else:
        key = "speedup_seconds" if (m["unit"] or "").lower() == "seconds" else "speedup_epochs"
    suffix = (m["suffix"] or "").lower()
    if suffix and (suffix in ("x", "×")) != (key != "gain"):
        what = "a speed-up is a ratio (x)" if key != "gain" else "an accuracy gain is in points"
        raise ValueError(f"{text!r}: unit {m['suffix']!r} does not fit; {what}")
    value = float(m["value"])
    if key != "gain" and value <= 0:
        raise ValueError(f"{text!r}: a speed-up must be claimed > 0")
    subject, baseline = m["subject"] or default_subject, m["baseline"]
    if optimizers is not None:
        known = {o.lower(): o for o in optimizers}
        for role, name in (("subject", subject), ("baseline", baseline)):
            if name.lower() not in known:
                raise ValueError(f"{text!r}: the {role} {name!r} is not an optimizer of the "
                                 f"study ({', '.join(optimizers)})")
        subject, baseline = known[subject.lower()], known[baseline.lower()]
    if subject.lower() == baseline.lower():
        raise ValueError(f"{text!r}: the subject and the baseline are both {subject!r}")
    return Claim(text=text.strip(), subject=subject, measure=key, baseline=baseline,
                 claimed=value)
