"""``bamsprod tune``: a tuned sweep ("tune, then seed", ``app.sweeps.tuning``) on a server.

The shared run options give the base (model, data set, epochs: the full stage-2 budget, seed:
the stage-1 seed); ``--opt`` names each optimizer to tune, ``--lr-min``/``--lr-max``/``--n-lr``
its learning-rate search, ``--search KEY=V1,V2`` more hyperparameters to search. The search's
options take their defaults from ``TuneSpec`` (``app.schemas``), as the API and the form do.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import typer
from rich.table import Table

from bamsprod.app.commands.common import TOKEN_OPTION, URL_OPTION, console, request, safe
from bamsprod.app.commands.run_options import OPTION_FOR_FIELD, parse_pairs, with_run_config
from bamsprod.app.schemas import TuneSpec
from bamsprod.core.config import RunConfig

commands = typer.Typer()
# A tuned sweep's fields -> the options that set them: the run options for its base, and the
# search's own (``hparams`` is searched here: --search, not --hp).
TUNE_OPTIONS = {
    **OPTION_FOR_FIELD,
    "optimizers": "--opt", "lr_min": "--lr-min", "lr_max": "--lr-max", "n_lr": "--n-lr",
    "sampler": "--sampler", "stage1_epochs": "--stage1-epochs", "criterion": "--criterion",
    "reduction_factor": "--reduction-factor", "hparams": "--search", "n_seeds": "--seeds",
}


def _tune_option(field: str, help_: str | None = None) -> Any:
    """The option that sets ``TuneSpec.<field>``: its default and description are the model's
    (read off its declaration, so that the CLI, the API and the form share one set of
    defaults); a choice lists its values."""
    info = TuneSpec.model_fields[field]
    text = help_ or info.description or ""
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal \
        else ()
    if choices:
        text = f"{text}; one of: {', '.join(choices)}".lstrip("; ")
    return typer.Option(info.default, help=text or None)


def _search(pairs: list[str]) -> dict[str, list[Any]]:
    """``["kappa=0.5,1,2"]`` -> ``{"kappa": [0.5, 1, 2]}``."""
    out: dict[str, list[Any]] = {}
    for pair in pairs:
        key, _, values = pair.partition("=")
        out[key.strip()] = [parse_pairs([f"{key}={v}"], "--search")[key.strip()]
                            for v in values.split(",")]
    return out


def _values(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@commands.command()
@with_run_config
def tune(
    config: RunConfig,
    opt: list[str] = typer.Option(..., help="an optimizer to tune (repeatable)"),
    lr_min: float = _tune_option("lr_min"),
    lr_max: float = _tune_option("lr_max"),
    n_lr: int = _tune_option("n_lr"),
    sampler: str = _tune_option("sampler"),
    search: list[str] = typer.Option([], help="KEY=V1,V2 hyperparameter values to search too"),
    stage1_epochs: int = _tune_option("stage1_epochs"),
    criterion: str = _tune_option("criterion"),
    reduction_factor: int = _tune_option(
        "reduction_factor", help_="successive halving: keep 1 in N per rung"),
    seeds: int = typer.Option(3, help="stage-2 seeds per optimizer"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only count the runs"),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Tune each --opt's learning rate on validation (stage 1, losers pruned), then run the
    best setting on --seeds seeds for --epochs (stage 2, queued by the workers)."""
    base = config.model_dump(mode="json", exclude={"optimizer", "lr", "hparams",
                                                   "schema_version"})
    body = {
        "name": config.name, "base": base, "strategy": "tune", "n_seeds": seeds,
        "tune": {"optimizers": opt, "lr_min": lr_min, "lr_max": lr_max, "n_lr": n_lr,
                 "sampler": sampler, "hparams": _search(search), "stage1_epochs": stage1_epochs,
                 "criterion": criterion, "reduction_factor": reduction_factor},
    }
    params = {"dry_run": "true"} if dry_run else {}
    out = request(url, "POST", "/api/sweeps", json=body, params=params, token=token,
                  options=TUNE_OPTIONS)
    if dry_run:
        console.print(f"{out['count']} runs (stage 1 and stage 2; limit {out['max_runs']})")
        return
    sweep = out["sweep"]
    detail = request(url, "GET", f"/api/sweeps/{sweep['id']}", token=token)
    table = Table("optimizer", "searched", "stage-1 runs", title=f"sweep {sweep['id']}")
    for t in detail["tuning"]:
        searched = "; ".join(f"{k}: {_values(vs)}" for k, vs in t["searched"].items())
        table.add_row(t["optimizer"], safe(searched), str(len(t["stage1_run_ids"])))
    console.print(table)
    console.print(f"{out['count']} runs in all; stage 2 follows stage 1: "
                  f"{url.rstrip('/')}/api/sweeps/{sweep['id']}")
