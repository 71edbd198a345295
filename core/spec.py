"""The run configuration: one versioned pydantic model shared by the form, API, CLI and database.

This module imports no torch, so the API can validate a run cheaply. The registries of model,
data set and optimizer names (with each optimizer's hyperparameters, defaults and ranges) live
here; ``core.optim.build`` and ``core.nn.build_model`` accept exactly these names, and a test
checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# 2 added val_split; a stored version-1 config has none (it trained on the whole train set).
SCHEMA_VERSION = 2

ModelName = Literal["mlp", "binarynet", "resnet18"]
DatasetName = Literal["mnist", "fashion-mnist", "digits", "cifar10", "synthetic"]
OptimizerName = Literal["bamsprod", "bop", "adabound", "amsbound", "adam", "amsgrad", "sgd"]
SchedulerName = Literal["none", "cosine", "step"]
DeviceName = Literal["auto", "cpu", "cuda"]
# torch.compile of the train step: "off", or a torch.compile mode ("reduce-overhead" adds CUDA
# graphs on a GPU).
CompileMode = Literal["off", "default", "reduce-overhead"]

# ``pruned``: a tuning trial stopped early by successive halving (a loser, not an error).
RUN_STATES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled", "pruned")
TERMINAL_STATES = ("succeeded", "failed", "diverged", "cancelled", "pruned")


# C0 and C1 control characters (NUL included) and lone surrogates, which no encoding can store.
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(value: str | None) -> str | None:
    """``value`` unchanged, or ``ValueError`` when it holds a control character (NUL, newline,
    escape...) or a code point that cannot be encoded (a lone surrogate). Other Unicode passes."""
    if value is None:
        return None
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        ch = bad.group()
        what = "a code point that cannot be encoded" if "\ud800" <= ch else "a control character"
        raise ValueError(f"contains {what} (U+{ord(ch):04X}) at position {bad.start()}")
    return value


def escape_text(value: str) -> str:
    """``value`` with each character ``check_text`` rejects written as an escape (``\\x1b``,
    ``\\udc80``): printable and storable, for labels built from user values and for terminals."""
    return _BAD_TEXT.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


# Free text that is safe to store, index and print: see ``check_text``.
SafeText = Annotated[str, AfterValidator(check_text)]


@dataclass(frozen=True)
class HParam:
    """One named hyperparameter: its default, type and inclusive range."""

    default: float | int | bool
    lo: float | None = None
    hi: float | None = None
    help: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, name: str, value: Any) -> float | int | bool:
        """Coerce ``value`` to this parameter's type or raise ``ValueError`` naming ``name``."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{name} must be an integer, got {value!r}")
            value = int(value)
        elif isinstance(value, int) and abs(value) > 2**53:
            raise ValueError(f"{name} is out of range, got {value!r}")
        else:
            value = float(value)
        if self.lo is not None and value < self.lo:
            raise ValueError(f"{name} must be >= {self.lo}, got {value!r}")
        if self.hi is not None and value > self.hi:
            raise ValueError(f"{name} must be <= {self.hi}, got {value!r}")
        return value


_BETAS = {
    "beta1": HParam(0.9, 0.0, 0.999999, "first-moment decay"),
    "beta2": HParam(0.999, 0.0, 0.999999, "second-moment decay"),
    "eps": HParam(1e-8, 0.0, 1.0, "denominator epsilon"),
    "weight_decay": HParam(0.0, 0.0, 1.0, "L2 penalty added to the gradient"),
}

