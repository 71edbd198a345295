"""The shape a study file must have, as pydantic models: keys, types, ranges and defaults
(``docs/studies.md``). What the names and values mean (the registry, ``RunConfig``) is checked
after, by :mod:`app.studies.studyfile`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bamsprod.app.studies.plan import DEFAULT_FRACTION
from bamsprod.core.metric_schema import TARGET_METRICS

Scalar = bool | int | float
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
# a learning rate's bounds, as run configs take it
LR_MAX = 10.0


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


class TaskEntry(_Strict):
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


class LogRange(_Strict):
    min: float = Field(gt=0, le=LR_MAX)
    max: float = Field(gt=0, le=LR_MAX)
    n: int = Field(ge=1, le=64)


class OptimizerEntry(_Strict):
    name: str
    lr: list[float] | LogRange | None = None
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


class TargetEntry(_Strict):
    metric: Literal[*TARGET_METRICS] = "test_acc"  # type: ignore[valid-type]
    baseline: str | None = None
    fraction: float = Field(default=DEFAULT_FRACTION, gt=0, le=1)


class MapEntry(_Strict):
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


class ResourcesEntry(_Strict):
    device: Literal["cpu", "gpu"] = "cpu"
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=1, ge=0, le=1024)


class StudyFileShape(_Strict):
    name: Name
    purpose: str = Field(default="", max_length=1000)
    seeds: Any = Field(default=3, validate_default=True)
    claims: list[str] = Field(default_factory=list, max_length=50)
    cuts: list[str] = Field(default_factory=list, max_length=50)
    tasks: list[TaskEntry] = Field(min_length=1, max_length=50)
    optimizers: list[OptimizerEntry] = Field(min_length=1, max_length=50)
    target: TargetEntry = Field(default_factory=TargetEntry)
    map: MapEntry | None = None
    resources: ResourcesEntry = Field(default_factory=ResourcesEntry)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: Any) -> tuple[int, ...]:
        return _seeds(value)
