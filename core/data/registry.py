"""Data sets by name: ``load_dataset`` and ``status``.

Names are exactly ``core.config.DATASETS``: the built-ins below and any installed plugin's (see
``load_dataset``). Each loader returns in-memory tensors (the trainer
batches by indexing; no DataLoader):

- ``mnist``, ``fashion-mnist``: IDX files under ``<root>/<name>/`` (plain or ``.gz``; Fashion-
  MNIST is also found in ``/usr/share/datasets/fashion-mnist``), SHA-256 verified on load.
- ``cifar10``: the python-pickle batches in ``<root>/cifar10/`` (or ``cifar-10-batches-py``
  inside it, or ``data_dir`` itself), structure validated.
- ``digits``: scikit-learn's bundled 8x8 digits, a fixed stratified 80/20 split.
- ``synthetic``: a generated 10-class problem, identical on every call.

Images are float32 ``N x C x H x W`` scaled to [0, 1] and normalised with the data set's usual
mean and std; labels are int64. Verified checksums and decoded arrays are cached per process, so
a second load costs only the tensor conversion; the arrays' cache is bounded by bytes, least
recently used first out (``set_cache_limit``, 512 MiB by default). Anything missing or corrupt
raises :class:`~core.data.errors.DatasetError` naming the file and ``bamsprod data install NAME``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from bamsprod.core.config import DATASETS
from bamsprod.core.data import builtin, cifar
from bamsprod.core.data.cache import DEFAULT_CACHE_BYTES, ArrayCache
from bamsprod.core.data.checksums import verify_file
from bamsprod.core.data.errors import DatasetError, install_hint
from bamsprod.core.data.idx import read_idx
from bamsprod.core.data.paths import search_dirs
from bamsprod.core.data.sources import IDX_SOURCES, IdxFile
from bamsprod.core.plugins import registry, resolve

__all__ = [
    "Dataset",
    "DatasetStatus",
    "dataset_names",
    "load_dataset",
    "status",
    "find_idx_files",
    "clear_cache",
    "set_cache_limit",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class Dataset:
    """One data set in memory: normalised float32 images ``N x C x H x W``, int64 labels."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    shape: tuple[int, int, int]
    classes: int

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])


class DatasetStatus(NamedTuple):
    """Whether a data set is ready here, where it is, and a one-line explanation."""

    name: str
    installed: bool
    path: Path | None
    message: str


def dataset_names() -> list[str]:
    """The known data set names, exactly ``core.config.DATASETS`` (installed plugins included)."""
    return registry().names("dataset")


_arrays = ArrayCache()


def clear_cache() -> None:
    """Forget decoded arrays (checksums are cached separately in ``core.data.checksums``)."""
    _arrays.clear()


def set_cache_limit(limit_bytes: int | None) -> None:
    """Bound the decoded arrays kept per process to ``limit_bytes`` (None: the default)."""
    _arrays.set_limit(DEFAULT_CACHE_BYTES if limit_bytes is None else limit_bytes)


def _stat_key(paths: list[Path]) -> tuple:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _file_in(d: Path, f: IdxFile) -> Path | None:
    for cand in (d / f.stem, d / f"{f.stem}.gz"):
        if cand.is_file():
            return cand
    return None


def find_idx_files(name: str, data_dir: PathLike | None = None) -> list[Path]:
    """The four IDX files of ``name`` (train images, train labels, test images, test labels)
    from the first search directory that holds all four; not yet verified.

    Raises:
        DatasetError: no directory holds them; names the first missing file.
    """
    source = IDX_SOURCES[name]
    dirs = search_dirs(name, data_dir)
    partial: tuple[Path, IdxFile] | None = None
    for d in dirs:
        found = [_file_in(d, f) for f in source.files]
        if all(found):
            return [p for p in found if p is not None]
        if any(found) and partial is None:
            partial = (d, next(f for f, p in zip(source.files, found, strict=True) if p is None))
    d, missing = partial if partial else (dirs[0], source.train_images)
    searched = ", ".join(str(x) for x in dirs)
    raise DatasetError(
        f"{name}: file {d / missing.stem} (or .gz) not found (searched {searched}); "
        f"{install_hint(name)}"
    )


