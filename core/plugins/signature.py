"""Hyperparameters read from a constructor's signature, as LightningCLI and jsonargparse do.

``read_signature(fn, skip=1)`` turns ``Lion.__init__(self, params, lr=1e-4, betas=(0.9, 0.99),
weight_decay=0.0)`` into a table of :class:`~core.hparam.HParam` by public name::

    lr            HParam(1e-4)        float
    beta1, beta2  HParam(0.9), HParam(0.99)   (the ``betas`` tuple, one entry per element)
    weight_decay  HParam(0.0)

Rules:

- The first ``skip`` positional parameters (an optimizer's ``params``; a model's
  ``input_shape, num_classes``) and ``*args``/``**kwargs`` are not hyperparameters.
- A default decides the type: ``bool``, ``int`` or ``float`` (an ``int`` default annotated
  ``float`` is a float: ``weight_decay: float = 0``). A tuple of numbers is one entry per
  element: ``betas`` becomes ``beta1, beta2, ...`` (the names the built-ins use), any other
  tuple ``<name>_0, <name>_1, ...``; :meth:`Signature.to_kwargs` maps them back.
- A parameter with another default (``None``, a string, an object) is left at its default and
  not shown. One without a default must get one from the ``info`` (else the plugin is broken).
- ``info`` (a plugin's ``bamsprod_hparams``, set by ``@bamsprod.hparams``) adds, per public name
  or per tuple name, ``lo``, ``hi``, ``log``, ``help`` and ``default``. A default outside its
  range, a log scale without ``lo > 0``, or an ``info`` key naming no parameter is an error.

Errors are :class:`PluginError` with the reason in words. No torch here.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from bamsprod.core.hparam import HParam

__all__ = ["INFO_KEYS", "PluginError", "Signature", "read_signature", "tuple_names"]

INFO_KEYS = frozenset({"lo", "hi", "log", "help", "default"})
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class PluginError(ValueError):
    """A plugin the registry cannot use; the message says why and what to change."""


@dataclass(frozen=True)
class Signature:
    """A callable's hyperparameters: ``table`` by public name, and where each goes back."""

    table: dict[str, HParam]
    # public name -> (argument, index into its tuple, or None for a scalar)
    args: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def to_kwargs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the callable: ``{"beta1": .9, "beta2": .99}`` becomes
        ``{"betas": (.9, .99)}``."""
        out: dict[str, Any] = {}
        parts: dict[str, dict[int, Any]] = {}
        for public, value in values.items():
            arg, index = self.args.get(public, (public, None))
            if index is None:
                out[arg] = value
            else:
                parts.setdefault(arg, {})[index] = value
        for arg, items in parts.items():
            out[arg] = tuple(items[i] for i in sorted(items))
        return out


def tuple_names(arg: str, n: int) -> list[str]:
    """The public names of a tuple argument's elements: ``betas`` -> ``beta1, beta2``."""
    if arg == "betas":
        return [f"beta{i + 1}" for i in range(n)]
    return [f"{arg}_{i}" for i in range(n)]


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: the defaults decide alone
        return {}


