"""The project's documentation (``docs/*.md``) as an installed package has it.

A wheel carries ``docs/`` as ``bamsprod/docs`` (pyproject.toml), so a pip user reads the same
pages as a clone: ``bamsprod docs NAME`` prints one, the dashboard shows them at
``/guide/NAME``, and messages point there rather than to a path only a clone has.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import bamsprod

__all__ = ["GuideNotFound", "docs_dir", "html", "names", "read", "title"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MD_LINK = re.compile(r'href="(?!\w+:|/|#)([a-z0-9_-]+)\.md(#[^"]*)?"')


class GuideNotFound(LookupError):
    """No documentation page of that name."""


def docs_dir() -> Path:
    """``bamsprod/docs`` in a wheel, else the source tree's ``docs`` (a clone, an editable
    install)."""
    package = Path(bamsprod.__file__).resolve().parent
    installed = package / "docs"
    return installed if installed.is_dir() else package.parent / "docs"


def names() -> list[str]:
    """Every page's name (``datasets`` for ``datasets.md``), sorted."""
    return sorted(p.stem for p in docs_dir().glob("*.md"))


def read(name: str) -> str:
    """The Markdown of page ``name``; ``GuideNotFound`` names the pages there are."""
    path = docs_dir() / f"{name}.md"
    if not _NAME.match(name) or not path.is_file():
        raise GuideNotFound(f"no documentation page {name!r}; there are: {', '.join(names())}")
    return path.read_text(encoding="utf-8")


def title(text: str) -> str:
    """A page's first heading, else its first line."""
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return text.strip().splitlines()[0] if text.strip() else ""


@lru_cache(maxsize=32)
def _render(name: str, mtime_ns: int) -> str:
    from markdown_it import MarkdownIt  # comes with rich

    # Raw HTML in a page is shown as text ("html": False); links between pages stay pages.
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    out = md.render(read(name))
    return _MD_LINK.sub(lambda m: f'href="/guide/{m.group(1)}{m.group(2) or ""}"', out)


def html(name: str) -> str:
    """Page ``name`` as HTML (its own raw HTML escaped); links to other pages lead to
    ``/guide/<name>``."""
    read(name)  # GuideNotFound first
    return _render(name, (docs_dir() / f"{name}.md").stat().st_mtime_ns)
