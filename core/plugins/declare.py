"""Decorators for plugin authors: what a signature cannot say. Neither imports torch.

    @bamsprod.hparams(lr={"lo": 1e-6, "hi": 1.0, "log": True, "help": "step size"},
                      beta1={"lo": 0.0, "hi": 0.999999, "help": "update interpolation"})
    class Lion(torch.optim.Optimizer): ...

    @bamsprod.dataset_info(shape=(1, 8, 8), classes=10, train=1437, test=360)
    def tiny_digits() -> bamsprod.Dataset: ...

Both only set an attribute (``bamsprod_hparams``, ``bamsprod_dataset``), which a plugin may
also set by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bamsprod.core.plugins.signature import INFO_KEYS

__all__ = ["dataset_info", "hparams"]

T = TypeVar("T")


def hparams(**info: Mapping[str, Any]) -> Callable[[T], T]:
    """Per hyperparameter (by its public name: ``beta1``, not ``betas``; or a tuple's name for
    all its elements): any of ``lo``, ``hi`` (inclusive bounds), ``log`` (searched and shown on
    a log scale), ``help`` and ``default`` (for a parameter without one)."""
    for name, item in info.items():
        bad = sorted(set(item) - INFO_KEYS) if isinstance(item, Mapping) else ["(not a dict)"]
        if bad:
            raise TypeError(f"hparams({name}=...): unknown key {bad[0]!r}; known: "
                            f"{', '.join(sorted(INFO_KEYS))}")

    def apply(obj: T) -> T:
        merged = {**getattr(obj, "bamsprod_hparams", {}), **{k: dict(v) for k, v in info.items()}}
        obj.bamsprod_hparams = merged  # type: ignore[attr-defined]
        return obj

    return apply


def dataset_info(*, shape: tuple[int, int, int], classes: int, train: int | None = None,
                 test: int | None = None) -> Callable[[T], T]:
    """A data set plugin's input ``shape`` ``(C, H, W)``, class count and split sizes: a run is
    validated with them before anything loads."""

    def apply(obj: T) -> T:
        obj.bamsprod_dataset = {  # type: ignore[attr-defined]
            "shape": tuple(shape), "classes": classes, "train": train, "test": test}
        return obj

    return apply
