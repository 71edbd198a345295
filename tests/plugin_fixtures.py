"""Plugins installed the way an operator installs them, for the plugin tests.

``pip install --no-deps --no-build-isolation --no-index --target DIR PROJECT`` of a copy of the
project (the checkout stays clean), so each plugin is a real distribution with its own
dist-info and entry points. The shared virtualenv stays clean: a process sees a plugin only
with its target directory on ``PYTHONPATH`` (``env_with``), or, in-process, on ``sys.path``
(``on_path``).

- ``install_lion(dest)``: the example package ``examples/bamsprod-lion`` (``version`` may
  rewrite its version, for a worker that has another one).
- ``install_testplug(dest)``: a plugin the tests write themselves, dist ``bamsprod-testplug``:
  an optimizer ``signmom`` (a plain torch Optimizer: a ``betas`` tuple, an int, a bool and
  torch's ``foreach`` flag), a data set ``blobs`` and three broken entries (``broken``: its
  module fails to import; ``notanoptimizer``: a function; ``adam``: a name taken by bamsprod).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service_fixtures import ROOT

LION_SRC = ROOT / "examples" / "bamsprod-lion"
TESTPLUG_VERSION = "0.3.0"

TESTPLUG_PYPROJECT = f"""
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "bamsprod-testplug"
version = "{TESTPLUG_VERSION}"
requires-python = ">=3.11"

[project.entry-points."bamsprod.optimizers"]
signmom = "bamsprod_testplug.optim:SignMomentum"
notanoptimizer = "bamsprod_testplug.optim:not_an_optimizer"
adam = "bamsprod_testplug.optim:SignMomentum"
broken = "bamsprod_testplug.broken:Thing"

[project.entry-points."bamsprod.datasets"]
blobs = "bamsprod_testplug.data:blobs"

[tool.setuptools]
packages = ["bamsprod_testplug"]
"""

TESTPLUG_OPTIM = '''
"""Sign of a momentum average, with a warm-up at a tenth of the rate (a test plugin)."""

import bamsprod
import torch


@bamsprod.hparams(lr={"lo": 1e-5, "hi": 1.0, "log": True, "help": "step size"},
                  warmup={"lo": 0, "hi": 100, "help": "steps at lr / 10"})
class SignMomentum(torch.optim.Optimizer):
    """Sign momentum: p -= lr * sign(m), m = beta1 * m + (1 - beta1) * g."""

    def __init__(self, params, lr=0.02, betas=(0.5, 0.9), warmup: int = 2,
                 nesterov: bool = False, foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, warmup=warmup, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["t"] = 0
                state["t"] += 1
                m = state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                d = m.mul(beta2).add(p.grad, alpha=1 - beta2) if group["nesterov"] else m
                lr = group["lr"] / 10 if state["t"] <= group["warmup"] else group["lr"]
                p.add_(d.sign(), alpha=-lr)


def not_an_optimizer(params, lr=0.1):
    return None
'''

TESTPLUG_DATA = '''
"""A generated 3-class problem on 4x4 images (a test plugin)."""

import bamsprod
import torch


@bamsprod.dataset_info(shape=(1, 4, 4), classes=3, train=120, test=60)
def blobs(data_dir=None):
    """Three Gaussian blobs in 16 dimensions."""
    g = torch.Generator().manual_seed(7)
    centres = torch.randn(3, 16, generator=g) * 2

    def draw(n):
        y = torch.arange(n) % 3
        x = centres[y] + torch.randn(n, 16, generator=g)
        return x.view(n, 1, 4, 4), y

    train_x, train_y = draw(120)
    test_x, test_y = draw(60)
    return bamsprod.Dataset("blobs", train_x, train_y, test_x, test_y, (1, 4, 4), 3)
'''

TESTPLUG_BROKEN = '''
raise ImportError("bamsprod_testplug.broken needs the package 'notinstalled'")
'''


def _pip_target(project: Path, target: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(project)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return target


def install_lion(dest: Path, version: str | None = None) -> Path:
    """The example package installed into ``dest/site`` (at ``version``, when given)."""
    copy = dest / "src"
    shutil.copytree(LION_SRC, copy, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    if version is not None:
        pyproject = copy / "pyproject.toml"
        text = pyproject.read_text()
        assert 'version = "0.1.0"' in text
        pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{version}"'))
    return _pip_target(copy, dest / "site")


def install_testplug(dest: Path) -> Path:
    """The tests' own plugin package installed into ``dest/site``."""
    src = dest / "src"
    pkg = src / "bamsprod_testplug"
    pkg.mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(TESTPLUG_PYPROJECT))
    (pkg / "__init__.py").write_text('"""bamsprod-testplug"""\n')
    (pkg / "optim.py").write_text(TESTPLUG_OPTIM)
    (pkg / "data.py").write_text(TESTPLUG_DATA)
    (pkg / "broken.py").write_text(TESTPLUG_BROKEN)
    return _pip_target(src, dest / "site")


def env_with(*targets: Path, **extra: str) -> dict[str, str]:
    """This environment (no BAMSPROD_* settings) with ``targets`` on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env["PYTHONPATH"] = os.pathsep.join(str(t) for t in targets)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


@contextmanager
def on_path(*targets: Path) -> Iterator[None]:
    """``targets`` on ``sys.path`` and the registry re-read with them; both undone after."""
    from bamsprod.core.plugins import reload

    before = set(sys.modules)
    sys.path[:0] = [str(t) for t in targets]
    importlib.invalidate_caches()
    try:
        reload()
        yield
    finally:
        for t in targets:
            sys.path.remove(str(t))
        for name in set(sys.modules) - before:
            if name.startswith(("bamsprod_lion", "bamsprod_testplug")):
                del sys.modules[name]
        importlib.invalidate_caches()
        reload()
