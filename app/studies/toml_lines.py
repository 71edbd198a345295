"""Where each key of a TOML text is written: a pydantic-style loc (``("tasks", 1, "epochs")``)
to its line, so a study file's validation errors can name the line (``tomllib`` gives lines
only for syntax errors)."""

from __future__ import annotations

import re

Loc = tuple[str | int, ...]

_STRING = re.compile(r'"""|\'\'\'|"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_HEADER = re.compile(r"^\[(\[)?\s*([^\[\]]+?)\s*\]\]?$")
_KEY = re.compile(r"^([A-Za-z0-9_\-.\s\"']+?)\s*=\s*(.*)$")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.split(r"\.(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$)",
                                                    text)]


def key_lines(text: str) -> dict[Loc, int]:
    """Each key of a TOML text (as a pydantic-style loc: ``("tasks", 1, "epochs")``) and the
    line it is written on; array-of-tables headers map to their element (``("tasks", 1)``),
    keys of an inline table to its line. Continuation lines of multi-line values are skipped."""
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    table: Loc = ()
    depth = 0  # open brackets/braces of a multi-line value
    in_triple = False

    def resolve(parts: list[str]) -> Loc:
        out: list[str | int] = []
        for p in parts:
            out.append(p)
            if tuple(out) in counts:
                out.append(counts[tuple(out)])
        return tuple(out)

    for no, raw in enumerate(text.splitlines(), 1):
        bare = _STRING.sub(lambda m: m.group(0) if m.group(0) in ('"""', "'''") else '""', raw)
        if bare.count('"""') % 2 or bare.count("'''") % 2:
            in_triple = not in_triple
            continue
        if in_triple:
            continue
        bare = bare.split("#", 1)[0].strip()
        if depth:
            depth += bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")
            continue
        if not bare:
            continue
        if (m := _HEADER.match(bare)) is not None:
            parts = _key_parts(m.group(2))
            if m.group(1):  # [[array]]: a new element
                head = resolve(parts[:-1]) + (parts[-1],)
                counts[head] = counts.get(head, -1) + 1
                table = (*head, counts[head])
                lines.setdefault(head, no)
            else:
                table = resolve(parts)
            lines.setdefault(table, no)
            continue
        if (m := _KEY.match(bare)) is not None:
            path = (*table, *_key_parts(m.group(1)))
            lines.setdefault(path, no)
            value = m.group(2)
            if value.startswith("{"):
                for sub in _INLINE_KEY.finditer(value):
                    lines.setdefault((*path, sub.group(1).strip('"')), no)
            depth = max(0, value.count("[") + value.count("{") - value.count("]")
                        - value.count("}"))
    return lines


def line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of ``loc``, else of its nearest enclosing key (a missing key: its table)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def key_text(loc: Loc) -> str:
    """``("tasks", 1, "epochs")`` -> ``tasks[1].epochs``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
