"""Study files: TOML (``tomllib``) to a validated :class:`~app.studies.plan.Study`.

The file's shape is checked by the pydantic models of :mod:`app.studies.file_shape`, then its
names and values through
``bamsprod.core.config`` (optimizers, models, data sets and their hyperparameters, plugins
included, and :class:`~bamsprod.core.config.RunConfig` for each task). Any error is a
:class:`StudyFileError` that names the key (``tasks[1].epochs``) and the line it is on: a TOML
syntax error carries its line; for the rest, :mod:`app.studies.toml_lines` maps each key of
the text to its line. The reference for the format is ``docs/studies.md``; the shipped studies are
``app/studies/files/*.toml``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bamsprod.app.studies.claims import parse_claim
from bamsprod.app.studies.file_shape import (
    LogRange,
    MapEntry,
    OptimizerEntry,
    StudyFileShape,
    TaskEntry,
)
from bamsprod.app.studies.plan import (
    Search,
    SensitivityMap,
    Study,
    Target,
    Task,
    log_rates,
)
from bamsprod.app.studies.toml_lines import Loc, key_lines, key_text, line_of
from bamsprod.core.config import (
    DATASETS,
    DEFAULT_LR,
    MODELS,
    OPTIMIZERS,
    EntryError,
    RunConfig,
    resolve_hparams,
    resolve_model_args,
)

__all__ = ["StudyFileError", "load_study", "parse_study", "shipped_names", "shipped_text"]


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


def _task(i: int, t: TaskEntry, needs_val: bool) -> Task:
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


def _search(j: int, o: OptimizerEntry) -> Search:
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
    if isinstance(o.lr, LogRange):
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


def _map(m: MapEntry, tasks: Sequence[Task]) -> SensitivityMap:
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


def _study(f: StudyFileShape, source: str) -> Study:
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
        shape = StudyFileShape.model_validate(data)
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
