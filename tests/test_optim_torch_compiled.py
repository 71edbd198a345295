"""``torch.compile`` of the fused BAMSProd step: with a tensor learning rate, as torch's
compiled-optimizer tests compile ``Adam(fused=True)`` (the control, which passes), and with
``fullgraph=True`` in a fresh process, before anything has loaded the C++ kernel.

``Optimizer.step`` itself always breaks the graph (torch's ``_use_grad_for_differentiable``
does, for every optimizer), so the ``fullgraph`` compile is of the functional step
``bamsprod(...)``. torch's fused Adam has no such counterpart: ``_fused_adam`` is
``torch.compiler.disable``d and runs eagerly between graphs; our kernel registers fake
implementations and is traced into the graph. Other compiled steps: tests/test_optim_compile.py.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from optim_helpers import rel_err
from torch import nn

import bamsprod.core.optim._fused as fused_module
from bamsprod.core.optim import BAMSProd

pytestmark = pytest.mark.slow
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    if fused_module.load() is None:
        message = f"fused BAMSProd kernel unavailable: {fused_module.status()['error']}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _groups(model: nn.Module) -> list[dict]:
    first, *rest = model.parameters()
    return [{"params": [first], "binary": True, "latent_clip": 1.0}, {"params": rest}]


FACTORIES: dict[str, Callable[[nn.Module, torch.Tensor], torch.optim.Optimizer]] = {
    "adam (control)": lambda m, lr: torch.optim.Adam(
        m.parameters(), lr=lr, amsgrad=True, fused=True
    ),
    "bamsprod": lambda m, lr: BAMSProd(_groups(m), lr=lr, gamma=0.5, fused=True),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_compiled_fused_step_with_a_tensor_lr(name: str) -> None:
    """A tensor lr (moved by a scheduler in place) reaches the compiled fused kernel as a
    tensor, so the step compiles once and matches eager."""
    torch._dynamo.reset()
    eager_model = _model()
    compiled_model = copy.deepcopy(eager_model)
    eager = FACTORIES[name](eager_model, torch.tensor(0.01))
    opt = FACTORIES[name](compiled_model, torch.tensor(0.01))
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.9**s) for o in (eager, opt)]

    @torch.compile
    def step() -> None:
        opt.step()

    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for p, q in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        eager.step()
        step()
        for s in schedulers:
            s.step()
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    for a, b in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
        assert rel_err(a, b) <= 1e-6, name
    start = list(_model().parameters())
    moved = [not torch.equal(a, b) for a, b in zip(compiled_model.parameters(), start, strict=True)]
    assert all(moved)


FRESH_PROCESS = """
    import copy

    import torch

    import bamsprod.core.optim._fused as fused
    from bamsprod.core.optim.bamsprod import bamsprod

    assert fused.status()["loaded"] is False  # nothing has loaded the kernel in this process
    torch.manual_seed(0)
    params = [torch.randn(4, 3), torch.randn(5), torch.randn(2, 2, 3)]
    zeros = [[torch.zeros_like(p) for p in params] for _ in range(3)]
    grads = [torch.randn_like(p) for p in params]
    lists = (params, grads, *zeros, [torch.zeros(()) for _ in params])
    twin = copy.deepcopy(lists)
    hyper = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    ours = dict(gamma=0.5, kappa=1.0, binary=True, latent_clip=1.0)

    @torch.compile(fullgraph=True)
    def compiled(*lists):
        bamsprod(*lists, fused=True, **hyper, **ours)

    with torch.no_grad():
        for _ in range(3):
            compiled(*lists)
            bamsprod(*twin, fused=True, **hyper, **ours)
    for p, q in zip(lists[0], twin[0]):
        assert float((p - q).abs().max() / q.abs().max()) <= 1e-6
    assert [float(s) for s in lists[-1]] == [3.0] * 3 and fused.status()["loaded"]
    print("ok")
"""


def test_fullgraph_compile_of_fused_in_a_fresh_process() -> None:
    """The first thing a process does with the kernel is a ``fullgraph`` compile of a step: the
    kernel is loaded eagerly while Dynamo traces (its loader's lock is no context manager Dynamo
    can trace), so the step compiles, and matches eager."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_PROCESS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_kernel_check_is_marked_as_torch_marks_it_and_dynamo_is_not_imported() -> None:
    """``_kernel_loaded`` carries ``torch.compiler.assume_constant_result``'s mark, set without
    importing Dynamo (which pulls in Inductor and slows every later eager step)."""
    import bamsprod.core.optim.bamsprod as bamsprod_module

    marked = torch.compiler.assume_constant_result(lambda: True)
    marks = {k for k in vars(marked) if k.startswith("_dynamo")}
    assert marks and all(getattr(bamsprod_module._kernel_loaded, k) is True for k in marks)
    code = "import sys, bamsprod.core.optim; print('torch._dynamo' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