OPTIMIZERS: dict[str, dict[str, HParam]] = {
    "bamsprod": {
        **_BETAS,
        "gamma": HParam(1e-3, 0.0, 1.0, "bound convergence speed; 0 is AMSGrad"),
        "kappa": HParam(1.0, 0.0, 100.0, "how much quantization error widens the target"),
    },
    "bop": {
        "gamma": HParam(1e-4, 0.0, 1.0, "Bop adaptivity rate"),
        "threshold": HParam(1e-8, 0.0, 1.0, "Bop flip threshold tau"),
        "beta1": _BETAS["beta1"],
        "beta2": _BETAS["beta2"],
        "eps": _BETAS["eps"],
    },
    "adabound": {
        **_BETAS,
        "final_lr": HParam(0.1, 0.0, 10.0, "the SGD learning rate the bounds converge to"),
        "gamma": HParam(1e-3, 0.0, 1.0, "bound convergence speed"),
    },
    "amsbound": {
        **_BETAS,
        "final_lr": HParam(0.1, 0.0, 10.0, "the SGD learning rate the bounds converge to"),
        "gamma": HParam(1e-3, 0.0, 1.0, "bound convergence speed"),
    },
    "adam": dict(_BETAS),
    "amsgrad": dict(_BETAS),
    "sgd": {
        "momentum": HParam(0.9, 0.0, 0.999999, "momentum"),
        "nesterov": HParam(False, help="Nesterov momentum"),
        "weight_decay": _BETAS["weight_decay"],
    },
}

MODELS: dict[str, dict[str, HParam]] = {
    "mlp": {
        "width": HParam(512, 8, 8192, "hidden units per layer"),
        "depth": HParam(2, 1, 16, "hidden (binary) layers"),
        "scale": HParam(True, help="per-output-channel scale a = mean|w|"),
        "binary_act": HParam(True, help="binarize activations (sign with STE)"),
    },
    "binarynet": {
        "width_mult": HParam(0.25, 0.03125, 4.0, "channel multiplier (1.0 is Bop's BinaryNet)"),
        "scale": HParam(True, help="per-output-channel scale a = mean|w|"),
        "binary_act": HParam(True, help="binarize activations (sign with STE)"),
    },
    "resnet18": {
        "width_mult": HParam(1.0, 0.03125, 4.0, "channel multiplier (1.0 is 64-128-256-512)"),
        "scale": HParam(True, help="per-output-channel scale a = mean|w|"),
        "binary_act": HParam(True, help="binarize activations (sign with STE)"),
    },
}

# Input shape (channels, height, width) and class count per data set.
DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {"shape": (1, 28, 28), "classes": 10, "train": 60000, "test": 10000},
    "fashion-mnist": {"shape": (1, 28, 28), "classes": 10, "train": 60000, "test": 10000},
    "digits": {"shape": (1, 8, 8), "classes": 10, "train": 1437, "test": 360},
    "cifar10": {"shape": (3, 32, 32), "classes": 10, "train": 50000, "test": 10000},
    "synthetic": {"shape": (1, 8, 8), "classes": 10, "train": 2000, "test": 500},
}

# Learning rates that suit each optimizer when the user gives none (see docs/optimizers.md).
DEFAULT_LR: dict[str, float] = {
    "bamsprod": 1e-3,
    "bop": 1e-2,
    "adabound": 1e-3,
    "amsbound": 1e-3,
    "adam": 1e-3,
    "amsgrad": 1e-3,
    "sgd": 1e-2,
}

MAX_EPOCHS = 1000
# A run's stored device text (the column's width): device, GPU card name, optimizer path.
DEVICE_TEXT_MAX = 64


class EntryError(ValueError):
    """A bad entry of a mapping field (``hparams``, ``model_args``); ``key`` names it, so an
    error on the whole field can still point at the entry (``hparams.kappa``)."""

    def __init__(self, msg: str, key: str) -> None:
        super().__init__(msg)
        self.key = key


