"""The wheel carries the whole product: code, migrations, and the dashboard's templates and assets.

The wheel is built from a copy of the checkout's files (tracked, or untracked and not ignored),
so the build leaves nothing in the working tree. The dashboard is then served from a
``pip install --no-deps --target`` of that wheel, run with ``python -S`` and the scratch directory
first on the path, from a working directory outside the repository: only the installed copy of
``bamsprod`` can answer, and no other top-level name may exist. An editable install of the same
copy must keep reading ``frontend/``, and a wheel built through the sdist (as ``python -m build``
does) must hold the dashboard too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_fixtures import free_port
from service_fixtures import ROOT, stop_process_group, wait_for

PACKAGE_ROOTS = ("app", "core", "worker")
# Where each top-level source folder lives inside the one import package.
MAPPED = {"bamsprod": "bamsprod", "app": "bamsprod.app", "core": "bamsprod.core",
          "worker": "bamsprod.worker", "frontend": "bamsprod.app.frontend"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def frontend_files() -> set[str]:
    """Every file of the dashboard, as the wheel must name it."""
    return {"bamsprod/app/" + p.relative_to(ROOT).as_posix()
            for p in (ROOT / "frontend").rglob("*") if p.is_file()}


def in_wheel(path: str) -> str:
    """A source file's name in the wheel (``core/x.py`` is ``bamsprod/core/x.py``)."""
    top, _, rest = path.partition("/")
    return "/".join([*MAPPED[top].split("."), rest])


def package_name(folder: Path) -> str:
    """The package a source folder ships as (``frontend/x`` is ``bamsprod.app.frontend.x``)."""
    top, *rest = folder.relative_to(ROOT).parts
    return ".".join((MAPPED[top], *rest))


def test_every_source_folder_is_a_listed_package() -> None:
    """A folder added under app/, core/, worker/ or frontend/ must be in pyproject's packages."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    folders = {
        package_name(d)
        for top in MAPPED
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and d.name != "__pycache__"
        and any(f.is_file() and f.suffix != ".pyc" for f in d.iterdir())
    }
    missing = sorted(folders - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    mapped = pyproject()["tool"]["setuptools"]["package-dir"]
    for name in listed:
        prefix = max((k for k in mapped if name == k or name.startswith(k + ".")), key=len,
                     default=None)
        folder = Path(*name.split(".")) if prefix is None else Path(
            mapped[prefix], *name.removeprefix(prefix).split(".")[1:])
        assert (ROOT / folder).is_dir(), f"package {name} has no folder {folder}"


def test_license_is_an_spdx_string() -> None:
    assert pyproject()["project"]["license"] == "MIT"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's files: tracked, or untracked and not ignored."""
    src = tmp_path_factory.mktemp("source") / "bamsprod"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    return src


@pytest.fixture(scope="module")
def wheel_build(source: Path) -> tuple[Path, str]:
    """(the built wheel, the build's output)."""
    out = source.parent / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(out.glob("bamsprod-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], build.stdout + build.stderr


def pip_target(wheel: Path, target: Path) -> Path:
    """``pip install --no-deps --target``: a non-editable install into a scratch directory."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def test_build_has_no_packaging_warnings(wheel_build: tuple[Path, str]) -> None:
    _, output = wheel_build
    assert "project.license" not in output, output
    assert "absent from the `packages` configuration" not in output, output


def test_wheel_holds_the_dashboard_and_migrations(wheel_build: tuple[Path, str]) -> None:
    wheel, _ = wheel_build
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    frontend = frontend_files()
    assert {"bamsprod/app/frontend/templates/new_run.html",
            "bamsprod/app/frontend/static/new_run.js",
            "bamsprod/app/frontend/static/app.css"} <= frontend
    assert sorted(frontend - names) == []
    for path in (ROOT / "app" / "migrations").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert in_wheel(path.relative_to(ROOT).as_posix()) in names
    assert "bamsprod/app/alembic.ini" in names
    assert "bamsprod/core/optim/csrc/bamsprod_fused.cpp" in names
    docs = {f"bamsprod/docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert "bamsprod/docs/datasets.md" in docs and docs <= names  # for pip users (bamsprod docs)
    studies = {f"bamsprod/app/studies/files/{p.name}"
               for p in (ROOT / "app" / "studies" / "files").glob("*.toml")}
    assert {"bamsprod/app/studies/files/paper.toml"} < studies <= names  # the shipped studies
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "License-Expression: MIT" in metadata


@pytest.mark.slow
def test_sdist_carries_the_frontend_to_its_wheel(source: Path, tmp_path: Path) -> None:
    """``python -m build`` goes through the sdist: the wheel built from it holds the dashboard."""
    built = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
         "print(b.build_sdist(sys.argv[1]))", str(tmp_path / "sdist")],
        cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    with tarfile.open(tmp_path / "sdist" / built.stdout.split()[-1]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(unpacked)],
        capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    (whl,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
    assert sorted(frontend_files() - names) == []


@pytest.fixture(scope="module")
def installed(wheel_build: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed, non-editable, into a scratch directory."""
    return pip_target(wheel_build[0], tmp_path_factory.mktemp("installed") / "site")


def installed_env(target: Path, home: Path) -> dict[str, str]:
    """``python -S`` reads no .pth file, so an editable install of the checkout stays inactive:
    the scratch directory comes first, then the interpreter's site-packages for dependencies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAMSPROD_", "PYTHON"))}
    site = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env.update(PYTHONPATH=os.pathsep.join([str(target), *site]), BAMSPROD_HOME=str(home),
               OMP_NUM_THREADS="1")
    return env


PROBE = ("import bamsprod.app.web.main, bamsprod.app.web.pages, bamsprod.app.store.engine; "
         "from bamsprod import app; "
         "print(app.__file__); print(app.web.pages.FRONTEND); "
         "print(app.store.engine.MIGRATIONS_DIR)")


def probe(target: Path, cwd: Path, prelude: str = "") -> list[Path]:
    """Where ``bamsprod.app``, its frontend and its migrations come from, in a ``python -S``
    child."""
    done = subprocess.run([sys.executable, "-S", "-c", prelude + PROBE], cwd=cwd, timeout=120,
                          env=installed_env(target, cwd / "home"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [Path(line) for line in done.stdout.split()]


@pytest.mark.slow
def test_installed_app_reads_its_own_frontend(installed: Path, tmp_path: Path) -> None:
    app = installed / "bamsprod" / "app"
    assert probe(installed, tmp_path) == [app / "__init__.py", app / "frontend",
                                          app / "migrations"]


def test_wheel_has_one_top_level_package(wheel_build: tuple[Path, str]) -> None:
    """Only ``bamsprod`` (and its dist-info) lands in site-packages: no ``app``, ``core`` or
    ``worker`` to clobber another distribution's packages, or be clobbered by them."""
    wheel, _ = wheel_build
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"bamsprod"}, tops


def test_torch_is_a_range_not_a_pin(wheel_build: tuple[Path, str]) -> None:
    """The wheel admits the torch builds it is tested on (2.11 on the GPU image, 2.13 here,
    2.14), so ``pip install`` keeps a CUDA build already installed; only the setup path pins."""
    from packaging.requirements import Requirement

    wheel, _ = wheel_build
    with zipfile.ZipFile(wheel) as z:
        metadata = next(z.read(n).decode() for n in z.namelist()
                        if n.endswith(".dist-info/METADATA"))
    (torch,) = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
                if line.startswith("Requires-Dist: torch")]
    for version in ("2.11.0", "2.11.0+cu126", "2.13.0", "2.13.0+cpu", "2.14.1"):
        assert torch.specifier.contains(version, prereleases=False), (torch, version)
    assert not torch.specifier.contains("2.10.0")
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()


