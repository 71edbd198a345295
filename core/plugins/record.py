"""What a run records about its plugins, and a worker's check against that record.

A run stores ``[{"kind", "name", "dist", "version"}]``: one item per plugin among its optimizer,
model and data set (built-ins need none), as the submitting process's registry saw them. A
worker trains the run only when its own registry has each of them from the same distribution
at the same version; otherwise :func:`plugin_mismatch` says what differs and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bamsprod.core.plugins.discover import registry
from bamsprod.core.plugins.specs import KINDS

__all__ = ["plugin_mismatch", "plugins_used"]


def plugins_used(config: Mapping[str, Any] | Any) -> list[dict[str, str]]:
    """The record of the plugins ``config`` (a ``RunConfig`` or its dict) uses; names this
    process does not know are left out (validation has refused them already)."""
    reg = registry()
    out = []
    for kind in KINDS:
        name = config.get(kind) if isinstance(config, Mapping) else getattr(config, kind, None)
        entry = reg.get(kind, name) if isinstance(name, str) else None
        if entry is not None and not entry.builtin:
            out.append(entry.record())
    return out


def _normal(dist: Any) -> str:
    """A distribution name as PEP 503 compares them (``Bamsprod_Lion`` is ``bamsprod-lion``)."""
    return re.sub(r"[-_.]+", "-", str(dist)).lower()


def plugin_mismatch(recorded: Iterable[Mapping[str, Any]] | None, worker: str) -> str | None:
    """None when this process has every plugin of ``recorded`` at its recorded version;
    otherwise why not, naming the plugin, the distribution, both versions and ``worker``, and
    what to do."""
    reg = registry()
    for item in recorded or ():
        kind, name = item.get("kind"), item.get("name")
        dist, version = item.get("dist"), item.get("version")
        want = f"{dist} {version}"
        entry = reg.find(kind, name) if kind in KINDS and isinstance(name, str) else None
        if entry is None:
            have = f"worker {worker} does not have it installed"
        elif not entry.ok:
            have = f"on worker {worker}, {entry.source} fails to load: {entry.error}"
        elif _normal(entry.dist) != _normal(dist):
            have = f"worker {worker} has {name!r} from {entry.source} instead"
        elif entry.version != version:
            have = f"worker {worker} has {entry.source}"
        else:
            continue
        return (f"plugin {kind} {name!r} from {want} (recorded when the run was submitted): "
                f"{have}. Install {dist}=={version} on the workers (pip install "
                f"'{dist}=={version}') and restart them, then retry the run")
    return None
