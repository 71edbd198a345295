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

If anything fails (no compiler, no ninja, a read-only cache directory, a compile error),
:func:`load` warns once and returns ``None`` for the rest of the process, and the optimizer takes
its foreach path: a training run never stops because of the kernel.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["SOURCE", "build_flags", "extension_name", "load", "status"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "bamsprod_fused.cpp"
_NAMESPACE = "bamsprod_fused"
# A build lock older than this was left by a build that died (torch would wait on it forever).
_STALE_LOCK_SECONDS = 600.0

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
    """``bamsprod_fused_<hash of flags, source and torch version>``."""
    flags = build_flags() if flags is None else flags
    digest = hashlib.sha256()
    digest.update(" ".join(flags).encode())
    digest.update(torch.__version__.encode())
    digest.update(SOURCE.read_bytes())
    return f"{_NAMESPACE}_{digest.hexdigest()[:12]}"


def _build_directory(name: str) -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    return Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / name


def _remove_stale_lock(build_dir: Path) -> None:
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
            logger.warning("removing a stale build lock %s", lock)
            lock.unlink()
    except FileNotFoundError:
        pass


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
    from torch.utils.cpp_extension import load as load_extension

    flags = build_flags()
    name = extension_name(flags)
    build_dir = _build_directory(name)
    build_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_lock(build_dir)
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


def load() -> Any:
    """The kernel's ops (``step``, ``quantization_errors``), or ``None`` where it can't be built.

    The first call compiles it (or loads the cached build); a failure warns once, and every later
    call returns ``None`` at once.
    """
    global _ops, _error, _build_seconds
    if _ops is not None or _error is not None:
        return _ops
    with _lock:
        if _ops is not None or _error is not None:
            return _ops
        logger.info("BAMSProd: loading the fused CPU kernel (the first build takes ~1 minute)")
        start = time.perf_counter()
        try:
            _ops = _build()
        except Exception as exc:  # no compiler, no ninja, read-only cache, compile error, ...
            _error = f"{type(exc).__name__}: {_first_error_line(str(exc))}"
            warnings.warn(
                f"BAMSProd: the fused CPU kernel could not be built ({_error}); fused=True "
                "falls back to the foreach path (same results, slower). A C++ compiler and "
                "ninja are needed to build it.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        _build_seconds = time.perf_counter() - start
        logger.info("BAMSProd: fused CPU kernel ready in %.1f s", _build_seconds)
    return _ops


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
