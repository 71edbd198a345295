"""Training processes run nice (``worker_nice``), so the API on the same machine comes first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import os; from worker import tasks; tasks._preload_trainer(); tasks._preload_trainer();"
         " print(os.getpriority(os.PRIO_PROCESS, 0))")


def niceness_after_preload(**env: str) -> int:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    full.update(env, BAMSPROD_HOME=env.get("BAMSPROD_HOME", "/nonexistent-bamsprod-home"))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=full, check=True,
                         capture_output=True, text=True, timeout=120)
    return int(out.stdout.split()[-1])


def test_worker_runs_at_the_configured_niceness_once(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness_after_preload(BAMSPROD_HOME=str(tmp_path)) == max(base, 10)  # the default
    # set, not added: preloading twice (solo pool and prefork child hooks) stays at 5
    assert niceness_after_preload(BAMSPROD_HOME=str(tmp_path), BAMSPROD_WORKER_NICE="5") == max(
        base, 5)
    assert niceness_after_preload(BAMSPROD_HOME=str(tmp_path), BAMSPROD_WORKER_NICE="0") == base
