"""The fused kernel's build never wedges a process (``core.optim._fused``, ``_build_lock``).

Real builds in empty ``TORCH_EXTENSIONS_DIR``s (10-60 s each on two cores), real processes
killed with SIGKILL:

- a build killed mid-compile (the process and its compilers) leaves torch's baton file: the
  next process removes it under our lock and builds, instead of waiting forever;
- waiting for a live build is bounded: then the foreach path, with a warning;
- a stop (a cancelled run) ends the wait or the compile at once, and records nothing;
- the build cache is keyed by the torch installation;
- through a real worker: cancel acts during the build, and a worker SIGKILLed mid-build and
  started again trains the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import bamsprod.core.optim._fused as fused
from bamsprod.core.optim import BAMSProd
from bamsprod.core.optim._build_lock import BuildLock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty extension root for this test, and the module's state as in a new process."""
    root = tmp_path / "ext"
    root.mkdir()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    monkeypatch.setattr(fused, "_ops", None)
    monkeypatch.setattr(fused, "_error", None)
    return root


def build_dir(root: Path) -> Path:
    """The kernel's build directory under ``root`` (the test's ``TORCH_EXTENSIONS_DIR``)."""
    d = fused._build_directory(fused.extension_name())
    assert d.is_relative_to(root)
    return d


def _holder(lock_path: Path) -> subprocess.Popen:
    """Another process that holds the build lock (a live build elsewhere) until killed."""
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_build_killed_mid_compile_does_not_wedge_the_next_one(fresh: Path) -> None:
    d = build_dir(fresh)
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(fresh)}
    code = "from bamsprod.core.optim import _fused; _fused.load()"
    first = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        _wait_for(d / "lock", 60)  # torch's baton: the compile has started
    finally:
        # The process, its build child and the compilers: nothing is left to remove the baton.
        time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    for child in _build_children(d):
        os.killpg(child, signal.SIGKILL)
    assert (d / "lock").exists(), "the killed build left no baton: the test proves nothing"
    t0 = time.monotonic()
    second = subprocess.run([sys.executable, "-c", code + "; print(_fused.status()['loaded'])"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().endswith("True"), second.stderr[-3000:]
    assert not (d / "lock").exists()
    print(f"\nbuild after a killed build: {time.monotonic() - t0:.1f}s")


def _build_children(d: Path) -> list[int]:
    """Process groups of build children (``python -c ... _build()``) still running for ``d``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"_fused import _build" in b" ".join(cmd) and str(d.parents[1]).encode() in environ:
            out.append(os.getpgid(int(proc.name)))
    return out


def test_waiting_for_a_live_build_is_bounded_then_foreach(
        fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = build_dir(fresh)
    d.mkdir(parents=True)
    holder = _holder(d / fused.LOCK_FILE)
    monkeypatch.setenv(fused.WAIT_ENV, "1")
    try:
        t0 = time.monotonic()
        p = torch.randn(4, 3, requires_grad=True)
        opt = BAMSProd([p], fused=True)
        p.grad = torch.ones(4, 3)
        with pytest.warns(RuntimeWarning, match="held the build lock"):
            opt.step()
        elapsed = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert elapsed < 5, elapsed
    assert opt.paths() == "foreach"
    assert "BAMSPROD_KERNEL_WAIT_SECONDS" in fused.status()["error"]


def test_a_stop_ends_the_wait_for_the_lock(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = build_dir(fresh)
    d.mkdir(parents=True)
    holder = _holder(d / fused.LOCK_FILE)
    try:
        t0 = time.monotonic()
        outcome = fused.prepare(should_stop=lambda: time.monotonic() - t0 > 0.5)
        elapsed = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert outcome == "cancelled" and elapsed < 2, (outcome, elapsed)
    assert fused.status()["error"] is None  # nothing recorded: the next run tries again


def test_a_stop_kills_the_compile_and_frees_the_lock(fresh: Path) -> None:
    d = build_dir(fresh)
    t0 = time.monotonic()
    started: list[float] = []

    def stop() -> bool:
        if not started and (d / "lock").exists():  # the compile child took torch's baton
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 0.5

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stop is no failure: no warning
        outcome = fused.prepare(should_stop=stop)
    assert outcome == "cancelled" and started, outcome
    assert time.monotonic() - started[0] < 3
    assert not (d / f"{d.name}.so").exists()
    assert _build_children(d) == []
    lock = BuildLock(d / fused.LOCK_FILE)
    assert lock.acquire(0) == "acquired"  # free again
    lock.release()
    assert fused.status()["error"] is None and not fused.status()["loaded"]
    print(f"\nstopped {time.monotonic() - t0:.1f}s after the call")


def test_the_build_cache_is_keyed_by_the_torch_installation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    here = fused.extension_name()
    assert fused.torch_installation() == str(Path(torch.__file__).resolve().parent)
    monkeypatch.setattr(fused, "torch_installation", lambda: "/opt/other-env/torch")
    other = fused.extension_name()
    assert other != here and other.startswith("bamsprod_fused_")
    assert fused._build_directory(other) != fused._build_directory(here)


# --------------------------------------------------------------------- through a worker


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_worker_cancel_during_build_and_sigkill_mid_build(service_settings, start_worker,
                                                          tmp_path: Path) -> None:
    """An empty extension root: run 1 is cancelled while the kernel builds (it ends within
    seconds); run 2's worker is SIGKILLed mid-build, started again under its name, and trains
    it (before: it waited on torch's lock forever, beating its heartbeat)."""
    from service_fixtures import wait_for
    from test_reliability import run_row, submit, tiny

    from bamsprod.app import store
    from bamsprod.app.store.engine import session_scope

    s = service_settings
    root = tmp_path / "ext"
    root.mkdir()
    env = {"TORCH_EXTENSIONS_DIR": str(root)}
    w = start_worker(s, "w1", env=env)
    baton = root / f"py{sys.version_info.major}{sys.version_info.minor}_cpu"

    def building() -> bool:
        return any(baton.glob("*/lock"))

    first = submit(s, tiny(epochs=1))
    wait_for(building, 90, "the kernel build to start", interval=0.05)
    with session_scope(s.database_url) as session:
        store.request_cancel(session, first)
    t0 = time.monotonic()
    wait_for(lambda: run_row(s, first).state == "cancelled", 30, "the cancel", interval=0.05)
    cancelled_in = time.monotonic() - t0
    assert cancelled_in < 5, cancelled_in

    second = submit(s, tiny(epochs=2))
    wait_for(building, 60, "the build to start again", interval=0.05)
    w.stop(signal.SIGKILL)
    again = start_worker(s, node=w.name, env=env)
    wait_for(lambda: run_row(s, second).state in ("succeeded", "failed"), 240,
             "run 2 to end")
    run = run_row(s, second)
    assert run.state == "succeeded", (run.error, again.output()[-3000:])
    assert "fused" in (run.device or ""), run.device
    print(f"\ncancel during the build took {cancelled_in:.1f}s")
