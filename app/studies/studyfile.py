"""Study files: TOML (``tomllib``) to a validated :class:`~app.studies.plan.Study`.

The file's shape is checked by pydantic models, then its names and values through
``bamsprod.core.spec`` (optimizers, models, data sets and their hyperparameters, plugins
included, and :class:`~bamsprod.core.spec.RunConfig` for each task). Any error is a
:class:`StudyFileError` that names the key (``tasks[1].epochs``) and the line it is on: a TOML
syntax error carries its line; for the rest, :func:`key_lines` maps each key of the text to its
line. The reference for the format is ``docs/studies.md``; the shipped studies are
``app/studies/files/*.toml``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bamsprod.app.studies.claims import parse_claim
from bamsprod.app.studies.plan import (
    DEFAULT_FRACTION,
    Search,
    SensitivityMap,
    Study,
    Target,
    Task,
    log_rates,
)
from bamsprod.core.metric_schema import TARGET_METRICS
from bamsprod.core.spec import (
    DATASETS,
    DEFAULT_LR,
    MODELS,
    OPTIMIZERS,
    EntryError,
    RunConfig,
    resolve_hparams,
    resolve_model_args,
)

__all__ = ["StudyFileError", "key_lines", "load_study", "parse_study", "shipped_names",
           "shipped_text"]

Loc = tuple[str | int, ...]
Scalar = bool | int | float
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
# a learning rate's bounds, as run configs take it
LR_MAX = 10.0


class StudyFileError(ValueError):
    """A bad study file: ``source:line: key: message`` (the line when it is known)."""

    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        self.source, self.key, self.message, self.line = source, key, message, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _Bad(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


# ---------------------------------------------------------------------------- the shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float)


def _seeds(value: Any) -> tuple[int, ...]:
    """``n`` (seeds 0 .. n-1) or a list of distinct seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 1000:
            raise ValueError("a number of seeds must be 1 to 1000")
        return tuple(range(value))
    if isinstance(value, list) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in value):
        if len(set(value)) != len(value):
            raise ValueError("seeds repeat")
        return tuple(value)
    raise ValueError("give a number of seeds (3) or a list of seeds ([0, 1, 2]), each >= 0")


class _Task(_Strict):
    name: Name
    title: str | None = Field(default=None, max_length=200)
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    train_subset: int | None = None
    test_subset: int | None = None
    val_split: float = 0.1
    epochs: int = Field(ge=1)
    batch_size: int = 128
    evals_per_epoch: int = Field(default=1, ge=1, le=64)
    stage1_epochs: int | None = Field(default=None, ge=1)
    target: float | None = Field(default=None, gt=0, le=1)

    @field_validator("model_args")
    @classmethod
    def _args(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, v in value.items():
            if not _scalar(v):
                raise ValueError(f"{key} must be a number or true/false")
        return value


class _LogRange(_Strict):
    min: float = Field(gt=0, le=LR_MAX)
    max: float = Field(gt=0, le=LR_MAX)
    n: int = Field(ge=1, le=64)


class _Optimizer(_Strict):
    name: str
    lr: list[float] | _LogRange | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)
    tuned: bool | None = None
    note: str = Field(default="", max_length=1000)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, value: Any) -> Any:
        if _scalar(value) and not isinstance(value, bool):
            raise ValueError(f"give a list, lr = [{value}], or a log range "
                             "{min = 1e-4, max = 1e-2, n = 3}")
        if isinstance(value, list):
            if not value or not all(_scalar(v) and not isinstance(v, bool) and 0 < v <= LR_MAX
                                    for v in value):
                raise ValueError(f"a list of learning rates, each > 0 and <= {LR_MAX:g}")
            if len(set(value)) != len(value):
                raise ValueError("learning rates repeat")
        elif value is not None and not isinstance(value, dict):
            raise ValueError("a list of learning rates, or a log range {min, max, n}")
        return value

    @field_validator("hparams")
    @classmethod
    def _hparams(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, v in value.items():
            values = v if isinstance(v, list) else [v]
            if not values or not all(_scalar(x) for x in values):
                raise ValueError(f"{key} must be a value or a list of values (numbers or "
                                 "true/false)")
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: values repeat")
        return value


class _Target(_Strict):
    metric: Literal[*TARGET_METRICS] = "test_acc"  # type: ignore[valid-type]
    baseline: str | None = None
    fraction: float = Field(default=DEFAULT_FRACTION, gt=0, le=1)


class _Map(_Strict):
    task: str
    optimizer: str = "bamsprod"
    kappa: list[float] = Field(min_length=1, max_length=20)
    gamma: list[float] = Field(min_length=1, max_length=20)
    lr: float | None = Field(default=None, gt=0, le=LR_MAX)
    seeds: Any = Field(default=1, validate_default=True)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: Any) -> tuple[int, ...]:
        return _seeds(value)


