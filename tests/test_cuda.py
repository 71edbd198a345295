"""The GPU path, run by ``benchmarks/gpu_check.sh`` on a CUDA machine; skipped elsewhere.

Each optimizer's default CUDA path (the compiled reference) against the eager reference, no
host sync in a warm step (``torch.cuda.set_sync_debug_mode("error")``), a CUDA-graph capture of
the capturable foreach step, and the trainer on CUDA with and without a compiled train step.
"""

from __future__ import annotations

import pytest
import torch

from bamsprod.core.config import RunConfig
from bamsprod.core.optim import AdaBound, BAMSProd, Bop, CaseOptimizer
from bamsprod.core.train import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPES = [((64, 3, 3, 3), False), ((64,), False), ((128, 64, 3, 3), True), ((256, 128), True),
          ((10, 256), False), ((10,), False)]  # fmt: skip


def _params(dtype: torch.dtype = torch.float64) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(0)
    real, binary = [], []
    for shape, is_binary in SHAPES:
        p = (torch.randn(shape, generator=gen, dtype=dtype) * 0.5).cuda().requires_grad_()
        (binary if is_binary else real).append(p)
    return real, binary


def _grads(params: list, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).cuda()


def _groups(real: list, binary: list) -> list[dict]:
    return [{"params": real}, {"params": binary, "binary": True, "latent_clip": 1.0}]


FACTORIES = {
    "bamsprod": lambda r, b, **kw: BAMSProd(_groups(r, b), lr=1e-2, gamma=0.1, **kw),
    "adabound": lambda r, b, **kw: AdaBound(r + b, lr=1e-2, gamma=0.1, **kw),
    "amsbound": lambda r, b, **kw: AdaBound(r + b, lr=1e-2, gamma=0.1, amsbound=True, **kw),
    "bop": lambda r, b, **kw: CaseOptimizer(Bop(b, gamma=0.05, threshold=1e-4, **kw),
                                            torch.optim.Adam(r, fused=True)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_default_cuda_path_is_compiled_and_matches_the_reference(name: str) -> None:
    ref_r, ref_b = _params()
    r, b = _params()
    ref = FACTORIES[name](ref_r, ref_b, foreach=False)
    opt = FACTORIES[name](r, b)
    for i in range(10):
        _grads(ref_r + ref_b, i)
        _grads(r + b, i)
        ref.step()
        opt.step()
    for p, q in zip(r + b, ref_r + ref_b, strict=True):
        assert float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) <= 1e-6, name
    sub = opt.optimizers[0] if isinstance(opt, CaseOptimizer) else opt
    assert sub.paths() == "compiled", sub.paths()


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("kwargs", [{}, {"foreach": True, "capturable": True}])
def test_warm_cuda_step_makes_no_host_sync(name: str, kwargs: dict) -> None:
    if name == "bop" and kwargs:
        kwargs = {"capturable": True}
    r, b = _params(torch.float32)
    opt = FACTORIES[name](r, b, **kwargs)
    for i in range(3):
        _grads(r + b, i)
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_capturable_foreach_step_replays_in_a_cuda_graph() -> None:
    ref_r, ref_b = _params(torch.float32)
    r, b = _params(torch.float32)
    ref = BAMSProd(_groups(ref_r, ref_b), gamma=0.1, foreach=True, capturable=True)
    opt = BAMSProd(_groups(r, b), gamma=0.1, foreach=True, capturable=True)
    _grads(ref_r + ref_b, 0)
    _grads(r + b, 0)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            opt.step()
            ref.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(5):
        graph.replay()
        ref.step()
    for p, q in zip(r + b, ref_r + ref_b, strict=True):
        assert float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) <= 1e-5


@pytest.mark.parametrize("mode", ["off", "reduce-overhead"])
def test_trainer_on_cuda(mode: str) -> None:
    config = RunConfig(model="mlp", dataset="digits", epochs=2, device="cuda", compile=mode)
    result = train(config)
    assert result.state == "succeeded" and result.device.startswith("cuda")
    assert result.history[-1].test_acc > 0.5
    expected = "compiled" if mode == "off" else f"compiled-step({mode}):single_tensor"
    assert result.optimizer_path == expected
    assert result.trained_on == (
        f"{result.device} ({torch.cuda.get_device_name(0)}) · {expected}")  # the card, named
