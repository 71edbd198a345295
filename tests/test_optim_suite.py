"""One suite for every optimizer we implement, larq-style: name x path x device.

Each combination runs the same checks: agreement with the per-tensor reference, a state-dict
round trip that reproduces the next steps exactly, a closure, the latent clip and determinism.
Paths: ``reference`` (``foreach=False``), ``foreach`` (``fused=False``: the eager fast path) and
``default`` (``fused=None``: the device's fastest, e.g. the C++ kernel on CPU, compiled on CUDA).
"""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import rel_err
from torch import nn

from bamsprod.core.nn import BinaryLinear, binary_weights
from bamsprod.core.optim import build

NAMES = ("bamsprod", "adabound", "amsbound", "bop")
PATHS = {"reference": {"foreach": False}, "foreach": {"fused": False}, "default": {}}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]
HPARAMS = {"bamsprod": {"gamma": 0.1}, "adabound": {"gamma": 0.1}, "amsbound": {"gamma": 0.1},
           "bop": {"gamma": 0.05, "threshold": 1e-4}}  # fmt: skip


def _model(device: str) -> nn.Module:
    torch.manual_seed(0)
    layers = (nn.Linear(6, 16), nn.BatchNorm1d(16), BinaryLinear(16, 16), nn.Linear(16, 3))
    return nn.Sequential(*layers).to(device)


def _optimizer(name: str, model: nn.Module, path: str) -> torch.optim.Optimizer:
    opt = build(name, model, lr=0.01, **HPARAMS[name])
    for group in opt.param_groups:  # a CaseOptimizer's groups are its parts' own dicts
        group.update(PATHS[path])
    return opt


def _batch(device: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(i)
    return torch.randn(32, 6, generator=gen).to(device), torch.randint(
        0, 3, (32,), generator=gen
    ).to(device)


def _train(model: nn.Module, opt: torch.optim.Optimizer, device: str, steps: range) -> None:
    for i in steps:
        x, y = _batch(device, i)

        def closure(x=x, y=y) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert torch.is_tensor(loss) and torch.isfinite(loss)  # the closure's loss comes back


def _fixed_grads(model: nn.Module, i: int) -> None:
    gen = torch.Generator().manual_seed(1000 + i)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(p.device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", NAMES)
def test_optimizer_contract(name: str, path: str, device: str) -> None:
    # The same gradients for every path (a trained BNN would amplify ulp differences through
    # its signs): the path agrees with the reference, and the latent clip holds.
    ref_model, model = _model(device), _model(device)
    ref, opt = _optimizer(name, ref_model, "reference"), _optimizer(name, model, path)
    for i in range(10):
        _fixed_grads(ref_model, i)
        _fixed_grads(model, i)
        ref.step()
        opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert rel_err(p, q) <= 1e-6, (name, path)
    for w in binary_weights(model).values():  # the BinaryConnect latent clip (Bop: exactly +-1)
        assert float(w.abs().max()) <= 1.0

    # Training with a closure; a state-dict round trip then reproduces the next steps exactly.
    _train(model, opt, device, range(6))

    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, device, range(6, 9))
    expected = [p.detach().clone() for p in model.parameters()]
    again = _model(device)
    again.load_state_dict(saved_model)
    resumed = _optimizer(name, again, path)
    resumed.load_state_dict(saved_opt)
    _train(again, resumed, device, range(6, 9))
    for p, q in zip(again.parameters(), expected, strict=True):
        assert torch.equal(p.detach(), q), (name, path)  # resumes exactly, and deterministically
