"""SHA-256 verification of data files, cached per process by (path, size, mtime).

A verified 47 MB file is hashed once per process; touching or replacing it invalidates the entry.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from pathlib import Path

__all__ = ["sha256_file", "verify_file"]

_CHUNK = 1 << 20
_cache: dict[tuple[str, int, int, bool], str] = {}
_lock = threading.Lock()


def _digest(path: Path, decompress: bool) -> str:
    h = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str], *, decompress: bool = False) -> str:
    """Hex SHA-256 of the file (of its gzip-decompressed content with ``decompress``), cached.

    Raises ``OSError`` (or ``gzip.BadGzipFile``/``EOFError`` when decompressing) on bad files.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, decompress)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    digest = _digest(p, decompress)
    with _lock:
        _cache[key] = digest
    return digest


def verify_file(path: str | os.PathLike[str], sha256: str, raw_sha256: str | None = None) -> bool:
    """Whether ``path`` has checksum ``sha256``.

    For a ``.gz`` file, ``raw_sha256`` (the checksum of the decompressed content) is accepted
    too, so a recompressed copy of the same data passes.
    """
    if sha256_file(path) == sha256:
        return True
    if raw_sha256 is not None and str(path).endswith(".gz"):
        try:
            return sha256_file(path, decompress=True) == raw_sha256
        except (OSError, EOFError, gzip.BadGzipFile):
            return False
    return False


def clear_cache() -> None:
    """Forget every cached digest (for tests)."""
    with _lock:
        _cache.clear()
