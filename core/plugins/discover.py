"""The registry: every entry point of ``bamsprod.optimizers``, ``bamsprod.models`` and
``bamsprod.datasets``, loaded once per process, the built-ins among them.

An entry that fails to load (an import error, a malformed class, a name already taken) is kept
as *broken*, with its error, so listings (``bamsprod plugins``, ``/api/health``) can show it;
it never stops the others or the service. Names are unique per kind: our own distribution's
entries come first, then plugins by name and distribution; a later entry with a taken name is
broken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from importlib import metadata

from bamsprod.core.plugins import builtin
from bamsprod.core.plugins.convert import to_spec
from bamsprod.core.plugins.specs import BUILTIN_DIST, KINDS, NAME_RE, Entry, Kind, Spec

__all__ = ["GROUPS", "Registry", "registry", "reload", "scan"]

log = logging.getLogger(__name__)

GROUPS: dict[Kind, str] = {
    "optimizer": "bamsprod.optimizers",
    "model": "bamsprod.models",
    "dataset": "bamsprod.datasets",
}


class Registry:
    """The entries found, by kind and name; ``names``/``get``/``require`` see only ok ones."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)
        self._ok: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        for e in self.entries:
            if e.ok:
                self._ok[e.kind][e.name] = e

    def names(self, kind: Kind) -> list[str]:
        """The usable names of ``kind``, built-ins first in their usual order."""
        return list(self._ok[kind])

    def get(self, kind: Kind, name: str) -> Entry | None:
        """The usable entry ``name`` of ``kind``, or None."""
        return self._ok[kind].get(name)

    def find(self, kind: Kind, name: str) -> Entry | None:
        """The entry ``name`` of ``kind``, usable or broken, or None."""
        return self.get(kind, name) or next(
            (e for e in self.entries if e.kind == kind and e.name == name), None)

    def require(self, kind: Kind, name: str) -> Entry:
        """The usable entry, or ``ValueError`` naming the known ones (and why a broken one is)."""
        entry = self.get(kind, name)
        if entry is not None:
            return entry
        known = ", ".join(self.names(kind))
        bad = self.find(kind, name)
        if bad is not None:
            raise ValueError(f"{kind} {name!r} ({bad.source}) is broken: {bad.error}; "
                             f"usable: {known}")
        raise ValueError(f"unknown {kind} {name!r}; known: {known}")

    def spec(self, kind: Kind, name: str) -> Spec:
        """``require(kind, name).spec``."""
        spec = self.require(kind, name).spec
        assert spec is not None
        return spec

    def plugins(self) -> list[Entry]:
        """Every entry not from bamsprod itself, usable or broken."""
        return [e for e in self.entries if not e.builtin]

    def broken(self) -> list[Entry]:
        return [e for e in self.entries if not e.ok]


def _load(kind: Kind, ep: metadata.EntryPoint, dist: str, version: str) -> Entry:
    where = f"{kind} {ep.name!r} ({ep.value}, from {dist} {version})"
    base = dict(kind=kind, name=ep.name, dist=dist, version=version, target=ep.value)
    if not NAME_RE.fullmatch(ep.name):
        return Entry(**base, error="the name must be 1-32 letters, digits, '.', '_' or '-', "
                                   "starting with a letter or digit")
    try:
        return Entry(**base, spec=to_spec(kind, ep.load(), where))
    except (Exception, SystemExit) as exc:  # a plugin must never take the service down
        log.warning("%s is broken: %s", where, exc)
        return Entry(**base, error=f"{type(exc).__name__}: {exc}")


def _sorted(kind: Kind, eps: Sequence[tuple[metadata.EntryPoint, str, str]]
            ) -> list[tuple[metadata.EntryPoint, str, str]]:
    order = builtin.ORDER[kind]

    def key(item: tuple[metadata.EntryPoint, str, str]) -> tuple:
        ep, dist, _ = item
        if dist == BUILTIN_DIST:
            return (0, order.index(ep.name) if ep.name in order else len(order), ep.name, "")
        return (1, 0, ep.name, dist.lower())

    return sorted(eps, key=key)


def scan() -> Registry:
    """Read and load every entry point now (see the module docstring)."""
    entries: list[Entry] = []
    for kind, group in GROUPS.items():
        found = []
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "unknown"
            found.append((ep, dist, version))
        if not any(dist == BUILTIN_DIST for _, dist, _ in found):
            entries.append(Entry(kind, "*", BUILTIN_DIST, "?", group,
                                 error=f"bamsprod's own {group} entry points are missing: "
                                       "reinstall bamsprod (pip install -e . in a checkout)"))
        taken: dict[str, Entry] = {}
        for ep, dist, version in _sorted(kind, found):
            first = taken.get(ep.name)
            if first is not None:
                entries.append(Entry(kind, ep.name, dist, version, ep.value,
                                     error=f"the name is taken by {first.source}"))
                continue
            entry = _load(kind, ep, dist, version)
            entries.append(entry)
            if entry.ok:
                taken[ep.name] = entry
    return Registry(entries)


_lock = threading.Lock()
_current: Registry | None = None


def registry() -> Registry:
    """This process's registry, scanned on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = scan()
    return _current


def reload() -> Registry:
    """Scan again (after installing a plugin into a running process, and in tests)."""
    global _current
    with _lock:
        _current = scan()
    return _current
