"""Where a run trains: the software and the hardware its seconds were measured on.

    environment("cpu") == {
        "torch": "2.13.0+cpu", "python": "3.11.2",
        "bamsprod": {"version": "0.1.0", "commit": "b26f480c..."},   # commit: None if unknown
        "device_name": "AMD EPYC 7B13",                                # or the GPU card's name
        "threads": 1,                                                  # torch.get_num_threads()
    }

The worker stores it on the run when it starts training it, so seconds are only compared
between runs that share one. The commit is the source checkout's HEAD when bamsprod runs from
one (an editable install); an installed wheel has none.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import bamsprod

__all__ = ["cpu_name", "environment", "source_commit"]


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """This process's environment for training on ``device`` (see the module docstring)."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bamsprod": {"version": bamsprod.__version__, "commit": source_commit()},
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }


def device_name(device: str | torch.device) -> str:
    """The GPU card's name for a CUDA device, else the CPU's model."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


@functools.cache
def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model: ``model name`` in /proc/cpuinfo (x86), or ``Model``/``Hardware`` (Arm);
    elsewhere what ``platform`` knows."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in lines:
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def source_commit(root: Path | None = None) -> str | None:
    """The git commit of the source checkout bamsprod runs from, or None (installed from a
    wheel, no git, or not a checkout). Read once per process: the code it ran is that one."""
    root = root or Path(bamsprod.__file__).resolve().parent.parent
    # Only the checkout itself: an installed package inside some other repository (a venv in
    # a checkout) must not report that repository's commit.
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if len(commit) in (40, 64) else None
