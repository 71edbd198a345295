"""Build, cache and load BAMSProd's fused CPU kernel (``csrc/bamsprod_fused.cpp``) on first use.

The kernel is a small C++ extension compiled with ``torch.utils.cpp_extension.load`` the first
time an optimizer with ``fused=True`` steps (10-15 s on the project's 2-core VM: it includes
ATen's core headers only, not ``torch/extension.h``), then cached on disk under torch's extension
root (``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``), so later processes only load
it (~0.1 s). It needs a C++ compiler and ``ninja`` (a project dependency; the ``ninja``
package's own binary is used when none is on ``PATH``).

Compiler flags: ``-O3 -fno-math-errno`` (the latter only lets ``sqrt`` vectorise) with OpenMP
(the loops are ``#pragma omp simd``; threads come from ``at::parallel_for``, i.e.
``torch.get_num_threads()``), and the vector instruction set torch itself dispatches to on this
CPU (``torch.backends.cpu.get_cpu_capability()``): AVX-512 or AVX2+FMA on x86-64, the
compiler's default elsewhere. Not ``-march=native``: a home directory shared by different
machines then shares one cache safely, because the extension's name carries a hash of its
flags, its source and torch's version, and a CPU without AVX-512 never loads the AVX-512 build.

The cache is keyed by the torch installation too (its directory joins the hash): two
environments on one machine (a venv and a wheel install, say) each keep their own build instead
of rebuilding one folder in turn.

Builds never wedge (``core.optim._build_lock``): a build first takes an ``flock`` that dies with
its holder, so the baton file torch leaves behind when a build is killed is removed instead of
waited on forever; waiting for another live build is bounded (``BAMSPROD_KERNEL_WAIT_SECONDS``,
300 s), after which the optimizer takes its foreach path with a warning. The compile itself
runs in a child process, which :func:`prepare` kills when its ``should_stop`` says so: the
trainer calls it before the first step, so a cancelled run stops during the build.

If anything fails (no compiler, no ninja, a read-only cache directory, a compile error, the
wait above), :func:`load` warns once and returns ``None`` for the rest of the process, and the
optimizer takes its foreach path: a training run never stops because of the kernel.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from bamsprod.core.optim._build_lock import BuildLock, remove_baton

__all__ = ["SOURCE", "build_flags", "extension_name", "load", "needed_by", "prepare", "status"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "bamsprod_fused.cpp"
_NAMESPACE = "bamsprod_fused"
# How long a process waits for another one's build of the kernel before it gives up on it
# (the foreach path then), and how long a build of its own may take.
WAIT_ENV = "BAMSPROD_KERNEL_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 300.0
BUILD_SECONDS = 900.0
LOCK_FILE = "bamsprod.lock"

_lock = threading.Lock()
_ops: Any = None
_error: str | None = None
_build_seconds: float | None = None


def build_flags() -> list[str]:
    """The compiler flags for this machine (see the module docstring)."""
    flags = ["-O3", "-fno-math-errno", "-fopenmp", "-DNDEBUG"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.startswith("AVX512"):
            flags += ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw"]
            flags += ["-mprefer-vector-width=512"]
        elif capability == "AVX2":
            flags += ["-mavx2", "-mfma"]
    return flags


def extension_name(flags: list[str] | None = None) -> str:
    """``bamsprod_fused_<hash of flags, source, torch version and installation>``."""
    flags = build_flags() if flags is None else flags
    digest = hashlib.sha256()
    digest.update(" ".join(flags).encode())
    digest.update(torch.__version__.encode())
    digest.update(torch_installation().encode())
    digest.update(SOURCE.read_bytes())
    return f"{_NAMESPACE}_{digest.hexdigest()[:12]}"


def torch_installation() -> str:
    """The directory torch is imported from: builds against two installations (their headers
    and libraries) are kept apart, even of one torch version."""
    return str(Path(torch.__file__).resolve().parent)


def wait_seconds() -> float:
    """How long to wait for another process's build: ``$BAMSPROD_KERNEL_WAIT_SECONDS``, else
    300 s."""
    try:
        value = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS))
    except ValueError:
        return DEFAULT_WAIT_SECONDS
    return value if value >= 0 else DEFAULT_WAIT_SECONDS


def _build_directory(name: str) -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    return Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / name


def _ninja_path() -> str | None:
    """A directory to put on ``PATH`` for ninja, when ninja is not on it already."""
    if shutil.which("ninja"):
        return None
    try:
        import ninja  # the PyPI package ships the binary
    except ImportError:
        return None
    return str(getattr(ninja, "BIN_DIR", ""))


def _build() -> Any:
    """Compile (when out of date) and load the kernel; call with the build lock held."""
    from torch.utils.cpp_extension import load as load_extension

    flags = build_flags()
    name = extension_name(flags)
    build_dir = _build_directory(name)
    build_dir.mkdir(parents=True, exist_ok=True)
    ninja_dir = _ninja_path()
    old_path = os.environ.get("PATH", "")
    if ninja_dir:
        os.environ["PATH"] = ninja_dir + os.pathsep + old_path
    try:
        load_extension(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    finally:
        if ninja_dir:
            os.environ["PATH"] = old_path
    _register_fakes()
    return getattr(torch.ops, _NAMESPACE)


def _register_fakes() -> None:
    """Meta kernels, so Dynamo traces the ops inside a compiled step (``torch.compile``)."""

    @torch.library.register_fake(f"{_NAMESPACE}::step")
    def _step(*args: Any, **kwargs: Any) -> None:  # mutates its inputs, returns nothing
        return None

    @torch.library.register_fake(f"{_NAMESPACE}::step.tensor_lr")
    def _step_tensor_lr(*args: Any, **kwargs: Any) -> None:  # the lr as a tensor
        return None

    @torch.library.register_fake(f"{_NAMESPACE}::quantization_errors")
    def _errors(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.empty(len(tensors), dtype=torch.float64)


def _first_error_line(message: str) -> str:
    """The compiler's first ``error:`` line of a failed build, else the message's first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line or "Error:" in line]
    line = (errors or lines or [repr(message)])[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _fail(error: str) -> None:
    global _error
    _error = error
    warnings.warn(
        f"BAMSProd: the fused CPU kernel could not be built ({_error}); fused=True "
        "falls back to the foreach path (same results, slower). A C++ compiler and "
        "ninja are needed to build it.",
        RuntimeWarning,
        stacklevel=4,
    )


def _compile_in_child(lock: BuildLock, should_stop: Callable[[], bool] | None) -> bool:
    """Compile the kernel in a child process that holds ``lock`` with us (so a build outlives
    a killed parent without a second one starting over it); False when ``should_stop`` ended
    it (the child and its compilers are killed). Raises on a failed or overlong build."""
    assert lock.fd is not None
    code = "from bamsprod.core.optim._fused import _build; _build()"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, pass_fds=(lock.fd,),
                                start_new_session=True)
        deadline = time.monotonic() + BUILD_SECONDS
        try:
            while proc.poll() is None:
                if should_stop is not None and should_stop():
                    return False
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the build took longer than {BUILD_SECONDS:g} s")
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the child and its ninja and compilers
                proc.wait()
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace")[-20_000:] or
                               f"the build exited with {proc.returncode}")
    return True


