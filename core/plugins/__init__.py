"""Optimizers, models and data sets by name, from entry points: the built-ins and plugins alike.

Three entry point groups feed one registry (``registry()``), loaded once per process:

- ``bamsprod.optimizers``: a ``torch.optim.Optimizer`` subclass, its hyperparameters read from
  its constructor's signature (``core.plugins.signature``);
- ``bamsprod.models``: a callable ``(input_shape, num_classes, **kwargs) -> nn.Module``;
- ``bamsprod.datasets``: a callable returning a ``core.data.Dataset``, with its shape and
  classes declared (``@bamsprod.dataset_info``).

Any of them may instead name a spec (:class:`OptimizerSpec`, :class:`ModelSpec`,
:class:`DatasetSpec`) that names its torch code by a string: that is how the built-ins register
(``core.plugins.builtin``), so validating a run of theirs imports no torch. ``core.config``
validates run configs against the registry; ``core.optim.build``, ``core.nn.build_model`` and
``core.data.load_dataset`` build from it. A run records the plugins it used
(``plugins_used``), and a worker refuses a run whose plugins it lacks (``plugin_mismatch``).
See docs/plugins.md.
"""

from bamsprod.core.plugins.declare import dataset_info, hparams
from bamsprod.core.plugins.discover import GROUPS, Registry, registry, reload, scan
from bamsprod.core.plugins.record import plugin_mismatch, plugins_used
from bamsprod.core.plugins.signature import PluginError, Signature, read_signature
from bamsprod.core.plugins.specs import (
    BUILTIN_DIST,
    KINDS,
    DatasetSpec,
    Entry,
    Kind,
    ModelSpec,
    OptimizerSpec,
    resolve,
)

__all__ = [
    "BUILTIN_DIST",
    "GROUPS",
    "KINDS",
    "DatasetSpec",
    "Entry",
    "Kind",
    "ModelSpec",
    "OptimizerSpec",
    "PluginError",
    "Registry",
    "Signature",
    "dataset_info",
    "hparams",
    "plugin_mismatch",
    "plugins_used",
    "read_signature",
    "registry",
    "reload",
    "resolve",
    "scan",
]
