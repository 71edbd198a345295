"""The run config: defaults filled, errors located on the field, hash pools seeds only."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from bamsprod.core.config import DATASETS, MODELS, OPTIMIZERS, RunConfig


def test_defaults_are_filled_so_stored_json_says_what_ran():
    c = RunConfig(optimizer="bop")
    assert c.hparams == {k: h.default for k, h in OPTIMIZERS["bop"].items()}
    assert c.model_args == {k: h.default for k, h in MODELS["mlp"].items()}
    assert c.lr == 1e-2
    assert RunConfig(optimizer="bop", hparams={}).config_hash() == c.config_hash()


def test_hash_pools_seeds_and_names_but_not_hyperparameters():
    a = RunConfig(seed=0, name="a", tags=["x"])
    assert a.config_hash() == RunConfig(seed=7, name="b").config_hash()
    assert a.config_hash() != RunConfig(hparams={"kappa": 2.0}).config_hash()
    assert a.config_hash() != RunConfig(lr=2e-3).config_hash()


def test_evaluations_per_epoch_keep_the_hash_of_configs_stored_before_them():
    # Evaluating measures a run without changing its training (tests/test_train.py holds
    # that), so a config stored before the field existed keeps its hash and its checkpoints.
    stored = RunConfig(optimizer="adam").model_dump(mode="json")
    del stored["evals_per_epoch"]
    old = RunConfig.model_validate(stored)
    assert old.evals_per_epoch == 1
    assert RunConfig(optimizer="adam", evals_per_epoch=8).config_hash() == old.config_hash()
    assert RunConfig(evals_per_epoch=1, val_split=0).evals_per_epoch == 1


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"hparams": {"kappa": -1}}, "hparams", "kappa"),
        ({"hparams": {"bogus": 1}}, "hparams", "bogus"),
        ({"optimizer": "adam", "hparams": {"kappa": 1.0}}, "hparams", "kappa"),
        ({"model": "resnet18", "model_args": {"depth": 2}}, "model_args", "depth"),
        ({"epochs": 0}, "epochs", "greater than"),
        ({"lr": -1}, "lr", "greater than"),
        ({"optimizer": "rmsprop"}, "optimizer", "bamsprod"),
        ({"unknown_field": 1}, "unknown_field", "Extra"),
        ({"hparams": {"nesterov": 1}, "optimizer": "sgd"}, "hparams", "true or false"),
        ({"hparams": {"beta1": float("nan")}}, "hparams", "finite"),
        ({"evals_per_epoch": 65}, "evals_per_epoch", "less than"),
        ({"evals_per_epoch": 4, "val_split": 0}, "evals_per_epoch", "validation split"),
    ],
)
def test_errors_name_the_field(body, loc, words):
    with pytest.raises(ValidationError) as info:
        RunConfig(**body)
    err = info.value.errors()[0]
    assert err["loc"][0] == loc
    assert words in err["msg"]


def test_spec_imports_no_torch():
    code = "import sys, core.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_registries_agree_with_the_trainer():
    from bamsprod.core.nn import build_model, model_names
    from bamsprod.core.optim import OPTIMIZER_NAMES, build

    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(model_names()) == set(MODELS)
    from bamsprod.core.data import dataset_names

    assert set(dataset_names()) == set(DATASETS)
    for name, table in OPTIMIZERS.items():
        model = build_model("mlp", (1, 8, 8), 10, width=16, depth=1)
        hp = {k: h.default for k, h in table.items()}
        opt = build(name, model, lr=None, **hp)
        assert opt.param_groups, name