def _verify_idx(name: str, paths: list[Path]) -> None:
    for path, f in zip(paths, IDX_SOURCES[name].files, strict=True):
        try:
            ok = verify_file(path, f.gz if path.suffix == ".gz" and f.gz else f.raw, f.raw)
        except OSError as e:
            raise DatasetError(f"{name}: cannot read {path}: {e}; {install_hint(name)}") from e
        if not ok:
            raise DatasetError(
                f"{name}: file {path} is corrupt (SHA-256 mismatch); reinstall it with: "
                f"bamsprod data install {name}"
            )


def _idx_arrays(name: str, data_dir: PathLike | None) -> tuple[np.ndarray, ...]:
    paths = find_idx_files(name, data_dir)
    key = (name, _stat_key(paths))
    hit = _arrays.get(key)
    if hit is not None:
        return hit
    _verify_idx(name, paths)
    hint = install_hint(name)
    tr_x, tr_y, te_x, te_y = (read_idx(p, hint) for p in paths)
    c, h, w = DATASETS[name]["shape"]
    for x, y, p in ((tr_x, tr_y, paths[0]), (te_x, te_y, paths[2])):
        if x.ndim != 3 or x.shape[1:] != (h, w) or x.dtype != np.uint8:
            raise DatasetError(f"{name}: {p} holds {x.dtype} {x.shape}, not N x {h} x {w}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DatasetError(f"{name}: labels do not match the {x.shape[0]} images of {p}")
    out = (tr_x, tr_y.astype(np.int64), te_x, te_y.astype(np.int64))
    _arrays.put(key, out)
    return out


def _cifar_arrays(data_dir: PathLike | None) -> tuple[np.ndarray, ...]:
    dirs = search_dirs("cifar10", data_dir)
    found = cifar.find_cifar_dir(dirs)
    if found is None:
        searched = ", ".join(str(x) for x in dirs)
        raise DatasetError(
            f"cifar10: file {dirs[0] / cifar.TEST_BATCH} not found (searched {searched}); "
            f"{install_hint('cifar10')}"
        )
    names = [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]
    paths = [found / n for n in names]
    for p in paths:
        if not p.is_file():
            raise DatasetError(f"cifar10: file {p} not found; {install_hint('cifar10')}")
    key = ("cifar10", _stat_key(paths))
    hit = _arrays.get(key)
    if hit is not None:
        return hit
    out = cifar.read_cifar10(found)
    _arrays.put(key, out)
    return out


def _check_subset(label: str, n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"{label} must be a positive integer or None, got {n!r}")


def _images(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    t = torch.tensor(x, dtype=torch.float32)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    t.div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return t.sub_(m).div_(s)


def _load_builtin(
    name: str,
    data_dir: PathLike | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> Dataset:
    meta = DATASETS[name]
    ntr, nte = train_subset, test_subset
    if name in IDX_SOURCES:
        src = IDX_SOURCES[name]
        tr_x, tr_y, te_x, te_y = _idx_arrays(name, data_dir)
        train_x = _images(tr_x[:ntr], (src.mean,), (src.std,))
        test_x = _images(te_x[:nte], (src.mean,), (src.std,))
    elif name == "cifar10":
        tr_x, tr_y, te_x, te_y = _cifar_arrays(data_dir)
        train_x = _images(tr_x[:ntr], cifar.MEAN, cifar.STD)
        test_x = _images(te_x[:nte], cifar.MEAN, cifar.STD)
    else:
        if name == "digits":
            tr_x, tr_y, te_x, te_y = builtin.digits_arrays()
        else:
            tr_x, tr_y, te_x, te_y = builtin.synthetic_arrays(
                tuple(meta["shape"]), meta["classes"], meta["train"], meta["test"]
            )
        train_x = torch.tensor(tr_x[:ntr])
        test_x = torch.tensor(te_x[:nte])
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=torch.tensor(tr_y[:ntr], dtype=torch.int64),
        test_x=test_x,
        test_y=torch.tensor(te_y[:nte], dtype=torch.int64),
        shape=tuple(meta["shape"]),
        classes=int(meta["classes"]),
    )


# The built-in data sets' loaders, named by core.plugins.builtin (entry points of bamsprod).
load_mnist = partial(_load_builtin, "mnist")
load_fashion_mnist = partial(_load_builtin, "fashion-mnist")
load_digits = partial(_load_builtin, "digits")
load_cifar10 = partial(_load_builtin, "cifar10")
load_synthetic = partial(_load_builtin, "synthetic")

_LOAD_KEYWORDS = ("data_dir", "train_subset", "test_subset")


def _accepted(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``given`` that ``fn`` takes (all of them with ``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return given
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return {k: v for k, v in given.items() if k in names}


def _checked(name: str, source: str, spec: Any, data: Any) -> Dataset:
    """A plugin's data set, checked against what it declared, named ``name``."""
    if not isinstance(data, Dataset):
        raise DatasetError(f"{name} ({source}) returned a {type(data).__name__}, not a "
                           "bamsprod Dataset")
    declared = (tuple(spec.shape), int(spec.classes))
    if (tuple(data.shape), int(data.classes)) != declared:
        raise DatasetError(f"{name} ({source}) declares shape {declared[0]} and {declared[1]} "
                           f"classes but loaded shape {tuple(data.shape)} and {data.classes}")
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        if tuple(x.shape[1:]) != declared[0] or x.shape[0] != y.shape[0] or y.dim() != 1:
            raise DatasetError(f"{name} ({source}): its {split} images {tuple(x.shape)} and "
                               f"labels {tuple(y.shape)} do not fit shape {declared[0]}")
    return data if data.name == name else replace(data, name=name)


def load_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> Dataset:
    """Load data set ``name`` into memory, keeping the first ``train_subset`` / ``test_subset``
    examples when given (all when the subset is larger than the split).

    ``name`` is any data set of the registry (``core.plugins``): a built-in or a plugin's. A
    plugin's loader gets those of ``data_dir``, ``train_subset`` and ``test_subset`` that it
    accepts; what it returns is checked against its declared shape and classes, then cut to
    the subsets.

    Raises:
        ValueError: unknown name (the message lists the known ones) or a bad subset size.
        DatasetError: a file is missing, corrupt or malformed (names the file and the command
            that installs it), or a plugin returned something else than it declared.
    """
    entry = registry().require("dataset", name)  # ValueError: unknown, with the known names
    _check_subset("train_subset", train_subset)
    _check_subset("test_subset", test_subset)
    load = resolve(entry.spec.load)
    given = {"data_dir": data_dir, "train_subset": train_subset, "test_subset": test_subset}
    data = load(**_accepted(load, given))
    if entry.builtin:
        return data
    data = _checked(name, entry.source, entry.spec, data)
    if train_subset is None and test_subset is None:
        return data
    ntr, nte = train_subset, test_subset
    return replace(data, train_x=data.train_x[:ntr], train_y=data.train_y[:ntr],
                   test_x=data.test_x[:nte], test_y=data.test_y[:nte])


def _status_one(name: str, data_dir: PathLike | None, verify: bool) -> DatasetStatus:
    entry = registry().require("dataset", name)
    if not entry.builtin:
        return DatasetStatus(name, True, None, f"plugin from {entry.source}")
    if name == "digits":
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "data"
        return DatasetStatus(name, True, path, "bundled with scikit-learn")
    if name == "synthetic":
        return DatasetStatus(name, True, None, "generated on load")
    try:
        if name == "cifar10":
            dirs = search_dirs(name, data_dir)
            found = cifar.find_cifar_dir(dirs)
            if found is None:
                raise DatasetError(
                    f"no CIFAR-10 batches in {dirs[0]}; users bring CIFAR-10: see "
                    "`bamsprod docs datasets`"
                )
            missing = [n for n in cifar.TRAIN_BATCHES if not (found / n).is_file()]
            if missing:
                raise DatasetError(f"cifar10: file {found / missing[0]} not found")
            return DatasetStatus(name, True, found, "found (user-provided, not checksummed)")
        paths = find_idx_files(name, data_dir)
        if verify:
            _verify_idx(name, paths)
        msg = "checksums verified" if verify else "found (not verified)"
        return DatasetStatus(name, True, paths[0].parent, msg)
    except DatasetError as e:
        return DatasetStatus(name, False, None, str(e))


def status(data_dir: PathLike | None = None, *, verify: bool = True) -> list[DatasetStatus]:
    """One :class:`DatasetStatus` per known data set, in ``core.config.DATASETS`` order
    (for ``bamsprod data list``). ``verify`` checks file checksums (cached per process)."""
    return [_status_one(name, data_dir, verify) for name in DATASETS]
