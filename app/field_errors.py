"""One form for "this field is wrong": built from a pydantic ``ValidationError`` or from a 422
answer's ``detail`` list (the same dicts), read by the API, the services and the CLI.

``loc`` is as pydantic or FastAPI give it (``("body", "grid", "lr")``); the API answers
``full_loc``, the same with the entry a whole-mapping check named (``core.config.EntryError``)
added (``("body", "hparams", "gamma")``), which the browser keys on. ``path`` is the field it
names in words: the location kind (``body``, ``query``) and a union member's tag
(``model_args.width.float``) left out, the entry added (``hparams.kappa``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

__all__ = ["FieldError", "InvalidField", "field_errors", "first_error"]

Loc = tuple[str | int, ...]
_KINDS = ("body", "query", "path", "header", "cookie")
# A union member's tag at the end of a loc, by the error types it gives: ``float_parsing``...
_UNION_TAGS = {"float": "float", "int": "int", "bool": "bool", "str": "string"}


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where (``loc``), why (``msg``) and what was given (``input``)."""

    loc: Loc
    msg: str
    input: Any = None
    type: str = "value_error"
    key: str | None = None  # the entry of a mapping field the error is about

    @classmethod
    def from_dict(cls, err: Mapping[str, Any]) -> FieldError:
        """From one pydantic error or one item of a 422 ``detail``."""
        ctx = err.get("ctx")
        cause = ctx.get("error") if isinstance(ctx, Mapping) else None
        key = getattr(cause, "key", None)
        return cls(tuple(err.get("loc") or ()), str(err.get("msg", "invalid value")),
                   err.get("input"), str(err.get("type", "value_error")),
                   key if isinstance(key, str) else None)

    @property
    def full_loc(self) -> Loc:
        """``loc`` with the entry a whole-mapping check named (``body.hparams.gamma``): what
        the API answers, so the browser finds the entry's own widget."""
        if self.key is None or (self.loc and self.loc[-1] == self.key):
            return self.loc
        return (*self.loc, self.key)

    @property
    def path(self) -> Loc:
        """The field named, without the location kind or a union tag, with the entry."""
        parts = list(self.loc[1:] if self.loc and self.loc[0] in _KINDS else self.loc)
        if len(parts) > 1 and self.type.startswith(f"{_UNION_TAGS.get(str(parts[-1]), '-')}_"):
            parts.pop()
        if self.key is not None and (not parts or parts[-1] != self.key):
            parts.append(self.key)
        return tuple(parts)

    @property
    def field(self) -> str:
        """``path`` dotted: ``lr``, ``hparams.kappa``, ``grid.lr``, ``base.model_args.width``."""
        return ".".join(str(p) for p in self.path)

    def under(self, *prefix: str | int) -> FieldError:
        """The same error with ``prefix`` before its loc (``under("body")``)."""
        return replace(self, loc=(*prefix, *self.loc))

    def detail(self) -> dict[str, Any]:
        """One item of FastAPI's 422 ``detail``."""
        return {"type": self.type, "loc": list(self.full_loc), "msg": self.msg,
                "input": self.input}


class InvalidField(ValueError):
    """A domain error: ``error`` names the field of the request that cannot be used (``loc``
    relative to the request's body or query; the route adds which); ``more`` the other fields
    found wrong with it, so that one answer names them all."""

    def __init__(self, loc: Loc, msg: str, value: Any = None,
                 more: Iterable[FieldError] = ()) -> None:
        super().__init__(msg)
        self.error = FieldError(loc, msg, value)
        self.more = list(more)

    @property
    def errors(self) -> list[FieldError]:
        return [self.error, *self.more]


def field_errors(source: ValidationError | Iterable[Mapping[str, Any]] | Any) -> list[FieldError]:
    """Every field error of a ``ValidationError`` or a 422 ``detail`` (a list of dicts; any
    other detail, e.g. a plain string, is one error with an empty loc)."""
    if isinstance(source, ValidationError):
        return [FieldError.from_dict(e) for e in source.errors()]
    if isinstance(source, list) and all(isinstance(e, Mapping) for e in source):
        return [FieldError.from_dict(e) for e in source]
    return [FieldError((), str(source))]


def first_error(source: ValidationError | Iterable[Mapping[str, Any]] | Any) -> FieldError:
    """The first of ``field_errors(source)`` (an empty list: an error with no field)."""
    errors = field_errors(source)
    return errors[0] if errors else FieldError((), "invalid")
