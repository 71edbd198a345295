"""The closed-form parameter count and memory of ``core.model_size`` against built models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bamsprod.core.config import DATASETS, RunConfig
from bamsprod.core.model_size import (
    STATE_SLOTS,
    activation_bytes,
    fitting_size,
    param_bytes,
    param_count,
    too_large,
)
from bamsprod.core.nn import build_model
from bamsprod.core.optim import build as build_optimizer

SIZES = [
    ("mlp", {"width": 8, "depth": 1}),
    ("mlp", {"width": 100, "depth": 3, "scale": False}),
    ("binarynet", {"width_mult": 0.03125}),
    ("binarynet", {"width_mult": 0.3}),
    ("resnet18", {"width_mult": 0.03125}),
    ("resnet18", {"width_mult": 0.25}),
]


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize(("model", "args"), SIZES)
def test_param_count_is_exact(model: str, args: dict, dataset: str) -> None:
    meta = DATASETS[dataset]
    built = build_model(model, meta["shape"], meta["classes"], **args)
    assert param_count(model, dataset, args) == sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize("optimizer", list(STATE_SLOTS))
def test_param_bytes_bounds_weights_grads_and_optimizer_state(optimizer: str) -> None:
    config = RunConfig(model="mlp", dataset="digits", optimizer=optimizer,
                       model_args={"width": 64, "depth": 2})
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8), 10, **config.model_args)
    opt = build_optimizer(optimizer, model, lr=1e-3, **config.hparams)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    F.cross_entropy(model(x), y).backward()
    opt.step()
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters()]
    state = [v for s in opt.state_dict()["state"].values() for v in s.values()
             if isinstance(v, torch.Tensor) and v.dim() > 0]
    used = sum(t.numel() * t.element_size() for t in tensors + state)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert used <= param_bytes(config) - weights  # room left for the flip-rate copy
    assert param_bytes(config) <= 2.5 * used


def test_the_mlp_from_the_issue_is_sized_and_what_fits_is_found() -> None:
    config = RunConfig(model="mlp", dataset="mnist", model_args={"width": 8192, "depth": 16})
    assert param_count("mlp", "mnist", config.model_args) > 10**9
    limit = 4 * 2**30
    assert param_bytes(config) > limit
    width = fitting_size(config, limit)
    assert isinstance(width, int) and 1000 < width < 8192
    at = {**config.model_args, "width": width}
    assert param_bytes(config.model_copy(update={"model_args": at})) <= limit
    at["width"] = width + 1
    assert param_bytes(config.model_copy(update={"model_args": at})) > limit
    assert fitting_size(config, 1000) is None  # not even width 8
    resnet = RunConfig(model="resnet18", dataset="cifar10", model_args={"width_mult": 4.0})
    mult = fitting_size(resnet, 2**30)
    assert mult is not None and 1.0 < mult < 4.0 and (mult * 32).is_integer()


def test_submit_refuses_a_model_too_large_naming_the_field_and_what_fits(
    client, enqueued: list[int]
) -> None:
    body = {"model": "mlp", "dataset": "mnist", "model_args": {"width": 8192, "depth": 16}}
    r = client.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "model_args", "width"]
    assert "needs about 24.15 GiB" in err["msg"] and "allows 4.00 GiB" in err["msg"]
    assert "width <= 3318 fits" in err["msg"]
    sweep = {"name": "big", "base": body, "grid": {"model_args.depth": [1, 16]}}
    r = client.post("/api/sweeps", json=sweep)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "base", "model_args", "width"]
    assert client.get("/api/runs").json()["total"] == 0 and enqueued == []
    body["model_args"]["width"] = 3318
    assert client.post("/api/runs", json=body).status_code == 201


def _saved_bytes_per_example(model: str, dataset: str, args: dict) -> float:
    """What autograd keeps for backward per example (storages saved by the forward pass,
    from two batch sizes: the weight-sized ones cancel out)."""
    meta = DATASETS[dataset]
    totals = []
    for batch in (4, 12):
        torch.manual_seed(0)
        net = build_model(model, meta["shape"], meta["classes"], **args).train()
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor, seen: dict[int, int] = seen) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        x, y = torch.randn(batch, *meta["shape"]), torch.arange(batch) % meta["classes"]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F.cross_entropy(net(x), y)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / 8


@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10"])
@pytest.mark.parametrize(("model", "args"), SIZES)
def test_activation_estimate_bounds_what_autograd_saves(model: str, args: dict,
                                                        dataset: str) -> None:
    measured = _saved_bytes_per_example(model, dataset, args)
    config = RunConfig(model=model, dataset=dataset, model_args=args, batch_size=2)
    estimate = activation_bytes(config, 1)
    assert measured <= estimate <= 1.6 * measured, (estimate, measured)
    assert activation_bytes(config, 100) == 100 * estimate


def test_submit_refuses_a_batch_whose_activations_cannot_fit(client, enqueued: list[int]
                                                             ) -> None:
    """The issue's run: resnet18 x4 at batch 8192 fits the parameter limit (3.99 GiB), not
    its activations: a 422 on batch_size with the largest batch that fits."""
    body = {"model": "resnet18", "dataset": "fashion-mnist", "model_args": {"width_mult": 4},
            "batch_size": 8192}
    assert too_large(RunConfig(**body), 4 * 2**30) is None
    r = client.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "batch_size"]
    assert "activation memory" in err["msg"] and "allows 8.00 GiB" in err["msg"]
    fits = int(err["msg"].rsplit("batch_size <= ", 1)[1].split()[0])
    assert 2 <= fits < 8192
    sweep = {"name": "big", "base": body, "grid": {"seed": [0, 1]}}
    r = client.post("/api/sweeps", json=sweep)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base",
                                                                     "batch_size"]
    assert enqueued == []
    assert client.post("/api/runs", json={**body, "batch_size": fits}).status_code == 201
    assert client.post("/api/runs", json={**body, "batch_size": fits + 1}).status_code == 422
