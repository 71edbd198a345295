"""The project's documents stand on their own: no pointer to files outside the repository, links
that resolve, and an algorithm page whose defaults are the optimizer's."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
from pathlib import Path

from service_fixtures import ROOT

# The team's working folder beside the repository; .ci/ and scripts/ may use it, nothing shipped.
# Written in parts, so this guard does not itself name what it guards against.
OUTSIDE = ("shared" + "/spec", ".." + "/shared")
MAY_MENTION_OUTSIDE = (".ci/", "scripts/")
# Execution controls, not part of the algorithm.
NOT_HYPERPARAMETERS = {"self", "params", "foreach", "capturable", "differentiable", "fused"}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def test_nothing_shipped_cites_the_team_folder() -> None:
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    offenders = []
    for name in tracked_files():
        path = ROOT / name
        if name == this or name.startswith(MAY_MENTION_OUTSIDE) or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert not offenders, "cite docs/algorithm.md instead:\n" + "\n".join(offenders)


def test_relative_links_in_docs_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_optimizer_docs_cite_the_algorithm_page() -> None:
    for name in ("optimizers.md", "reproduction.md"):
        assert "algorithm.md" in (ROOT / "docs" / name).read_text(), name


def algorithm_defaults() -> dict[str, object]:
    """The ``| name | default | ... |`` rows of the Hyperparameters table in docs/algorithm.md."""
    text = (ROOT / "docs" / "algorithm.md").read_text()
    section = text.split("## Hyperparameters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: ast.literal_eval(default.strip()) for name, default in rows}


def test_algorithm_page_states_the_optimizers_defaults() -> None:
    from bamsprod.core.optim import BAMSProd

    signature = inspect.signature(BAMSProd.__init__).parameters
    code = {name: p.default for name, p in signature.items() if name not in NOT_HYPERPARAMETERS}
    documented = algorithm_defaults()
    assert documented == code


def test_algorithm_page_states_every_step() -> None:
    text = (ROOT / "docs" / "algorithm.md").read_text()
    for line in ("a_c = mean(|w_c|)", "sign(0) = +1", "g ← g + weight_decay·p",
                 "m ← β1·m + (1 - β1)·g", "v ← β2·v + (1 - β2)·g²", "v_max ← max(v_max, v)",
                 "v̂     ← v_max / (1 - β2^t)", "ζ    = mean(v̂) · (1 + kappa·e)",
                 "c_l  = ζ · (1 - 1/(gamma·t + 1))", "c_u  = ζ · (1 + 1/(gamma·t))",
                 "p ← p - (lr / (1 - β1^t)) · m / (sqrt(v̂) + eps)", "arXiv 2009.13799"):
        assert line in text, line
