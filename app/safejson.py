"""JSON that can always be written: for error answers and rows stored before validation.

``scrub`` turns anything into plain JSON data: non-finite floats become ``null``, lone
surrogates (which no encoding can write) become ``\\udXXX`` text, bytes are decoded leniently,
and any other object becomes its ``str``. ``dumps`` never raises.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "scrub", "scrub_text"]


def scrub_text(text: str) -> str:
    """``text`` with each lone surrogate written as a ``\\udXXX`` escape (valid UTF-8)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def scrub(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON-safe data (see the module docstring)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if _depth > 64:
        return "..."
    if isinstance(value, dict):
        return {scrub_text(str(k)): scrub(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, _depth + 1) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return scrub_text(str(value))


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of ``scrub(value)``; never raises."""
    try:
        return json.dumps(scrub(value), allow_nan=False, separators=(",", ":")).encode()
    except Exception:  # a pathological object: say so rather than fail the error path
        return b'{"detail":"the answer could not be written as JSON"}'