def _check_named(kind: str, table: dict[str, HParam], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise EntryError(f"unknown {kind} {unknown[0]!r}; known: {', '.join(table)}", unknown[0])
    out = {k: h.default for k, h in table.items()}
    for key, value in given.items():
        try:
            out[key] = table[key].check(f"{kind} {key}", value)
        except ValueError as exc:
            raise EntryError(str(exc), key) from None
    return out


def resolve_hparams(optimizer: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``optimizer``, defaults filled in; raises on unknown or bad ones."""
    return _check_named("hparam", OPTIMIZERS[optimizer], given)


def resolve_model_args(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every argument of ``model``, defaults filled in; raises on unknown or bad ones."""
    return _check_named("model_arg", MODELS[model], given)


def split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """``(train, validation)`` examples that holding out ``fraction`` of ``n`` leaves (the
    split ``core.data.split.validation_split`` makes: ``round(fraction * n)`` held out)."""
    held = round(fraction * n)
    return n - held, held


class RunConfig(BaseModel):
    """Everything that defines one training run. Unknown fields, non-finite numbers and text
    with control characters or unencodable code points are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    name: SafeText = Field("", max_length=200, description="free text shown in tables")
    tags: list[SafeText] = Field(default_factory=list, max_length=20)
    model: ModelName = "mlp"
    model_args: dict[str, float | int | bool] = Field(default_factory=dict, validate_default=True)
    dataset: DatasetName = "digits"
    data_dir: SafeText | None = Field(
        None, max_length=1000, description="absolute directory for cifar10 (on the workers)"
    )
    train_subset: int | None = Field(
        None, ge=2, le=10_000_000, description="first N train examples"
    )
    test_subset: int | None = Field(None, ge=1, le=10_000_000, description="first N test examples")
    val_split: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="fraction of the training set held out for validation (fixed split; "
        "tuning reads validation, never test)",
    )
    optimizer: OptimizerName = "bamsprod"
    lr: float | None = Field(
        None, gt=0, le=10, description="learning rate; None: per-optimizer default"
    )
    hparams: dict[str, float | int | bool] = Field(default_factory=dict, validate_default=True)
    scheduler: SchedulerName = "none"
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    # BatchNorm needs two examples a batch to compute a variance.
    batch_size: int = Field(128, ge=2, le=8192)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: DeviceName = "auto"
    compile: CompileMode = Field(
        "off", description="torch.compile the train step (reduce-overhead: CUDA graphs too)"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_no_split(cls, data: Any) -> Any:
        # A version-1 config (stored before val_split existed) trained on all of its train set.
        if isinstance(data, dict) and data.get("schema_version") == 1:
            data = {**data}
            data.setdefault("val_split", 0.0)
        return data

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for t in tags:
            if not t or len(t) > 64:
                raise ValueError("each tag must be 1 to 64 characters")
        return tags

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: str | None) -> str | None:
        # A relative path would resolve against each worker's working directory, not the
        # submitter's: ask for the absolute path instead.
        if value and not value.startswith(("/", "~")):
            raise ValueError("must be an absolute path (or start with ~)")
        if value and value.startswith("~") and value != "~" and not value.startswith("~/"):
            # ~name means another user's home: on a worker it may not exist, or be theirs.
            raise ValueError("~user paths are not taken: use an absolute path or ~/...")
        return value

    @field_validator("val_split")
    @classmethod
    def _leaves_a_batch(cls, value: float, info: ValidationInfo) -> float:
        # Too few examples left to train on (train_subset 2, val_split 0.5): an epoch would
        # have no batch (BatchNorm needs two examples), so refuse it here, naming the field.
        dataset = info.data.get("dataset")
        if dataset not in DATASETS:
            return value
        n = int(DATASETS[dataset]["train"])
        subset = info.data.get("train_subset")
        if subset is not None:
            n = min(n, subset)
        train, held = split_sizes(n, value)
        if train < 2:
            raise ValueError(f"val_split {value} holds out {held} of {n} training examples, "
                             f"leaving {train}; a batch needs 2: lower val_split or raise "
                             "train_subset")
        return value

    # Defaults are filled in so the stored JSON says exactly what ran; errors land on the field.
    @field_validator("hparams")
    @classmethod
    def _hparams(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        optimizer = info.data.get("optimizer")
        return resolve_hparams(optimizer, value) if optimizer else value

    @field_validator("model_args")
    @classmethod
    def _model_args(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = info.data.get("model")
        return resolve_model_args(model, value) if model else value

    @model_validator(mode="after")
    def _default_lr(self) -> RunConfig:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        return self

    def config_hash(self) -> str:
        """Hash of what decides the result, minus the seed: runs that differ by seed share it."""
        return config_hash(self)


# What a run was trained on and how it was executed, not what it computes.
_HASH_EXCLUDES = {"seed", "name", "tags", "device", "data_dir", "compile"}


def config_hash(config: RunConfig) -> str:
    # A version-1 config hashes as it did before val_split existed (its checkpoints still match).
    legacy = {"val_split", "schema_version"} if config.schema_version == 1 else set()
    data = config.model_dump(mode="json", exclude=_HASH_EXCLUDES | legacy)
    if config.schema_version == 1:
        data["schema_version"] = 1
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