def _kinds(annotation: Any) -> set[type]:
    """The scalar types an annotation names (``float | None`` -> {float})."""
    if isinstance(annotation, str):  # unresolved: read the words
        return {t for t in (bool, int, float) if t.__name__ in annotation}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, typing.Annotated):
        args = typing.get_args(annotation)[: 1 if origin is typing.Annotated else None]
        return set().union(*(_kinds(a) for a in args if a is not Ellipsis))
    return {annotation} & {bool, int, float}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(value: Any, kinds: set[type]) -> float | int | bool | None:
    """``value`` as the hyperparameter type it stands for, or None when it is no scalar."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value) if float in kinds and int not in kinds else value
    if isinstance(value, float):
        return value
    return None


def _check_info(where: str, name: str, info: Any) -> dict[str, Any]:
    if not isinstance(info, Mapping):
        raise PluginError(f"{where}: bamsprod_hparams[{name!r}] must be a dict of "
                          f"{', '.join(sorted(INFO_KEYS))}, got {info!r}")
    bad = sorted(set(info) - INFO_KEYS)
    if bad:
        raise PluginError(f"{where}: bamsprod_hparams[{name!r}] has unknown key {bad[0]!r}; "
                          f"known: {', '.join(sorted(INFO_KEYS))}")
    return dict(info)


def _hparam(where: str, name: str, default: Any, info: Mapping[str, Any]) -> HParam:
    lo, hi, log = info.get("lo"), info.get("hi"), bool(info.get("log", False))
    for key, bound in (("lo", lo), ("hi", hi)):
        if bound is not None and not _is_number(bound):
            raise PluginError(f"{where}: {name}: {key} must be a number, got {bound!r}")
    if isinstance(default, bool) and (lo is not None or hi is not None or log):
        raise PluginError(f"{where}: {name} is true/false; it takes no lo, hi or log")
    if lo is not None and hi is not None and lo > hi:
        raise PluginError(f"{where}: {name}: lo {lo} is above hi {hi}")
    if log and (lo is None or lo <= 0):
        raise PluginError(f"{where}: {name}: a log scale needs lo > 0")
    help_ = info.get("help", "")
    if not isinstance(help_, str):
        raise PluginError(f"{where}: {name}: help must be text, got {help_!r}")
    h = HParam(default, None if lo is None else float(lo), None if hi is None else float(hi),
               help_, log)
    try:
        h.check(name, default)
    except ValueError as exc:
        raise PluginError(f"{where}: the default of {exc}") from None
    return h


def _scalar(where: str, name: str, value: Any, kinds: set[type]) -> float | int | bool:
    out = _coerce(value, kinds)
    if out is None:
        raise PluginError(f"{where}: the default of {name} must be a number or true/false, "
                          f"got {value!r}")
    return out


def _add(table: dict[str, HParam], args: dict[str, tuple[str, int | None]], where: str,
         public: str, target: tuple[str, int | None], default: Any, info: Mapping[str, Any]
         ) -> None:
    if public in table:
        raise PluginError(f"{where}: two hyperparameters are both called {public!r} "
                          f"(from {args[public][0]!r} and {target[0]!r})")
    table[public] = _hparam(where, public, default, info)
    args[public] = target


def read_signature(fn: Callable[..., Any], *, skip: int, where: str,
                   exclude: Collection[str] = (), info: Mapping[str, Any] | None = None
                   ) -> Signature:
    """The hyperparameters of ``fn`` (see the module docstring). ``where`` names ``fn`` in
    errors; ``exclude`` lists parameters that are no hyperparameters (torch's ``foreach``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{where}: cannot read its signature ({exc})") from None
    leading = params[:skip]
    if len(leading) < skip or any(p.kind not in _POSITIONAL for p in leading):
        raise PluginError(f"{where}: its first {skip} argument(s) must be positional")
    info = dict(info or {})
    hints = _hints(fn)
    table: dict[str, HParam] = {}
    args: dict[str, tuple[str, int | None]] = {}
    known: set[str] = set()
    for p in params[skip:]:
        if p.kind in _VARIADIC or p.name in exclude:
            continue
        kinds = _kinds(hints.get(p.name, p.annotation))
        own = _check_info(where, p.name, info.get(p.name, {}))
        default = own.get("default", p.default)
        if default is inspect.Parameter.empty:
            raise PluginError(f"{where}: parameter {p.name!r} has no default; give it one in the "
                              "signature or as 'default' in bamsprod_hparams")
        if isinstance(default, tuple) and default and all(_is_number(v) for v in default):
            names = tuple_names(p.name, len(default))
            known.update((p.name, *names))
            for i, (public, value) in enumerate(zip(names, default, strict=True)):
                merged = {k: v for k, v in own.items() if k != "default"}
                merged.update(_check_info(where, public, info.get(public, {})))
                _add(table, args, where, public, (p.name, i),
                     _scalar(where, public, merged.pop("default", value), kinds), merged)
            continue
        value = _coerce(default, kinds)
        if value is None:  # None, text, an object: stays at its default, not a hyperparameter
            if p.name in info:
                raise PluginError(f"{where}: bamsprod_hparams names {p.name!r}, whose default "
                                  f"{default!r} is not a number or true/false")
            continue
        known.add(p.name)
        _add(table, args, where, p.name, (p.name, None), value, own)
    stray = sorted(set(info) - known)
    if stray:
        raise PluginError(f"{where}: bamsprod_hparams names {stray[0]!r}, which is not one of "
                          f"its hyperparameters ({', '.join(table) or 'none'})")
    return Signature(table, args)
