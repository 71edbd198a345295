"""Reading IDX files (the MNIST format), plain or gzip-compressed.

Layout: a 4-byte magic ``0x00 0x00 TYPE NDIM``, then ``NDIM`` big-endian uint32 sizes, then the
data in C order. ``TYPE`` 0x08 is uint8 (the only type MNIST and Fashion-MNIST use); the other
IDX types (int8, int16, int32, float32, float64) are read too.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from bamsprod.core.data.errors import DatasetError

__all__ = ["read_idx", "write_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


def read_idx(path: str | os.PathLike[str], hint: str = "") -> np.ndarray:
    """The array stored in IDX file ``path`` (``.gz`` is decompressed).

    Raises:
        DatasetError: bad magic, truncated or oversized data, or an unreadable file; the
            message names the file and ends with ``hint`` (how to reinstall).
    """
    p = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                blob = f.read()
        else:
            blob = p.read_bytes()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read IDX file {p}: {e}{suffix}") from e
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in _DTYPES or blob[3] == 0:
        raise DatasetError(f"{p} is not an IDX file (bad magic {blob[:4].hex()!r}){suffix}")
    dtype, ndim = _DTYPES[blob[2]], blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DatasetError(f"IDX file {p} is truncated in its header{suffix}")
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(blob) - header != expected:
        raise DatasetError(
            f"IDX file {p} holds {len(blob) - header} data bytes, its header {dims} says "
            f"{expected}{suffix}"
        )
    arr = np.frombuffer(blob, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    arr = np.ascontiguousarray(array)
    code = _CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body = arr.astype(_DTYPES[code], copy=False).tobytes()
    p = Path(path)
    if p.suffix == ".gz":
        with gzip.open(p, "wb") as f:
            f.write(head + body)
    else:
        p.write_bytes(head + body)
