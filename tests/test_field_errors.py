"""app.field_errors and app.sweeps.grid: one form for a field error, from pydantic or a 422
answer, and the sweep service raising it (no web in between)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bamsprod.app import sweeps
from bamsprod.app.field_errors import FieldError, InvalidField, field_errors, first_error
from bamsprod.app.schemas import SweepCreate
from bamsprod.core.config import RunConfig


def error_of(**fields: object) -> FieldError:
    with pytest.raises(ValidationError) as info:
        RunConfig(**fields)  # type: ignore[arg-type]
    return first_error(info.value)


@pytest.mark.parametrize(("fields", "loc", "field"), [
    ({"lr": -1}, ("lr",), "lr"),
    ({"hparams": {"kappa": -1}}, ("hparams",), "hparams.kappa"),
    ({"hparams": {"bogus": 1}}, ("hparams",), "hparams.bogus"),
    ({"model_args": {"width": "x"}}, ("model_args", "width", "float"), "model_args.width"),
    ({"bogus": 1}, ("bogus",), "bogus"),
])
def test_a_pydantic_error_keeps_its_loc_and_names_its_field(fields, loc, field) -> None:
    err = error_of(**fields)
    assert err.loc == loc and err.field == field


def test_a_422_detail_reads_back_the_same_form() -> None:
    sent = error_of(model_args={"width": "x"}).under("body", "base")
    detail = [sent.detail()]
    assert detail[0]["loc"] == ["body", "base", "model_args", "width", "float"]
    back = first_error(detail)
    assert back.loc == sent.loc and back.field == "base.model_args.width"
    assert back.msg == sent.msg and back.type == sent.type
    assert first_error("not a list").field == "" and field_errors([]) == []


def test_the_sweep_service_blames_the_grid_key_or_the_base() -> None:
    body = SweepCreate(grid={"hparams.kappa": [1, 1000]}, base={"optimizer": "bamsprod"})
    with pytest.raises(InvalidField) as info:
        sweeps.expand(body)
    assert info.value.error.loc == ("grid", "hparams.kappa")
    assert "(at hparams.kappa=1000)" in info.value.error.msg
    with pytest.raises(InvalidField) as info:
        sweeps.expand(SweepCreate(base={"epochs": 0}, grid={"lr": [0.1]}))
    assert info.value.error.loc == ("base", "epochs")
    with pytest.raises(InvalidField) as info:
        sweeps.count(SweepCreate(seeds=[1], n_seeds=2))
    assert info.value.error.loc == ("n_seeds",)


def test_the_sweep_service_counts_and_names_its_runs() -> None:
    body = SweepCreate(name="s", base={"seed": 4}, grid={"lr": [0.1, 0.2], "epochs": [1, 2, 3]},
                       n_seeds=2)
    assert sweeps.count(body) == 12 and sweeps.seeds(body) == [4, 5]
    configs = sweeps.expand(body)
    assert len(configs) == 12 and configs[0].name == "s lr=0.1 epochs=1 seed=4"
    with pytest.raises(InvalidField) as info:
        sweeps.check_limits(body, configs, max_epochs=2, max_param_bytes=10**9)
    assert info.value.error.loc == ("grid", "epochs") and info.value.error.input == 3


def test_the_cli_names_the_option_that_sets_the_field() -> None:
    from bamsprod.app.commands.common import option_for
    from bamsprod.app.commands.run_options import OPTION_FOR_FIELD
    from bamsprod.app.commands.tune_cmds import TUNE_OPTIONS

    assert option_for(error_of(hparams={"kappa": -1}), OPTION_FOR_FIELD) == "--hp"
    assert option_for(error_of(model_args={"width": "x"}), OPTION_FOR_FIELD) == "--model-arg"
    assert option_for(error_of(batch_size=1), OPTION_FOR_FIELD) == "--batch-size"
    tune = first_error([{"loc": ["body", "tune", "lr_max"], "msg": "m"}])
    assert option_for(tune, TUNE_OPTIONS) == "--lr-max"
    searched = first_error([{"loc": ["body", "tune", "hparams", "kappa"], "msg": "m"}])
    assert option_for(searched, TUNE_OPTIONS) == "--search"
    assert option_for(first_error([{"loc": ["body", "extra"], "msg": "m"}]), {}) == "extra"
