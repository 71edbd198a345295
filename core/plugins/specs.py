"""What the registry holds per optimizer, model and data set, and one entry of it.

A spec is cheap and torch-free: it names its torch code by a ``"module:attr"`` string (or holds
the callable itself, for a plugin whose module is loaded anyway), so the API validates runs
without importing torch. The built-ins are specs (``core.plugins.builtin``); a plugin's entry
point may name a spec too, or, more simply, a plain class or function that
``core.plugins.convert`` reads into one.

- :class:`OptimizerSpec`: ``build(groups, lr, hparams) -> torch.optim.Optimizer``, where
  ``groups`` are ``core.optim.param_groups(model)`` and ``hparams`` the resolved table.
- :class:`ModelSpec`: ``build(input_shape, num_classes, **args) -> nn.Module``.
- :class:`DatasetSpec`: ``load(**kw) -> core.data.Dataset``; ``kw`` holds those of
  ``data_dir``, ``train_subset`` and ``test_subset`` that ``load`` accepts.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bamsprod.core.hparam import HParam
from bamsprod.core.plugins.signature import PluginError

__all__ = ["BUILTIN_DIST", "KINDS", "DatasetSpec", "Entry", "Kind", "ModelSpec",
           "OptimizerSpec", "resolve"]

Kind = Literal["optimizer", "model", "dataset"]
KINDS: tuple[Kind, ...] = ("optimizer", "model", "dataset")
BUILTIN_DIST = "bamsprod"
# An entry's name is stored in the run table's 32-character columns and used in URLs.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
Ref = str | Callable[..., Any]


def resolve(ref: Ref) -> Callable[..., Any]:
    """The callable ``ref`` names (``"package.module:attr"``), or ``ref`` itself."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ref(what: str, ref: Any) -> None:
    if isinstance(ref, str):
        module, sep, attr = ref.partition(":")
        if not (module and sep and attr):
            raise PluginError(f"{what} must be 'module:attr', got {ref!r}")
    elif not callable(ref):
        raise PluginError(f"{what} must be callable or 'module:attr', got {ref!r}")


def _check_table(what: str, table: Mapping[str, Any]) -> None:
    for name, h in table.items():
        if not isinstance(h, HParam):
            raise PluginError(f"{what}[{name!r}] must be an HParam, got {h!r}")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: how to build it, its hyperparameters and its default learning rate.

    ``lr``: the learning rate's own range and help (None: the run config's ``(0, 10]``).
    ``latent_clip``: register the BinaryConnect clip of the ``binary`` group after each step
    (as for Adam); False when ``build`` takes care of it. ``state_slots``: float tensors of
    state per parameter, for the memory check at submit.
    """

    build: Ref
    hparams: Mapping[str, HParam]
    default_lr: float
    lr: HParam | None = None
    latent_clip: bool = True
    state_slots: int = 2
    help: str = ""

    def __post_init__(self) -> None:
        _check_ref("build", self.build)
        _check_table("hparams", self.hparams)
        if not (_number(self.default_lr) and 0 < self.default_lr <= 10):
            raise PluginError(f"the default lr must be a number in (0, 10], got "
                              f"{self.default_lr!r}")
        if self.lr is not None:
            self.lr.check("lr", self.default_lr)
        if not (isinstance(self.state_slots, int) and 0 <= self.state_slots <= 64):
            raise PluginError(f"state_slots must be an integer 0..64, got {self.state_slots!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A model: how to build it and its arguments.

    ``param_count(input_shape, num_classes, **args) -> int``: its trainable parameters in closed
    form, for the memory check at submit; None counts them on torch's ``meta`` device (no
    memory) instead. ``size_arg``: the argument that scales it, named in a too-large error.
    """

    build: Ref
    args: Mapping[str, HParam]
    param_count: Ref | None = None
    size_arg: str | None = None
    help: str = ""

    def __post_init__(self) -> None:
        _check_ref("build", self.build)
        _check_table("args", self.args)
        if self.param_count is not None:
            _check_ref("param_count", self.param_count)
        if self.size_arg is not None:
            h = self.args.get(self.size_arg)
            if h is None or h.kind is bool:
                raise PluginError(f"size_arg {self.size_arg!r} is not a numeric argument "
                                  f"({', '.join(self.args) or 'none'})")


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: how to load it, and what validating a run needs to know without loading it:
    the input ``shape`` ``(C, H, W)``, the class count, and the split sizes when known."""

    load: Ref
    shape: tuple[int, int, int]
    classes: int
    train: int | None = None
    test: int | None = None
    help: str = ""

    def __post_init__(self) -> None:
        _check_ref("load", self.load)
        shape = self.shape
        if not (isinstance(shape, tuple | list) and len(shape) == 3
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                        for s in shape)):
            raise PluginError(f"shape must be (channels, height, width) of positive integers, "
                              f"got {shape!r}")
        object.__setattr__(self, "shape", tuple(shape))
        if not (isinstance(self.classes, int) and not isinstance(self.classes, bool)
                and self.classes >= 2):
            raise PluginError(f"classes must be an integer >= 2, got {self.classes!r}")
        for key in ("train", "test"):
            n = getattr(self, key)
            if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
                raise PluginError(f"{key} must be a positive integer or None, got {n!r}")

    def info(self) -> dict[str, Any]:
        """``{"shape", "classes", "train", "test"}``: what ``core.config.DATASETS`` shows."""
        return {"shape": self.shape, "classes": self.classes, "train": self.train,
                "test": self.test}


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


Spec = OptimizerSpec | ModelSpec | DatasetSpec


@dataclass(frozen=True)
class Entry:
    """One entry point of a ``bamsprod.*`` group: ok with its ``spec``, or broken with ``error``.

    ``target`` is the entry point's value (``"bamsprod_lion:Lion"``); ``dist`` and ``version``
    the distribution that declares it.
    """

    kind: Kind
    name: str
    dist: str
    version: str
    target: str
    spec: Spec | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.spec is not None

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    @property
    def source(self) -> str:
        """``"bamsprod-lion 0.1.0"``."""
        return f"{self.dist} {self.version}"

    def record(self) -> dict[str, str]:
        """What a run stores about the plugin it used."""
        return {"kind": self.kind, "name": self.name, "dist": self.dist, "version": self.version}

    def describe(self) -> dict[str, Any]:
        """The entry for ``bamsprod plugins`` and ``/api/health``."""
        return {**self.record(), "target": self.target, "builtin": self.builtin,
                "ok": self.ok, "error": self.error}
