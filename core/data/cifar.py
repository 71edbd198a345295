"""CIFAR-10 from the standard python-pickle batches (``cifar-10-batches-py``).

Each batch file (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) is a pickled dict with
``b"data"``: uint8 ``N x 3072`` (1024 red, 1024 green, 1024 blue values per image, row-major
32x32) and ``b"labels"``: N ints in 0..9. No package ships CIFAR-10, so the checksum is not
fixed; the structure and shapes are validated instead. Unpickling only admits the numpy
globals an array needs, so a hostile file cannot run code; and every array the file declares
must fit in the file's own bytes and be laid out contiguously, so a tiny file cannot declare a
huge (e.g. zero-stride) array that costs memory once it is copied. A sparse file (mostly
holes, which read back as zeros) is refused before it is read: its bytes are not its own.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bamsprod.core.data.errors import DatasetError, install_hint

__all__ = [
    "TRAIN_BATCHES",
    "TEST_BATCH",
    "find_cifar_dir",
    "read_batch",
    "read_cifar10",
    "write_batch",
    "MEAN",
    "STD",
]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only ``_ALLOWED``; arrays are built through :meth:`_ndarray` and
    :meth:`_reconstruct`, which refuse what the file's ``max_bytes`` cannot hold."""

    def __init__(self, file: Any, max_bytes: int) -> None:
        super().__init__(file, encoding="bytes")
        self.max_bytes = max_bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core.") :]
        found = super().find_class(module, name)
        if found is np.ndarray:
            return self._ndarray
        if name == "_reconstruct":
            return self._reconstruct
        return found

    def _check_size(self, shape: Any, dtype: Any) -> None:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = math.prod(int(d) for d in dims) * np.dtype(dtype).itemsize
        if nbytes > self.max_bytes:
            raise pickle.UnpicklingError(
                f"it declares an array of {nbytes} bytes (shape {dims}) in a file of "
                f"{self.max_bytes} bytes"
            )

    def _ndarray(self, shape: Any, dtype: Any = float, buffer: Any = None, offset: int = 0,
                 strides: Any = None, order: Any = None) -> np.ndarray:
        self._check_size(shape, dtype)
        a = np.ndarray(shape, dtype, buffer, offset, strides, order)
        if a.size > 1 and not (a.flags.c_contiguous or a.flags.f_contiguous):
            raise pickle.UnpicklingError(
                f"it declares an array of shape {a.shape} with strides {a.strides}, which do "
                "not match its shape"
            )
        return a

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype != self._ndarray:
            raise pickle.UnpicklingError("only plain numpy arrays are allowed")
        self._check_size(shape, dtype)
        return np.ndarray.__new__(np.ndarray, shape, dtype)


def _bytes_held(path: Path, st: os.stat_result) -> int:
    """The bytes the file really holds: its size, refused (``UnpicklingError``) when most of it
    is holes. A sparse file reads back as zeros it does not store, so its apparent size
    would let a few kilobytes on disk declare (and cost) hundreds of megabytes. (Twice the
    allocated blocks, plus a page, leaves room for a compressing file system.)"""
    on_disk = getattr(st, "st_blocks", None)
    if on_disk is not None and st.st_size > 2 * on_disk * 512 + 65536:
        raise pickle.UnpicklingError(
            f"it is a sparse file: {st.st_size} bytes long, {on_disk * 512} of them on disk")
    return st.st_size


def find_cifar_dir(candidates: list[Path]) -> Path | None:
    """The first of ``candidates`` (or its ``cifar-10-batches-py``) holding ``test_batch``."""
    for d in candidates:
        for sub in (d, d / "cifar-10-batches-py"):
            if (sub / TEST_BATCH).is_file():
                return sub
    return None


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 N x 3 x 32 x 32, labels int64 N)`` of one batch file.

    Raises:
        DatasetError: unreadable, not a batch dict, or wrong shapes/labels; names the file.
    """
    p = Path(path)
    hint = install_hint("cifar10")
    try:
        with p.open("rb") as f:
            obj = _ArrayUnpickler(f, max_bytes=_bytes_held(p, os.fstat(f.fileno()))).load()
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise DatasetError(f"cannot read CIFAR-10 batch {p}: {e}; {hint}") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR-10 batch {p} is not a dict; {hint}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"CIFAR-10 batch {p} lacks b'data' or b'labels'; {hint}")
    # Arrays already (built through the checks above), or plain ints: never a list of arrays,
    # which shared pickle references could make far larger than the file.
    if not isinstance(data, np.ndarray):
        raise DatasetError(f"CIFAR-10 batch {p}: b'data' is not an array; {hint}")
    if not isinstance(labels, np.ndarray):
        if not isinstance(labels, list | tuple) or not all(type(v) is int for v in labels):
            raise DatasetError(f"CIFAR-10 batch {p}: b'labels' must be a list of ints; {hint}")
        labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(
            f"CIFAR-10 batch {p}: b'data' must be uint8 N x 3072, got {data.dtype} "
            f"{data.shape}; {hint}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"CIFAR-10 batch {p}: b'labels' must be {data.shape[0]} integers; {hint}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"CIFAR-10 batch {p}: labels outside 0..9; {hint}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10(directory: str | os.PathLike[str]) -> tuple[np.ndarray, ...]:
    """``(train_x, train_y, test_x, test_y)`` as uint8 / int64 arrays from a batches dir."""
    d = Path(directory)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        if not (d / name).is_file():
            raise DatasetError(f"CIFAR-10 file {d / name} not found; {install_hint('cifar10')}")
    parts = [read_batch(d / name) for name in TRAIN_BATCHES]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = read_batch(d / TEST_BATCH)
    return train_x, train_y, test_x, test_y


def write_batch(path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray) -> None:
    """Write a batch file in the standard format (for tests and small fixtures)."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), 3072)
    obj = {
        b"batch_label": b"bamsprod",
        b"labels": [int(v) for v in labels],
        b"data": images,
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    with Path(path).open("wb") as f:
        pickle.dump(obj, f, protocol=2)
