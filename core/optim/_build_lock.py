"""A build lock that dies with its holder, and a bounded wait for it.

torch's ``cpp_extension.load`` guards a build with a "baton": a file created with ``O_EXCL``
and removed when the build ends. A process killed mid-build leaves the file behind, and every
later ``load`` of that extension waits on it forever (a worker that never trains again, while
its heartbeat says it is alive). Our builds take this lock first: an ``fcntl.flock`` on a file
beside the build, which the kernel releases when the last process holding it exits, however
it exits. While we hold it, a baton file can only be a dead build's, so it is removed.

The lock can be handed to a child process (``fd`` in ``pass_fds``): a build compiled in a
child keeps the lock until the child ends, even when its parent is killed first.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["BuildLock", "remove_baton"]

Outcome = Literal["acquired", "timeout", "stopped"]


class BuildLock:
    """An exclusive ``flock`` on ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, timeout: float, should_stop: Callable[[], bool] | None = None,
                poll: float = 0.1) -> Outcome:
        """Wait up to ``timeout`` seconds for the lock, asking ``should_stop`` every ``poll``
        seconds: ``acquired``, ``timeout`` or ``stopped`` (the lock is not held then)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                self.fd = fd
                return "acquired"
            if should_stop is not None and should_stop():
                os.close(fd)
                return "stopped"
            if time.monotonic() >= deadline:
                os.close(fd)
                return "timeout"
            time.sleep(poll)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def remove_baton(build_dir: Path) -> bool:
    """Remove torch's baton file (``<build_dir>/lock``), left by a build that died; call only
    while holding the :class:`BuildLock` of ``build_dir``. True when there was one."""
    try:
        (build_dir / "lock").unlink()
    except FileNotFoundError:
        return False
    return True
