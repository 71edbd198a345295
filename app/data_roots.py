"""Where a run's ``data_dir`` may point, and server paths kept out of what readers see.

With ``BAMSPROD_DATA_ROOTS`` set (absolute directories), a submitted ``data_dir`` must lie
inside one of them: the API refuses it otherwise (422 on ``data_dir``), and the worker checks
again with symbolic links resolved, so a submitter cannot make a worker open (and report on)
any file it can read. Unset (the default, one trusted user), any directory goes.

A failed run's error is read by everyone who may read runs: :func:`public_error` writes the
worker's own directories (its data root, ``BAMSPROD_HOME``, its user's home) as
``<data root>``, ``<bamsprod home>`` and ``~``. The ``data_dir`` a run names is in its config,
so errors about it stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bamsprod.app.settings import Settings

__all__ = ["data_dir_refusal", "public_error"]


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def data_dir_refusal(data_dir: str | None, roots: Sequence[Path], resolve: bool = False
                     ) -> str | None:
    """Why ``data_dir`` is outside the allowed ``roots`` (None: allowed, or no roots set).
    ``resolve``: follow symbolic links (on the machine that will open it)."""
    if not data_dir or not roots:
        return None
    if resolve:
        path = str(Path(data_dir).expanduser().resolve())
        allowed = [str(Path(r).resolve()) for r in roots]
    else:  # the API may not see the workers' file system: judge the text
        path = os.path.normpath(os.path.expanduser(data_dir))
        allowed = [os.path.normpath(str(r)) for r in roots]
    if _inside(path, allowed):
        return None
    return ("must be inside one of this server's data roots (BAMSPROD_DATA_ROOTS): "
            + ", ".join(str(r) for r in roots))


def public_error(text: str, settings: Settings) -> str:
    """``text`` with this machine's own directories written as placeholders (see above)."""
    from bamsprod.core.data.paths import data_root

    places = [(str(data_root(None)), "<data root>"), (str(settings.home), "<bamsprod home>"),
              (os.path.expanduser("~"), "~")]
    for path, name in sorted(places, key=lambda p: -len(p[0])):
        if len(path) > 1:
            text = text.replace(path, name)
    return text
