"""Where data sets live: the data root and the directories searched for each data set.

The root is the ``data_dir`` argument, else the ``BAMSPROD_DATA_DIR`` environment variable, else
``platformdirs.user_data_dir("bamsprod") / "data"`` (``~/.local/share/bamsprod/data`` on
Linux). Under it each data set has its own directory: ``<root>/mnist/``,
``<root>/fashion-mnist/``, ``<root>/cifar10/``. Known system locations (what a system package
installs, e.g. ``/usr/share/datasets/fashion-mnist``) are searched after the root.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from bamsprod.core.data.sources import SYSTEM_DIRS

__all__ = ["ENV_VAR", "data_root", "default_root", "search_dirs"]

ENV_VAR = "BAMSPROD_DATA_DIR"


def default_root() -> Path:
    """The per-user default data root (platformdirs' user data dir, ``bamsprod/data``)."""
    return Path(platformdirs.user_data_dir("bamsprod")) / "data"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir``, else ``$BAMSPROD_DATA_DIR``, else :func:`default_root`."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_root()


def search_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories that may hold data set ``name``, in search order.

    ``<root>/<name>``, then ``<root>`` itself (a ``data_dir`` pointing straight at the files),
    then the system locations known for ``name``.
    """
    root = data_root(data_dir)
    dirs = [root / name, root, *SYSTEM_DIRS.get(name, ())]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out
