"""GET /api/schema/options: the run config's fields and the registries, for forms.

The new-run form builds itself from this (fields, defaults, choices, ranges), so it never keeps
a copy of the run config, nor of a tuned sweep's search (``tune``: ``TuneSpec``'s fields, the
defaults that ``bamsprod tune`` takes too); the page embeds the same object. The registries are
``core.plugins``': each optimizer, model and data set says where it comes from (``source``:
the distribution and version, ``builtin``), so installed plugins show with their fields.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request

from bamsprod.app.api.deps import AUTH_ERRORS, READ
from bamsprod.app.schemas import TuneSpec
from bamsprod.core.config import RUN_STATES, HParam, RunConfig
from bamsprod.core.metric_schema import chart_specs
from bamsprod.core.plugins import Entry, Kind, registry

router = APIRouter(tags=["dashboard"], dependencies=READ, responses=AUTH_ERRORS)


def _hparam(h: HParam) -> dict[str, Any]:
    kind = "bool" if h.kind is bool else "int" if h.kind is int else "float"
    return {"default": h.default, "min": h.lo, "max": h.hi, "help": h.help, "type": kind,
            "log": h.log}


def _source(e: Entry) -> dict[str, Any]:
    return {"dist": e.dist, "version": e.version, "builtin": e.builtin}


def _entries(kind: Kind) -> list[Entry]:
    reg = registry()
    return [reg.require(kind, name) for name in reg.names(kind)]


def _optimizer(e: Entry) -> dict[str, Any]:
    spec = e.spec
    out = {"default_lr": spec.default_lr,
           "hparams": {k: _hparam(h) for k, h in spec.hparams.items()},
           "help": spec.help, "source": _source(e)}
    if spec.lr is not None:
        out["lr"] = _hparam(spec.lr)
    return out


def _field(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    """One run config field, flattened from its JSON schema for the form."""
    variants = prop.get("anyOf", [prop])
    nullable = any(v.get("type") == "null" for v in variants)
    main = next((v for v in variants if v.get("type") != "null"), {})
    merged = {**prop, **main}
    kind = merged.get("type", "string")
    if "enum" in merged:
        kind = "enum"
    elif kind == "integer":
        kind = "int"
    elif kind == "number":
        kind = "float"
    elif kind == "array":
        kind = "list"
    elif kind == "string":
        kind = "str"
    low = merged.get("minimum", merged.get("exclusiveMinimum"))
    return {
        "name": name,
        "label": name.replace("_", " "),
        "type": kind,
        "default": prop.get("default"),
        "choices": merged.get("enum"),
        "min": low,
        "min_exclusive": "exclusiveMinimum" in merged,
        "max": merged.get("maximum"),
        "max_length": merged.get("maxLength"),
        "nullable": nullable,
        "required": required,
        "help": prop.get("description", ""),
    }


def _model_fields(schema: dict[str, Any], skip: tuple[str, ...]) -> list[dict[str, Any]]:
    """A model's fields (its JSON schema's properties) flattened for the form, less ``skip``."""
    required = set(schema.get("required", []))
    return [_field(name, prop, name in required)
            for name, prop in schema["properties"].items() if name not in skip]


@lru_cache(maxsize=1)
def schema_options() -> dict[str, Any]:
    """Everything the form needs: the run config's fields and the registries."""
    schema = RunConfig.model_json_schema()
    fields = _model_fields(schema, ("schema_version", "hparams", "model_args"))
    return {
        "schema_version": schema["properties"]["schema_version"].get("default"),
        "fields": fields,
        # A tuned sweep's search (TuneSpec): its defaults and bounds, by field, for the form's
        # tune fields; the CLI reads the same model.
        "tune": {f["name"]: f for f in _model_fields(TuneSpec.model_json_schema(), ("hparams",))},
        "optimizers": {e.name: _optimizer(e) for e in _entries("optimizer")},
        "models": {
            e.name: {"args": {k: _hparam(h) for k, h in e.spec.args.items()},
                     "help": e.spec.help, "source": _source(e)}
            for e in _entries("model")
        },
        "datasets": {
            e.name: {**e.spec.info(), "shape": list(e.spec.shape), "help": e.spec.help,
                     "source": _source(e)}
            for e in _entries("dataset")
        },
        "states": list(RUN_STATES),
        "charts": chart_specs(),  # the run page's charts (core.metric_schema), one declaration
    }


@router.get("/schema/options")
def get_schema_options(request: Request) -> dict[str, Any]:
    """The run config's fields and the optimizer / model / data set registries (for forms)."""
    return {**schema_options(), "max_sweep_runs": request.app.state.settings.max_sweep_runs}
