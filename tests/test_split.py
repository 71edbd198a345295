"""The validation split: disjoint, deterministic, seed-independent; old configs keep none."""

from __future__ import annotations

import pytest
import torch

from bamsprod.core.config import RunConfig
from bamsprod.core.data.split import validation_split
from bamsprod.core.train import train


def test_split_is_disjoint_deterministic_and_covers_the_train_set() -> None:
    x = torch.arange(1000, dtype=torch.float32).reshape(1000, 1)
    y = torch.arange(1000)
    tx, ty, vx, vy = validation_split(x, y, 0.1)
    assert len(vx) == 100 and len(tx) == 900
    assert set(ty.tolist()).isdisjoint(vy.tolist())
    assert sorted(ty.tolist() + vy.tolist()) == list(range(1000))
    assert torch.equal(tx[:, 0].long(), ty) and torch.equal(vx[:, 0].long(), vy)  # rows kept whole
    again = validation_split(x, y, 0.1)
    assert torch.equal(again[3], vy)  # the same split every time, whatever the global RNG
    torch.manual_seed(123)
    assert torch.equal(validation_split(x, y, 0.1)[3], vy)
    assert len(validation_split(x, y, 0.0)[2]) == 0


def test_runs_report_validation_and_seeds_share_the_split() -> None:
    base = dict(model="mlp", dataset="digits", epochs=1, model_args={"width": 32, "depth": 1})
    a = train(RunConfig(**base, seed=0))
    b = train(RunConfig(**base, seed=1, val_split=0.0))
    assert a.history[0].val_acc is not None and 0.0 <= a.history[0].val_acc <= 1.0
    assert b.history[0].val_acc is None and b.history[0].val_loss is None


def test_a_stored_version_1_config_keeps_no_split_and_its_hash() -> None:
    stored = {"schema_version": 1, "model": "mlp", "dataset": "digits", "epochs": 3}
    old = RunConfig.model_validate(stored)
    assert old.val_split == 0.0 and old.schema_version == 1
    # The hash a version-1 run had before val_split and compile existed (its checkpoints match).
    assert old.config_hash() == "756b856f888f9f2c"
    new = RunConfig(model="mlp", dataset="digits", epochs=3)
    assert new.schema_version == 2 and new.val_split == 0.1
    assert new.config_hash() != old.config_hash()


@pytest.mark.parametrize(("subset", "fraction"), [(2, 0.5), (3, 0.5), (2, 0.4)])
def test_a_split_that_leaves_no_batch_is_a_422_naming_val_split(client, subset: int,
                                                               fraction: float) -> None:
    r = client.post("/api/runs", json={"train_subset": subset, "val_split": fraction})
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "val_split"] and "leaving 1" in err["msg"]


@pytest.mark.parametrize(("subset", "fraction"), [(3, 0.3), (4, 0.5), (2, 0.0)])
def test_the_smallest_accepted_splits_train(subset: int, fraction: float) -> None:
    config = RunConfig(train_subset=subset, val_split=fraction, test_subset=8, epochs=1,
                       model_args={"width": 8})
    result = train(config)
    assert result.state == "succeeded" and result.history[0].train_loss > 0