class _Resources(_Strict):
    device: Literal["cpu", "gpu"] = "cpu"
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=1, ge=0, le=1024)


class _StudyFile(_Strict):
    name: Name
    purpose: str = Field(default="", max_length=1000)
    seeds: Any = Field(default=3, validate_default=True)
    claims: list[str] = Field(default_factory=list, max_length=50)
    cuts: list[str] = Field(default_factory=list, max_length=50)
    tasks: list[_Task] = Field(min_length=1, max_length=50)
    optimizers: list[_Optimizer] = Field(min_length=1, max_length=50)
    target: _Target = Field(default_factory=_Target)
    map: _Map | None = None
    resources: _Resources = Field(default_factory=_Resources)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: Any) -> tuple[int, ...]:
        return _seeds(value)


# ------------------------------------------------------------------------- the meaning


def _unique(names: Sequence[str], field: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _Bad((field, i, "name"), f"{what} {name!r} is given twice")
        seen.add(name)


def _known(name: str, table: Any, what: str, loc: Loc) -> None:
    if name not in table:
        raise _Bad(loc, f"unknown {what} {name!r}; known: {', '.join(table)}")


def _task(i: int, t: _Task, needs_val: bool) -> Task:
    loc: Loc = ("tasks", i)
    _known(t.model, MODELS, "model", (*loc, "model"))
    _known(t.dataset, DATASETS, "data set", (*loc, "dataset"))
    try:
        resolve_model_args(t.model, t.model_args)
    except EntryError as exc:
        raise _Bad((*loc, "model_args", exc.key), str(exc)) from None
    stage1 = t.stage1_epochs or t.epochs
    if stage1 > t.epochs:
        raise _Bad((*loc, "stage1_epochs"), f"stage 1 must be no longer than epochs ({t.epochs})")
    task = Task(key=t.name, title=t.title or t.name, model=t.model, dataset=t.dataset,
                model_args=dict(t.model_args), epochs=t.epochs, stage1_epochs=stage1,
                train_subset=t.train_subset, test_subset=t.test_subset,
                batch_size=t.batch_size, val_split=t.val_split,
                evals_per_epoch=t.evals_per_epoch, target=t.target)
    config = task.base_config()
    if "evals_per_epoch" not in RunConfig.model_fields:  # a server before the field
        config.pop("evals_per_epoch", None)
    try:
        RunConfig.model_validate(config)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise _Bad((*loc, *error["loc"]), error["msg"]) from None
    if needs_val and not t.val_split:
        raise _Bad((*loc, "val_split"), "a tuned optimizer chooses on validation: val_split "
                                        "must be > 0")
    return task


def _search(j: int, o: _Optimizer) -> Search:
    loc: Loc = ("optimizers", j)
    _known(o.name, OPTIMIZERS, "optimizer", (*loc, "name"))
    searched: dict[str, tuple[Any, ...]] = {}
    fixed: dict[str, Any] = {}
    for key, value in o.hparams.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            try:
                resolve_hparams(o.name, {key: v})
            except EntryError as exc:
                raise _Bad((*loc, "hparams", key), str(exc)) from None
        if len(values) > 1:
            searched[key] = tuple(values)
        else:
            fixed[key] = values[0]
    lr_range = None
    if isinstance(o.lr, _LogRange):
        if o.lr.min > o.lr.max:
            raise _Bad((*loc, "lr", "max"), "max must be >= min")
        lrs, lr_range = log_rates(o.lr.min, o.lr.max, o.lr.n), (o.lr.min, o.lr.max)
    elif o.lr is not None:
        lrs = tuple(float(v) for v in o.lr)
    else:
        lrs = (DEFAULT_LR[o.name],)
    settings = len(lrs) * math.prod(len(v) for v in searched.values())
    tuned = o.tuned if o.tuned is not None else settings > 1
    if not tuned and settings > 1:
        raise _Bad((*loc, "tuned"), f"tuned = false needs one setting, and {o.name} has "
                   f"{settings}: give one lr and one value per hyperparameter, or tune it")
    if tuned and lr_range is None and len(lrs) > 1:
        lo, hi = min(lrs), max(lrs)
        spaced = log_rates(lo, hi, len(lrs))
        if len(spaced) != len(lrs) or any(abs(a - b) > 1e-3 * b
                                          for a, b in zip(sorted(lrs), spaced, strict=True)):
            raise _Bad((*loc, "lr"), "a tuned optimizer's rates are log-spaced (tuned sweeps "
                       f"space them so): give lr = {{min = {lo:g}, max = {hi:g}, "
                       f"n = {len(lrs)}}}, that is [{', '.join(f'{v:g}' for v in spaced)}]")
        lrs = spaced
    return Search(optimizer=o.name, lrs=lrs, hparams=searched, fixed=fixed, tuned=tuned,
                  lr_range=lr_range, source=o.note)


def _map(m: _Map, tasks: Sequence[Task]) -> SensitivityMap:
    if m.task not in [t.key for t in tasks]:
        raise _Bad(("map", "task"), f"no task {m.task!r}; tasks: "
                   f"{', '.join(t.key for t in tasks)}")
    _known(m.optimizer, OPTIMIZERS, "optimizer", ("map", "optimizer"))
    for key, values in (("kappa", m.kappa), ("gamma", m.gamma)):
        for v in values:
            try:
                resolve_hparams(m.optimizer, {key: v})
            except EntryError as exc:
                raise _Bad(("map", key), str(exc)) from None
    lr = m.lr if m.lr is not None else DEFAULT_LR[m.optimizer]
    return SensitivityMap(task=m.task, kappas=tuple(m.kappa), gammas=tuple(m.gamma),
                          seeds=m.seeds, lr=lr, optimizer=m.optimizer)


def _study(f: _StudyFile, source: str) -> Study:
    _unique([t.name for t in f.tasks], "tasks", "task")
    _unique([o.name for o in f.optimizers], "optimizers", "optimizer")
    searches = tuple(_search(j, o) for j, o in enumerate(f.optimizers))
    needs_val = any(s.tuned for s in searches)
    tasks = tuple(_task(i, t, needs_val) for i, t in enumerate(f.tasks))
    names = [s.optimizer for s in searches]
    baseline = f.target.baseline or ("adam" if "adam" in names else names[0])
    if baseline not in names:
        raise _Bad(("target", "baseline"), f"{baseline!r} is not an optimizer of the study "
                   f"({', '.join(names)})")
    claims = []
    for k, text in enumerate(f.claims):
        try:
            claims.append(parse_claim(text, names[0], names))
        except ValueError as exc:
            raise _Bad(("claims", k), str(exc)) from None
    return Study(
        name=f.name, purpose=f.purpose, tasks=tasks, searches=searches, seeds=f.seeds,
        target=Target(metric=f.target.metric, baseline=baseline, fraction=f.target.fraction),
        claims=tuple(claims), sensitivity=_map(f.map, tasks) if f.map else None,
        cuts=tuple(f.cuts), device=f.resources.device, workers=f.resources.workers,
        threads=f.resources.threads, source=source,
    )


# ----------------------------------------------------------------------- keys to lines

_STRING = re.compile(r'"""|\'\'\'|"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_HEADER = re.compile(r"^\[(\[)?\s*([^\[\]]+?)\s*\]\]?$")
_KEY = re.compile(r"^([A-Za-z0-9_\-.\s\"']+?)\s*=\s*(.*)$")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.split(r"\.(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$)",
                                                    text)]


def key_lines(text: str) -> dict[Loc, int]:
    """Each key of a TOML text (as a pydantic-style loc: ``("tasks", 1, "epochs")``) and the
    line it is written on; array-of-tables headers map to their element (``("tasks", 1)``),
    keys of an inline table to its line. Continuation lines of multi-line values are skipped."""
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    table: Loc = ()
    depth = 0  # open brackets/braces of a multi-line value
    in_triple = False

    def resolve(parts: list[str]) -> Loc:
        out: list[str | int] = []
        for p in parts:
            out.append(p)
            if tuple(out) in counts:
                out.append(counts[tuple(out)])
        return tuple(out)

    for no, raw in enumerate(text.splitlines(), 1):
        bare = _STRING.sub(lambda m: m.group(0) if m.group(0) in ('"""', "'''") else '""', raw)
        if bare.count('"""') % 2 or bare.count("'''") % 2:
            in_triple = not in_triple
            continue
        if in_triple:
            continue
        bare = bare.split("#", 1)[0].strip()
        if depth:
            depth += bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")
            continue
        if not bare:
            continue
        if (m := _HEADER.match(bare)) is not None:
            parts = _key_parts(m.group(2))
            if m.group(1):  # [[array]]: a new element
                head = resolve(parts[:-1]) + (parts[-1],)
                counts[head] = counts.get(head, -1) + 1
                table = (*head, counts[head])
                lines.setdefault(head, no)
            else:
                table = resolve(parts)
            lines.setdefault(table, no)
            continue
        if (m := _KEY.match(bare)) is not None:
            path = (*table, *_key_parts(m.group(1)))
            lines.setdefault(path, no)
            value = m.group(2)
            if value.startswith("{"):
                for sub in _INLINE_KEY.finditer(value):
                    lines.setdefault((*path, sub.group(1).strip('"')), no)
            depth = max(0, value.count("[") + value.count("{") - value.count("]")
                        - value.count("}"))
    return lines


def line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of ``loc``, else of its nearest enclosing key (a missing key: its table)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def key_text(loc: Loc) -> str:
    """``("tasks", 1, "epochs")`` -> ``tasks[1].epochs``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPE_TAG = re.compile(r"^(bool|int|float|str|list|dict|none)$|[\[\]]|^function-")


def _clean(loc: Sequence[Any]) -> Loc:
    """A pydantic loc without its union/validator tags."""
    return tuple(p for p in loc if isinstance(p, int) or not _TYPE_TAG.search(str(p)))


# ------------------------------------------------------------------------------ entry


def parse_study(text: str, source: str = "<study>") -> Study:
    """The :class:`Study` a TOML text declares; :class:`StudyFileError` otherwise."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        col = f", column {m.group(2)}" if m else ""
        raise StudyFileError(source, "", f"TOML syntax: {msg}{col}", line) from None
    lines = key_lines(text)
    try:
        shape = _StudyFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _clean(error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            msg = "unknown key (see docs/studies.md for the keys a study file takes)"
        raise StudyFileError(source, key_text(loc), msg, line_of(loc, lines)) from None
    try:
        return _study(shape, source)
    except _Bad as bad:
        raise StudyFileError(source, key_text(bad.loc), bad.message,
                             line_of(bad.loc, lines)) from None


FILES = "files"


def _files() -> Any:
    return resources.files("bamsprod.app.studies") / FILES


def shipped_names() -> list[str]:
    """The studies that ship with bamsprod (``app/studies/files/*.toml``)."""
    return sorted(p.name.removesuffix(".toml") for p in _files().iterdir()
                  if p.name.endswith(".toml"))


def shipped_text(name: str) -> str:
    if name not in shipped_names():
        raise KeyError(name)
    return (_files() / f"{name}.toml").read_text()


def load_study(file_or_name: str | Path) -> Study:
    """A study from a file path, or a shipped study by name (``paper``, ``quick``, ``cpu``)."""
    path = Path(file_or_name)
    if path.is_file():
        return parse_study(path.read_text(), str(path))
    name = str(file_or_name)
    if name in shipped_names():
        return parse_study(shipped_text(name), f"{name} (shipped)")
    raise StudyFileError(str(file_or_name), "", "no such file, and no shipped study of that "
                         f"name (shipped: {', '.join(shipped_names())})")
