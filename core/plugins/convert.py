"""A loaded entry point's object -> the spec the registry keeps (or ``PluginError``, why not).

- ``bamsprod.optimizers``: an :class:`OptimizerSpec`, or a ``torch.optim.Optimizer`` subclass.
  Its hyperparameters come from its constructor (``core.plugins.signature``; ``params``
  skipped; torch's execution flags ``foreach``, ``fused``, ``capturable``, ``differentiable``
  and ``maximize`` left at their defaults); it must take ``lr``, whose default is the run's
  default learning rate. It is built as ``cls(groups, lr=lr, **hyperparameters)``, with
  ``core.optim.param_groups``' groups, and the BinaryConnect latent clip is applied to its
  ``binary`` group after each step, as for Adam.
- ``bamsprod.models``: a :class:`ModelSpec`, or a callable ``(input_shape, num_classes,
  **kwargs) -> nn.Module``, its keyword arguments read the same way.
- ``bamsprod.datasets``: a :class:`DatasetSpec`, or a callable returning a
  ``core.data.Dataset`` that declares ``bamsprod_dataset`` (``@bamsprod.dataset_info``).

Optional attributes of a plugin's class or function: ``bamsprod_hparams`` (``@bamsprod.hparams``:
bounds, log scale, help and defaults per name), ``bamsprod_state_slots`` (an optimizer's state
tensors per parameter, default 2), ``bamsprod_param_count`` and ``bamsprod_size_arg`` (a
model's parameter count in closed form, and its size argument). Its help is the first paragraph
of its docstring.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

from bamsprod.core.hparam import HParam
from bamsprod.core.plugins.signature import PluginError, Signature, read_signature
from bamsprod.core.plugins.specs import DatasetSpec, Kind, ModelSpec, OptimizerSpec

__all__ = ["EXECUTION_FLAGS", "to_spec"]

# torch optimizers' switches for how a step runs, not what it computes.
EXECUTION_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable", "maximize"})


def _help(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line."""
    doc = (inspect.getdoc(obj) or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def _info(obj: Any, where: str) -> Mapping[str, Any]:
    info = getattr(obj, "bamsprod_hparams", None) or {}
    if not isinstance(info, Mapping):
        raise PluginError(f"{where}: bamsprod_hparams must be a dict, got {info!r}")
    return info


class ClassOptimizer:
    """Builds a plugin's optimizer class from the resolved table: ``cls(groups, lr=lr, ...)``."""

    def __init__(self, cls: type, signature: Signature) -> None:
        self.cls, self.signature = cls, signature

    def __call__(self, groups: list[dict[str, Any]], lr: float, hparams: dict[str, Any]) -> Any:
        return self.cls(groups, lr=lr, **self.signature.to_kwargs(hparams))


class CallModel:
    """Builds a plugin's model: ``fn(input_shape, num_classes, **args)``."""

    def __init__(self, fn: Any, signature: Signature) -> None:
        self.fn, self.signature = fn, signature

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int, **args: Any) -> Any:
        return self.fn(input_shape, num_classes, **self.signature.to_kwargs(args))


def _optimizer(obj: Any, where: str) -> OptimizerSpec:
    if isinstance(obj, OptimizerSpec):
        return obj
    torch = sys.modules.get("torch")  # a subclass of torch's Optimizer has imported it
    if not (inspect.isclass(obj) and torch is not None
            and issubclass(obj, torch.optim.Optimizer)):
        raise PluginError(f"{where} is {obj!r}, not a torch.optim.Optimizer subclass (or a "
                          "bamsprod OptimizerSpec)")
    sig = read_signature(obj, skip=1, where=where, exclude=EXECUTION_FLAGS,
                         info=_info(obj, where))
    table = dict(sig.table)
    lr = table.pop("lr", None)
    if lr is None or sig.args["lr"][1] is not None:
        raise PluginError(f"{where}: the constructor must take an lr argument with a default "
                          "(the run's default learning rate)")
    if lr.kind is bool:
        raise PluginError(f"{where}: lr must default to a number, got {lr.default!r}")
    lr = HParam(float(lr.default), lr.lo, lr.hi, lr.help, lr.log)
    slots = getattr(obj, "bamsprod_state_slots", 2)
    return OptimizerSpec(build=ClassOptimizer(obj, sig), hparams=table, default_lr=lr.default,
                         lr=lr, latent_clip=True, state_slots=slots, help=_help(obj))


def _model(obj: Any, where: str) -> ModelSpec:
    if isinstance(obj, ModelSpec):
        return obj
    if not callable(obj):
        raise PluginError(f"{where} is {obj!r}, not a callable (input_shape, num_classes, "
                          "**kwargs) -> nn.Module (or a bamsprod ModelSpec)")
    sig = read_signature(obj, skip=2, where=where, info=_info(obj, where))
    count = getattr(obj, "bamsprod_param_count", None)
    if count is not None:
        inner = count

        def count(input_shape: Any, num_classes: int, **args: Any) -> int:
            return inner(input_shape, num_classes, **sig.to_kwargs(args))

    return ModelSpec(build=CallModel(obj, sig), args=sig.table, param_count=count,
                     size_arg=getattr(obj, "bamsprod_size_arg", None), help=_help(obj))


def _dataset(obj: Any, where: str) -> DatasetSpec:
    if isinstance(obj, DatasetSpec):
        return obj
    if not callable(obj):
        raise PluginError(f"{where} is {obj!r}, not a callable returning a bamsprod Dataset "
                          "(or a bamsprod DatasetSpec)")
    info = getattr(obj, "bamsprod_dataset", None)
    if not isinstance(info, Mapping) or "shape" not in info or "classes" not in info:
        raise PluginError(f"{where} does not declare its shape and classes: decorate it with "
                          "@bamsprod.dataset_info(shape=(C, H, W), classes=K, train=N, test=M)")
    extra = sorted(set(info) - {"shape", "classes", "train", "test"})
    if extra:
        raise PluginError(f"{where}: bamsprod_dataset has unknown key {extra[0]!r}")
    return DatasetSpec(load=obj, help=_help(obj), **info)


_CONVERT = {"optimizer": _optimizer, "model": _model, "dataset": _dataset}


def to_spec(kind: Kind, obj: Any, where: str) -> OptimizerSpec | ModelSpec | DatasetSpec:
    """The spec of a loaded entry point ``obj`` of ``kind``; ``where`` names it in errors."""
    return _CONVERT[kind](obj, where)
