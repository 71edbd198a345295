"""Every optimizer compiles in torch's documented pattern, matches eager and never recompiles.

``@torch.compile def step(): opt.step()`` on CPU, side by side with an eager twin, while a
scheduler moves the learning rate every step: after a warm-up, no new graph may be compiled (a
Python-int step, an lr baked in as a constant or a per-step host list would each recompile).
torch 2.13 has no ``torch._dynamo.config.error_on_recompile`` any more, so the test counts
Dynamo's compiled graphs instead. ``torch.optim.Adam`` is the control: it passes the same test.
The tolerance, 1e-6 relative to each tensor's scale, is what Adam itself meets: its compiled
bias corrections use the float32 ``step`` tensor, eager ones Python floats.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from optim_helpers import rel_err
from torch import nn

from bamsprod.core.nn import BinaryLinear
from bamsprod.core.optim import AdaBound, BAMSProd, Bop, CaseOptimizer, build

pytestmark = pytest.mark.slow


def _model() -> nn.Module:
    torch.manual_seed(0)
    layers = (nn.Linear(6, 8), nn.BatchNorm1d(8), BinaryLinear(8, 8), nn.Linear(8, 3))
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def _groups(model: nn.Module) -> list[dict]:
    latent = model[2].weight
    rest = [p for p in model.parameters() if p is not latent]
    return [{"params": rest}, {"params": [latent], "binary": True, "latent_clip": 1.0}]


def _bop(model: nn.Module) -> torch.optim.Optimizer:
    latent = model[2].weight
    rest = [p for p in model.parameters() if p is not latent]
    return CaseOptimizer(Bop([latent], gamma=0.05, threshold=1e-4), torch.optim.Adam(rest))


FACTORIES: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "adam (control)": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, amsgrad=True),
    "bamsprod default": lambda m: BAMSProd(_groups(m), lr=1e-2, gamma=0.1),
    "bamsprod reference": lambda m: BAMSProd(_groups(m), lr=1e-2, gamma=0.1, foreach=False),
    "bamsprod foreach": lambda m: BAMSProd(_groups(m), lr=1e-2, gamma=0.1, fused=False),
    "bamsprod build": lambda m: build("bamsprod", m, lr=1e-2, gamma=0.1),
    "adabound": lambda m: AdaBound(m.parameters(), lr=1e-2, gamma=0.1),
    "amsbound": lambda m: AdaBound(m.parameters(), lr=1e-2, gamma=0.1, amsbound=True),
    "bop": _bop,
}


def _grads(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_compiled_step_matches_eager_and_never_recompiles(name: str) -> None:
    from torch._dynamo.utils import counters

    counters.clear()
    torch._dynamo.reset()
    eager_model = _model()
    compiled_model = copy.deepcopy(eager_model)
    eager = FACTORIES[name](eager_model)
    opt = FACTORIES[name](compiled_model)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.9**s) for o in (eager, opt)]

    @torch.compile
    def step() -> None:
        opt.step()

    graphs = []
    for i in range(8):
        graphs.append(counters["stats"]["unique_graphs"])
        _grads(eager_model, i)
        _grads(compiled_model, i)
        eager.step()
        step()
        for s in schedulers:
            s.step()
    for a, b in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
        a, b = a.detach(), b.detach()
        assert float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) <= 1e-6, name
    assert graphs[0] == 0 and graphs[1] > 0, graphs  # it did compile
    assert len(set(graphs[2:])) == 1, graphs  # and, once warm, never again
    start = _model().state_dict()
    moved = [not torch.equal(p, start[n]) for n, p in compiled_model.named_parameters()]
    assert all(moved), name  # every tensor stepped (a step that did nothing would match too)


def test_step_is_a_tensor_in_every_optimizer() -> None:
    for name, factory in FACTORIES.items():
        model = _model()
        opt = factory(model)
        _grads(model, 0)
        opt.step()
        steps = [s["step"] for s in opt.state.values()]
        assert steps and all(torch.is_tensor(s) and float(s) == 1.0 for s in steps), name


def test_a_compiled_path_that_cannot_compile_warns_once_and_steps_on_foreach(monkeypatch) -> None:
    """Where Inductor fails (no working Triton, say), the step still happens, on the foreach
    path with its device-held step counts (capturable: never read on the host)."""
    import bamsprod.core.optim._paths as paths
    from bamsprod.core.optim.bamsprod import _step

    def broken(fn):  # torch.compile failing on first call, as a backend error would
        def call(*args, **kwargs):
            raise RuntimeError("backend compiler failed")

        return call

    monkeypatch.setattr(paths, "compiled", broken)
    monkeypatch.setattr(paths, "_compile_error", [])
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    ref = [p.clone() for p in ps]
    grads = [torch.randn(p.shape, generator=gen) for p in ps]

    def lists(params):
        zeros = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        return (params, grads, *zeros, [torch.zeros(()) for _ in params])

    hyper = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, gamma=0.5, kappa=1.0,
                 weight_decay=0.0, binary=True, latent_clip=1.0, maximize=False,
                 capturable=False, differentiable=False)  # fmt: skip
    compiled_lists = lists(ps)
    with monkeypatch.context() as m, pytest.warns(RuntimeWarning, match="optimizer step failed"):

        def refuse(*args, **kwargs):
            raise AssertionError("the fallback read a step count on the host")

        m.setattr(torch.Tensor, "item", refuse)
        assert _step("compiled", *compiled_lists, **hyper) == "foreach"
    assert _step("single_tensor", *lists(ref), **hyper) == "single_tensor"
    for p, r in zip(ps, ref, strict=True):
        assert rel_err(p, r) <= 1e-6
