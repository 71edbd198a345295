"""The run configuration: one versioned pydantic model shared by the form, API, CLI and database.

This module imports no torch, so the API can validate a run cheaply. The names of optimizers,
models and data sets (with each one's hyperparameters, defaults and ranges) come from the one
registry, ``core.plugins`` (fed by entry points: the built-ins and any installed plugin);
``OPTIMIZERS``, ``MODELS``, ``DATASETS`` and ``DEFAULT_LR`` are read-only views of it, and
``core.optim.build``, ``core.nn.build_model`` and ``core.data.load_dataset`` build from the same
entries.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bamsprod.core.hparam import HParam
from bamsprod.core.plugins import Kind, registry

# 2 added val_split; a stored version-1 config has none (it trained on the whole train set).
SCHEMA_VERSION = 2

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


V = TypeVar("V")


class RegistryView(Mapping[str, V]):
    """A read-only mapping over one kind of the registry: name -> what ``value`` reads of its
    spec. It follows the registry (plugins included), read on each access."""

    def __init__(self, kind: Kind, value: Callable[[Any], V]) -> None:
        self._kind, self._value = kind, value

    def __getitem__(self, name: str) -> V:
        entry = registry().get(self._kind, name) if isinstance(name, str) else None
        if entry is None:
            raise KeyError(name)
        return self._value(entry.spec)

    def __iter__(self) -> Iterator[str]:
        return iter(registry().names(self._kind))

    def __len__(self) -> int:
        return len(registry().names(self._kind))

    def __repr__(self) -> str:
        return f"<{self._kind} registry: {', '.join(self)}>"


# name -> {hyperparameter: HParam}, per optimizer; name -> {argument: HParam}, per model.
OPTIMIZERS: Mapping[str, Mapping[str, HParam]] = RegistryView(
    "optimizer", lambda spec: MappingProxyType(dict(spec.hparams)))
MODELS: Mapping[str, Mapping[str, HParam]] = RegistryView(
    "model", lambda spec: MappingProxyType(dict(spec.args)))
# name -> {"shape": (C, H, W), "classes", "train", "test"} per data set.
DATASETS: Mapping[str, dict[str, Any]] = RegistryView("dataset", lambda spec: spec.info())
# The learning rate each optimizer gets when the user gives none (see docs/optimizers.md).
DEFAULT_LR: Mapping[str, float] = RegistryView("optimizer", lambda spec: spec.default_lr)


class RegistryName:
    """Pydantic metadata of a name field: its JSON schema lists the registry's names as an
    ``enum`` (read when the schema is made), so forms and the CLI offer the plugins too."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    def choices(self) -> list[str]:
        return registry().names(self.kind)

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        schema["enum"] = self.choices()
        return schema


def _known(kind: Kind) -> Callable[[str], str]:
    def check(name: str) -> str:
        registry().require(kind, name)  # ValueError: unknown, with the known names
        return name

    return check


ModelName = Annotated[str, AfterValidator(_known("model")), RegistryName("model")]
DatasetName = Annotated[str, AfterValidator(_known("dataset")), RegistryName("dataset")]
OptimizerName = Annotated[str, AfterValidator(_known("optimizer")), RegistryName("optimizer")]

MAX_EPOCHS = 1000
# A run's stored device text (the column's width): device, GPU card name, optimizer path.
DEVICE_TEXT_MAX = 64


class EntryError(ValueError):
    """A bad entry of a mapping field (``hparams``, ``model_args``); ``key`` names it, so an
    error on the whole field can still point at the entry (``hparams.kappa``)."""

    def __init__(self, msg: str, key: str) -> None:
        super().__init__(msg)
        self.key = key


def _check_named(kind: str, table: Mapping[str, HParam], given: dict[str, Any]
                 ) -> dict[str, Any]:
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
    evals_per_epoch: int = Field(
        1,
        ge=1,
        le=64,
        description="validation evaluations per epoch, evenly spaced over its batches (the "
        "last at its end); untimed, and they do not change training",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_no_split(cls, data: Any) -> Any:
        # A version-1 config (stored before val_split existed) trained on all of its train set.
        if isinstance(data, dict) and data.get("schema_version") == 1:
            data = {**data}
            data.setdefault("val_split", 0.0)
        return data

    @field_validator("evals_per_epoch")
    @classmethod
    def _evals_need_a_split(cls, value: int, info: ValidationInfo) -> int:
        # Only the validation split is evaluated between epochs; without one there is nothing.
        if value > 1 and info.data.get("val_split") == 0:
            raise ValueError("more than one evaluation per epoch needs a validation split "
                             "(val_split > 0)")
        return value

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

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float | None, info: ValidationInfo) -> float | None:
        # A plugin may narrow the learning rate's range (its bamsprod_hparams["lr"]).
        optimizer = info.data.get("optimizer")
        if value is not None and optimizer:
            bounds = registry().spec("optimizer", optimizer).lr
            if bounds is not None:
                bounds.check("lr", value)
        return value

    @model_validator(mode="after")
    def _default_lr(self) -> RunConfig:
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        return self

    def config_hash(self) -> str:
        """Hash of what decides the result, minus the seed: runs that differ by seed share it."""
        return config_hash(self)


# What a run was trained on and how it was executed or measured, not what it computes
# (evaluating is untimed and touches no training state: runs that differ in it train alike).
_HASH_EXCLUDES = {"seed", "name", "tags", "device", "data_dir", "compile", "evals_per_epoch"}


def config_hash(config: RunConfig) -> str:
    # A version-1 config hashes as it did before val_split existed (its checkpoints still match).
    legacy = {"val_split", "schema_version"} if config.schema_version == 1 else set()
    data = config.model_dump(mode="json", exclude=_HASH_EXCLUDES | legacy)
    if config.schema_version == 1:
        data["schema_version"] = 1
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
