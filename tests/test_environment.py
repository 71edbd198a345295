"""core.environment: what a run records about where it trained."""

from __future__ import annotations

import platform
import subprocess

import torch

from bamsprod.core.environment import cpu_name, environment, source_commit


def test_environment_names_the_software_and_the_cpu() -> None:
    env = environment("cpu")
    assert set(env) == {"torch", "python", "bamsprod", "device_name", "threads"}
    assert env["torch"] == torch.__version__ and env["python"] == platform.python_version()
    assert env["threads"] == torch.get_num_threads()
    assert env["device_name"] == cpu_name() and env["device_name"]
    assert set(env["bamsprod"]) == {"version", "commit"}


def test_cpu_name_reads_cpuinfo_on_x86_and_arm(tmp_path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 5 Model B\n")
    assert cpu_name(x86) == "AMD EPYC 7B13"
    assert cpu_name(arm) == "Raspberry Pi 5 Model B"
    assert cpu_name(tmp_path / "missing") == (platform.processor() or platform.machine()
                                               or "unknown")


def _git(repo, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def test_source_commit_is_the_checkouts_head_and_none_elsewhere(tmp_path) -> None:
    repo = tmp_path / "checkout"
    repo.mkdir()
    assert source_commit(repo) is None  # not a repository
    _git(repo, "init", "-q")
    (repo / "README").write_text("x")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    assert source_commit(repo) is None  # a repository, but no project in it
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    source_commit.cache_clear()
    assert source_commit(repo) == _git(repo, "rev-parse", "HEAD")
