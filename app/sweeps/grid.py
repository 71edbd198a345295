"""Grid sweeps: a base config × a grid of values per field × seeds, expanded to validated run
configs, counted and checked against the server's limits (no web, no SQL here).

A field that cannot be used raises ``InvalidField`` whose loc is relative to the sweep's body
(``("grid", "hparams.kappa")``, ``("base", "epochs")``); the API answers it as a 422.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bamsprod.app.compare import fmt_value
from bamsprod.app.data_roots import data_dir_refusal
from bamsprod.app.field_errors import FieldError, InvalidField, field_errors, first_error
from bamsprod.app.schemas import SweepCreate
from bamsprod.core.config import RunConfig, escape_text
from bamsprod.core.model_size import size_field, too_large, too_much_activation

__all__ = ["GRID_FIELDS", "NESTED", "check_count", "check_limits", "config_at", "count",
           "expand", "points", "seeds", "size"]

NESTED = ("hparams", "model_args")
GRID_FIELDS = tuple(f for f in RunConfig.model_fields if f not in ("schema_version", *NESTED))


def check_grid(body: SweepCreate) -> None:
    """A grid sweep: no ``tune``; grid keys are run config fields or ``hparams.<name>`` /
    ``model_args.<name>``, each with a value; seeds come from ``seeds`` or ``n_seeds``, not
    both, and not from the grid too."""
    if body.tune is not None:
        raise InvalidField(("tune",), "tune is for strategy tune")
    for key, values in body.grid.items():
        head, _, rest = key.partition(".")
        ok = (head in NESTED and rest and "." not in rest) or (not rest and head in GRID_FIELDS)
        if not ok:
            raise InvalidField(("grid", key), f"unknown grid field {key!r}; use a run config "
                               "field or hparams.<name> / model_args.<name>", key)
        if not values:
            raise InvalidField(("grid", key), f"grid field {key!r} needs at least one value")
    seeded = body.seeds is not None or body.n_seeds is not None
    if body.seeds is not None and body.n_seeds is not None:
        raise InvalidField(("n_seeds",), "give seeds or n_seeds, not both", body.n_seeds)
    if seeded and "seed" in body.grid:
        raise InvalidField(("grid", "seed"), "seeds are given; leave seed out of the grid")


def seeds(body: SweepCreate) -> list[int | None]:
    """The seeds each grid point runs with (None: the base/grid seed)."""
    if body.seeds is not None:
        return list(dict.fromkeys(body.seeds))
    if body.n_seeds is not None:
        start = body.base.get("seed", 0) or 0
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**31:
            raise InvalidField(("base", "seed"), "seed must be an integer 0..2^31-1", start)
        return list(range(start, start + body.n_seeds))
    return [None]


def points(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of the grid's values, as ``{key: value}``, in grid order."""
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def size(grid: Mapping[str, Sequence[Any]]) -> int:
    """How many ``points`` the grid has."""
    return math.prod(len(v) for v in grid.values())


def count(body: SweepCreate) -> int:
    """How many runs the sweep expands to (its grid checked first)."""
    check_grid(body)
    return size(body.grid) * len(seeds(body))


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if not rest:
        config[head] = value
    elif isinstance(config.get(head, {}), dict):  # else validation names the bad base field
        config[head] = {**config.get(head, {}), rest: value}


def _blame(error: FieldError, keys: Collection[str]) -> tuple[str | int, ...]:
    """Where a config's error belongs: the key of ``keys`` that set the field, else the base."""
    for n in (2, 1):
        key = ".".join(str(p) for p in error.path[:n])
        if len(error.path) >= n and key in keys:
            return ("grid", key)
    return ("base", *error.loc)


def config_at(base: Mapping[str, Any], sweep_name: str, values: Mapping[str, Any],
              label: Sequence[str], blame: Collection[str] = (), note: str = "") -> RunConfig:
    """The run config of ``values`` (grid keys: ``lr``, ``hparams.kappa``) set on ``base``, named
    by the base's (else the sweep's) name and ``label``. A validation error is an
    ``InvalidField`` at the grid key of ``blame`` that set the field, else at the base field;
    ``note`` follows its message."""
    data = copy.deepcopy(dict(base))
    for key, value in values.items():
        _set(data, key, value)
    base_name = str(base.get("name") or sweep_name)
    data["name"] = " ".join(p for p in (base_name, *label) if p)[:200]
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        # Every field wrong with this config, each where it was set: the form flags them all.
        first, *rest = field_errors(exc) or [first_error(exc)]
        more = [FieldError(_blame(e, blame), f"{e.msg}{note}", e.input, e.type) for e in rest]
        raise InvalidField(_blame(first, blame), f"{first.msg}{note}", first.input,
                           more=more) from None


def expand(body: SweepCreate) -> list[RunConfig]:
    """Every run of the sweep, validated; a bad combination names its field and values."""
    check_grid(body)
    configs: list[RunConfig] = []
    for point in points(body.grid):
        where = ", ".join(f"{k}={fmt_value(v)}" for k, v in point.items())
        # Grid values may hold text a field will reject: the label must not fail first.
        label = escape_text(" ".join(f"{k}={fmt_value(v)}" for k, v in point.items()))
        for seed in seeds(body):
            values = point if seed is None else {**point, "seed": seed}
            shown = values.get("seed", body.base.get("seed", 0))
            configs.append(config_at(body.base, body.name, values, (label, f"seed={shown}"),
                                     blame=point, note=f" (at {where})" if where else ""))
    return configs


def check_count(body: SweepCreate, n: int, limit: int) -> None:
    """At most ``limit`` runs: else an error at what made them (the grid, or tune's rates)."""
    if n > limit:
        loc: tuple[str, ...] = ("grid",)
        if body.tune is not None:  # the hparams grid, when it has more than one point
            many = any(len(set(map(repr, v))) > 1 for v in body.tune.hparams.values())
            loc = ("tune", "hparams") if many else ("tune", "n_lr")
        raise InvalidField(loc, f"the sweep has {n} runs; the limit is {limit}", n)


def _at(body: SweepCreate, key: str) -> tuple[str, ...]:
    """The loc of field ``key`` (``epochs``, ``model_args.width``): its grid key, else base."""
    return ("grid", key) if key in body.grid else ("base", *key.split("."))


def check_limits(body: SweepCreate, configs: Sequence[RunConfig], max_epochs: int,
                 max_param_bytes: int, max_activation_bytes: int | None = None,
                 data_roots: Sequence[Path] = ()) -> None:
    """No run longer than ``max_epochs``, with a model over ``max_param_bytes``, a training
    step over ``max_activation_bytes`` or a ``data_dir`` outside ``data_roots``."""
    longest = max((c.epochs for c in configs), default=0)
    if longest > max_epochs:
        raise InvalidField(_at(body, "epochs"), f"at most {max_epochs} epochs on this server",
                           longest)
    for config in configs:
        if (why := too_large(config, max_param_bytes)) is not None:
            loc, value = size_field(config)
            raise InvalidField(_at(body, ".".join(loc)), f"{why} (run {config.name!r})", value)
        if max_activation_bytes is not None and (
                why := too_much_activation(config, max_activation_bytes)) is not None:
            raise InvalidField(_at(body, "batch_size"), f"{why} (run {config.name!r})",
                               config.batch_size)
        if (why := data_dir_refusal(config.data_dir, data_roots)) is not None:
            raise InvalidField(_at(body, "data_dir"), why, config.data_dir)