@pytest.mark.slow
def test_installed_wheel_has_no_top_level_app(installed: Path, tmp_path: Path) -> None:
    """Installed, ``import app`` (or ``core``, ``worker``) fails, and every module of the
    package imports: none of them reaches for a top-level name that only a checkout has."""
    code = ("import importlib, pkgutil, sys, bamsprod\n"
            "for name in ('app', 'core', 'worker'):\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError:\n"
            "        continue\n"
            "    sys.exit(f'top-level {name} importable')\n"
            "for m in pkgutil.walk_packages(bamsprod.__path__, 'bamsprod.'):\n"
            "    if '.migrations' not in m.name and m.name != 'bamsprod.__main__':\n"
            "        importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('app', 'core', 'worker'))\n"
            "sys.exit(f'imported {bad}' if bad else 0)\n")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, timeout=300,
                          env=installed_env(installed, tmp_path / "home"), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_editable_install_reads_the_top_level_frontend(
        source: Path, tmp_path: Path) -> None:
    """The Dockerfile and scripts/setup.sh install editable: that keeps reading ``frontend/``."""
    built = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
         "print(b.build_editable(sys.argv[1]))", str(tmp_path / "dist")],
        cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    target = pip_target(tmp_path / "dist" / built.stdout.split()[-1], tmp_path / "site")
    # The editable finder is installed by a .pth file, which only a site directory reads.
    where = probe(target, tmp_path, f"import site; site.addsitedir({str(target)!r}); ")
    assert where == [source / "app" / "__init__.py", source / "frontend",
                     source / "app" / "migrations"]


@pytest.fixture(scope="module")
def installed_server(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``uvicorn bamsprod.app.web.main:create_app`` from the installed copy, on a fresh home."""
    tmp_path = tmp_path_factory.mktemp("served")
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-m", "uvicorn", "bamsprod.app.web.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=installed_env(installed, tmp_path / "home"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"uvicorn exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, "the installed app to answer")
        yield url
    finally:
        stop_process_group(proc)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "script"), [("/", "runs.js"), ("/runs/new", "new_run.js")])
def test_installed_dashboard_serves_pages_and_their_js(
        installed_server: str, page: str, script: str) -> None:
    html = httpx.get(installed_server + page, timeout=30)
    assert html.status_code == 200, html.text
    srcs = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html.text)
    src = next((s for s in srcs if s.startswith(f"/static/{script}")), None)
    assert src is not None, srcs
    js = httpx.get(installed_server + src, timeout=30)
    assert js.status_code == 200
    assert js.content == (ROOT / "frontend" / "static" / script).read_bytes()
    css = re.search(r'<link[^>]*href="(/static/app\.css[^"]*)"', html.text)
    assert css is not None
    assert httpx.get(installed_server + css.group(1), timeout=30).status_code == 200


@pytest.mark.slow
def test_installed_server_serves_the_guide_and_offline_api_docs(installed_server: str) -> None:
    """A pip user has the documentation (``/guide``, from the wheel's ``bamsprod/docs``) and the
    API reference with its scripts from an installed package, no CDN."""
    guide = httpx.get(installed_server + "/guide/datasets", timeout=30)
    assert guide.status_code == 200 and "bamsprod data install mnist" in guide.text
    docs = httpx.get(installed_server + "/docs", timeout=30)
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    for src in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs.text):
        assert httpx.get(installed_server + src, timeout=30).status_code == 200, src