Prepared = Literal["ready", "unavailable", "cancelled"]


def prepare(should_stop: Callable[[], bool] | None = None) -> Prepared:
    """Build (or load the cached build of) the kernel now: ``ready``; ``unavailable`` when it
    cannot be built (warned once; the foreach path steps instead); ``cancelled`` when
    ``should_stop`` returned True while this waited for the build lock or compiled (nothing is
    recorded then: a later call tries again).

    Waiting for another process's build is bounded by :func:`wait_seconds`; a compile runs in
    a child process, so a stop ends it at once.
    """
    global _ops, _build_seconds
    if _ops is not None:
        return "ready"
    if _error is not None:
        return "unavailable"
    with _lock:
        if _ops is not None or _error is not None:
            return "ready" if _ops is not None else "unavailable"
        logger.info("BAMSProd: loading the fused CPU kernel (the first build takes ~1 minute)")
        start = time.perf_counter()
        try:
            build_dir = _build_directory(extension_name())
            build_dir.mkdir(parents=True, exist_ok=True)
            lock = BuildLock(build_dir / LOCK_FILE)
            wait = wait_seconds()
            got = lock.acquire(wait, should_stop)
        except Exception as exc:  # a read-only cache directory, a missing source
            _fail(f"{type(exc).__name__}: {_first_error_line(str(exc))}")
            return "unavailable"
        if got == "stopped":
            return "cancelled"
        if got == "timeout":
            _fail(f"another process held the build lock {lock.path} for {wait:g} s "
                  f"(${WAIT_ENV})")
            return "unavailable"
        try:
            if remove_baton(build_dir):
                logger.warning("removed the lock file of a build that died in %s", build_dir)
            if not (build_dir / f"{build_dir.name}.so").exists():
                if not _compile_in_child(lock, should_stop):
                    logger.info("BAMSProd: the kernel build was stopped")
                    return "cancelled"
            _ops = _build()  # up to date now: this only loads it
        except Exception as exc:  # no compiler, no ninja, read-only cache, compile error, ...
            _fail(f"{type(exc).__name__}: {_first_error_line(str(exc))}")
            return "unavailable"
        finally:
            lock.release()
        _build_seconds = time.perf_counter() - start
        logger.info("BAMSProd: fused CPU kernel ready in %.1f s", _build_seconds)
    return "ready"


def load() -> Any:
    """The kernel's ops (``step``, ``quantization_errors``), or ``None`` where it can't be built.

    The first call compiles it (or loads the cached build, see :func:`prepare`); a failure
    warns once, and every later call returns ``None`` at once.
    """
    if _ops is None and _error is None:
        prepare()
    return _ops


def needed_by(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` (or a part of a combined one) will step through this kernel."""
    from bamsprod.core.optim import _paths
    from bamsprod.core.optim.bamsprod import BAMSProd, _fused_ok

    for opt in getattr(optimizer, "optimizers", [optimizer]):
        if not isinstance(opt, BAMSProd):
            continue
        for group in opt.param_groups:
            params = group["params"]
            if params and _fused_ok(params) and _paths.choose(
                params, foreach=group["foreach"], fused=group["fused"],
                differentiable=group["differentiable"], fused_devices=("cpu",),
            ) == "fused":
                return True
    return False


def settled() -> bool:
    """Whether this process has loaded the kernel or given up on it (``prepare`` is then
    instant)."""
    return _ops is not None or _error is not None


def status() -> dict[str, Any]:
    """Whether the kernel is loaded, the load/build time, the error if it failed, and the flags."""
    flags = build_flags()
    try:
        name: str | None = extension_name(flags)
    except OSError:  # the source is missing (an install without package data)
        name = None
    return {
        "loaded": _ops is not None,
        "error": _error,
        "load_seconds": _build_seconds,
        "flags": flags,
        "name": name,
    }
