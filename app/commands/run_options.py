"""The run options of ``train``, ``submit`` and ``tune``, generated from ``RunConfig``'s own
fields (defaults, descriptions, choices), and the config they make; errors name the option."""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from bamsprod.app.commands.common import bad_parameter
from bamsprod.app.field_errors import first_error
from bamsprod.core.config import RegistryName, RunConfig

T = TypeVar("T")

# Fields set by KEY=VALUE pairs or repeated options: (option name, help).
_PAIR_FIELDS = {
    "hparams": ("hp", "optimizer hyperparameter KEY=VALUE (repeatable)"),
    "model_args": ("model_arg", "model argument KEY=VALUE (repeatable)"),
    "tags": ("tag", "a tag (repeatable)"),
}
_NOT_OPTIONS = {"schema_version"}


def _option_name(field: str) -> str:
    return _PAIR_FIELDS[field][0] if field in _PAIR_FIELDS else field


# RunConfig field -> the option that sets it, so errors name what the user typed.
OPTION_FOR_FIELD = {
    f: "--" + _option_name(f).replace("_", "-")
    for f in RunConfig.model_fields
    if f not in _NOT_OPTIONS
}


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """``["kappa=1.0", "nesterov=true"]`` -> ``{"kappa": 1.0, "nesterov": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            value: Any = json.loads(
                raw.strip().lower() if raw.strip().lower() in ("true", "false") else raw
            )
        except json.JSONDecodeError:
            raise typer.BadParameter(
                f"{key}: {raw!r} is not a number or true/false", param_hint=option
            ) from None
        out[key.strip()] = value
    return out


def build_config(**fields: Any) -> RunConfig:
    """A RunConfig from CLI options; a validation error names the option, not the field."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return RunConfig(**fields)
    except ValidationError as exc:
        raise bad_parameter(first_error(exc), OPTION_FOR_FIELD) from None


def _cli_type(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(type for Typer, choices)`` of a RunConfig field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _cli_type(args[0])
    if origin is typing.Literal:
        return str, args
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, choices = _cli_type(next(a for a in args if a is not type(None)))
        return inner | None, choices
    return (annotation if annotation in (int, float, str, bool) else str), ()


def _run_config_options() -> list[tuple[str, Any, Any]]:
    """``(parameter, type, typer.Option)`` for every RunConfig field, from its own declaration:
    the default, the description and, for a choice, its values."""
    options = []
    for name, field in RunConfig.model_fields.items():
        if name in _NOT_OPTIONS:
            continue
        if name in _PAIR_FIELDS:
            option, help_ = _PAIR_FIELDS[name]
            options.append((option, list[str], typer.Option([], help=help_)))
            continue
        kind, choices = _cli_type(field.annotation)
        names = next((m for m in field.metadata if isinstance(m, RegistryName)), None)
        if names is not None:  # optimizer, model, dataset: the registry's, plugins included
            choices = tuple(names.choices())
        help_ = field.description or ""
        if choices:
            help_ = f"{help_}; one of: {', '.join(map(str, choices))}".lstrip("; ")
        default = None if field.default is PydanticUndefined else field.default
        options.append((name, kind, typer.Option(default, help=help_ or None)))
    return options


# The options that make a RunConfig, generated from it and shared by ``train`` and ``submit``.
RUN_CONFIG_OPTIONS = _run_config_options()


def config_from_options(options: dict[str, Any]) -> RunConfig:
    """The RunConfig that the shared options describe (errors name the option)."""
    pairs = {option for option, _ in _PAIR_FIELDS.values()}
    fields = {k: v for k, v in options.items() if k not in pairs}
    if fields.get("data_dir") and not fields["data_dir"].startswith(("/", "~")):
        # The config wants an absolute path (workers have their own working directory): a
        # relative one on the command line means this shell's directory.
        fields["data_dir"] = str(Path(fields["data_dir"]).absolute())
    return build_config(
        **fields,
        hparams=parse_pairs(options["hp"], "--hp"),
        model_args=parse_pairs(options["model_arg"], "--model-arg"),
        tags=options["tag"],
    )


def with_run_config(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a command the shared run-config options; it receives ``config: RunConfig``.

    Typer reads the wrapper's signature: the shared options first, then the command's own.
    """
    own = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
    hints = typing.get_type_hints(fn, include_extras=True)
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
        for n, kind, opt in RUN_CONFIG_OPTIONS
    ]
    params = shared + [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
        for p in own
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> T:
        options = {n: kwargs.pop(n) for n, _, _ in RUN_CONFIG_OPTIONS}
        return fn(config=config_from_options(options), **kwargs)

    del command.__wrapped__  # Typer must see the signature below, not ``fn``'s
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
