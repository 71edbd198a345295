"""bamsprod: run and compare optimizer experiments on binary neural networks.

The public API for people who train with PyTorch and for plugin authors::

    from bamsprod import BAMSProd, Bop, AdaBound          # the optimizers, torch-shaped
    from bamsprod import BinaryLinear, BinaryConv2d       # the binary layers the metrics find
    from bamsprod import Dataset, quantization_error
    from bamsprod import hparams, dataset_info            # what a plugin's signature cannot say

Names load on first use, so ``import bamsprod`` (and the web service under ``bamsprod.app``)
does not import torch. The packages below are ``bamsprod.core`` (the science: layers, models,
data sets, optimizers, metrics, the trainer), ``bamsprod.app`` (the service and the command
line) and ``bamsprod.worker`` (the Celery worker).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("bamsprod")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BAMSProd": "bamsprod.core.optim",
    "Bop": "bamsprod.core.optim",
    "AdaBound": "bamsprod.core.optim",
    "CaseOptimizer": "bamsprod.core.optim",
    "build_optimizer": "bamsprod.core.optim",
    "param_groups": "bamsprod.core.optim",
    "clip_latent_weights": "bamsprod.core.optim",
    "BinaryLinear": "bamsprod.core.nn",
    "BinaryConv2d": "bamsprod.core.nn",
    "binary_weights": "bamsprod.core.nn",
    "ste_sign": "bamsprod.core.nn",
    "build_model": "bamsprod.core.nn",
    "Dataset": "bamsprod.core.data",
    "DatasetError": "bamsprod.core.data",
    "load_dataset": "bamsprod.core.data",
    "quantization_error": "bamsprod.core.metrics",
    "RunConfig": "bamsprod.core.config",
    "train": "bamsprod.core.train",
    # plugin authors (docs/plugins.md); torch-free
    "hparams": "bamsprod.core.plugins",
    "dataset_info": "bamsprod.core.plugins",
    "HParam": "bamsprod.core.hparam",
    "OptimizerSpec": "bamsprod.core.plugins",
    "ModelSpec": "bamsprod.core.plugins",
    "DatasetSpec": "bamsprod.core.plugins",
}
_RENAMED = {"build_optimizer": "build"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bamsprod' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
