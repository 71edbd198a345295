"""Time one optimizer step, side by side in one process, on realistic parameter sets.

Usage::

    .venv/bin/python benchmarks/optimizer_step.py [--device cpu|cuda] [--quick] [--json out.json]
        [--sets resnet18,mlp] [--steps N] [--warmup N] [--threads N] [--only NAME,NAME]

The headline: each optimizer's default path (what ``BAMSProd(params)`` etc. run) over torch's
fastest AMSGrad on ResNet-18, target <= 1.3; on CUDA also the compiled and CUDA-graph variants.
On CUDA every step is timed between two synchronisations (so a step's whole device work counts),
and compiled rows are compiled before the timings, their compile time reported.

Parameter sets (float32, with fixed random gradients):

- ``resnet18``: the standard CIFAR ResNet-18 shapes (conv1 64x3x3x3, four stages of 3x3 convs
  64/128/256/512 with 1x1 downsample convs, BatchNorm weight/bias, fc 10x512 + bias), about
  11.2M parameters. Every conv except conv1 is a binary layer (its weight is a latent weight,
  in the ``binary`` group); conv1, BatchNorm and fc are real.
- ``mlp``: the shapes of ``core.nn.models.BinaryMLP`` on 28x28 inputs (784->512 real, two
  512x512 binary layers, BatchNorm, 512->10 real), about 0.93M parameters.

Every optimizer gets its own copy of the parameters; after ``warmup`` steps each, they are timed
round-robin (one step each, ``steps`` rounds; the slow single-tensor paths every third round)
so that load from other processes falls on all of them alike. Columns, from the median step:
ms/step; the ratio to the fastest torch AMSGrad variant; effective bandwidth, i.e. the bytes an
ideal single-pass implementation must move (each tensor the algorithm reads, once, plus each
it writes, once) divided by the step time; and that as a fraction of a measured memory
bandwidth: the median time of a ``torch.add(a, b, out=c)`` triad over as many float32 elements
as the set has parameters (3 arrays moved). BAMSProd needs the same tensors as AMSGrad, so its
ideal byte count is AMSGrad's; it cannot be single-pass (``mean(v^)`` must be known before the
projection): its fused path makes two passes (12 tensor reads and writes per element against
AMSGrad's 9), its foreach path about 30.

``bamsprod fused`` needs the C++ kernel (``core/optim/_fused.py``); it is built before the
timings (the first time on a machine: ~10-60 s, then cached) and the row says so if it can't be.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bamsprod.core.optim import AdaBound, BAMSProd, Bop, CaseOptimizer, _fused  # noqa: E402

Shape = tuple[int, ...]
# (shape, is_binary)
ParamSpec = list[tuple[Shape, bool]]


def resnet18_shapes(num_classes: int = 10) -> ParamSpec:
    """Standard CIFAR ResNet-18: 11,173,962 parameters with 10 classes."""
    spec: ParamSpec = [((64, 3, 3, 3), False), ((64,), False), ((64,), False)]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = c_in if block == 0 else c_out
            spec += [((c_out, first, 3, 3), True), ((c_out,), False), ((c_out,), False)]
            spec += [((c_out, c_out, 3, 3), True), ((c_out,), False), ((c_out,), False)]
            if block == 0 and (stride != 1 or first != c_out):
                spec += [((c_out, first, 1, 1), True), ((c_out,), False), ((c_out,), False)]
        c_in = c_out
    spec += [((num_classes, 512), False), ((num_classes,), False)]
    return spec


def mlp_shapes(width: int = 512, depth: int = 2, inputs: int = 784) -> ParamSpec:
    spec: ParamSpec = [((width, inputs), False), ((width,), False), ((width,), False)]
    for _ in range(depth):
        spec += [((width, width), True), ((width,), False), ((width,), False)]
    spec += [((10, width), False), ((10,), False)]
    return spec


SETS: dict[str, Callable[[], ParamSpec]] = {"resnet18": resnet18_shapes, "mlp": mlp_shapes}


DEVICE = torch.device("cpu")


def make_params(spec: ParamSpec, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Fresh (real, binary) parameter lists on :data:`DEVICE` with fixed random gradients."""
    gen = torch.Generator().manual_seed(seed)
    real: list[torch.Tensor] = []
    binary: list[torch.Tensor] = []
    for shape, is_binary in spec:
        p = (torch.randn(shape, generator=gen) * 0.1).to(DEVICE).requires_grad_()
        p.grad = (torch.randn(shape, generator=gen) * 1e-2).to(DEVICE)
        (binary if is_binary else real).append(p)
    return real, binary


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _groups(real: list[torch.Tensor], binary: list[torch.Tensor]) -> list[dict]:
    return [
        {"params": real},
        {"params": binary, "binary": True, "latent_clip": 1.0},
    ]


# Each optimizer's default path (no foreach/fused argument), the rows the targets apply to.
DEFAULTS = ("bamsprod default", "adabound default", "amsbound default", "bop default")
BAMSPROD_DEFAULT = "bamsprod default"
BAMSPROD_FAST = ("bamsprod default", "bamsprod foreach", "bamsprod fused", "bamsprod cudagraph")
TARGET = 1.3

# name -> (factory, ideal bytes per parameter element moved per step)
Factory = Callable[[list[torch.Tensor], list[torch.Tensor]], torch.optim.Optimizer]


def _torch_adam(amsgrad: bool, **kw) -> Factory:
    return lambda real, binary: torch.optim.Adam(real + binary, amsgrad=amsgrad, **kw)


def _bop(real: list[torch.Tensor], binary: list[torch.Tensor]) -> torch.optim.Optimizer:
    # Adam's own default path for the real part; on CUDA torch picks foreach, so ask for fused.
    fused = {"fused": True} if DEVICE.type == "cuda" else {}
    return CaseOptimizer(torch.optim.Adam(real, lr=0.01, **fused), Bop(binary))


class Graphed:
    """An optimizer whose ``step`` replays one CUDA graph of a captured step (capturable)."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # state creation and warm-up, outside the capture
                opt.step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            opt.step()

    def step(self) -> None:
        self.graph.replay()


def _graphed(factory: Factory) -> Factory:
    return lambda r, b: Graphed(factory(r, b))  # type: ignore[return-value]


OPTIMIZERS: dict[str, tuple[Factory, float]] = {
    "bamsprod reference": (lambda r, b: BAMSProd(_groups(r, b), foreach=False), 9),
    "bamsprod foreach": (lambda r, b: BAMSProd(_groups(r, b), foreach=True), 9),
    "bamsprod fused": (lambda r, b: BAMSProd(_groups(r, b), fused=True), 9),
    "bamsprod default": (lambda r, b: BAMSProd(_groups(r, b)), 9),
    "bamsprod cudagraph": (
        _graphed(lambda r, b: BAMSProd(_groups(r, b), foreach=True, capturable=True)), 9
    ),
    "adabound default": (lambda r, b: AdaBound(r + b), 7),
    "amsbound default": (lambda r, b: AdaBound(r + b, amsbound=True), 9),
    "bop default": (_bop, 0),  # computed per set: 5 per binary element, 7 per real one
    "adam single-tensor": (_torch_adam(False, foreach=False), 7),
    "adam foreach": (_torch_adam(False, foreach=True), 7),
    "adam fused": (_torch_adam(False, fused=True), 7),
    "amsgrad single-tensor": (_torch_adam(True, foreach=False), 9),
    "amsgrad foreach": (_torch_adam(True, foreach=True), 9),
    "amsgrad fused": (_torch_adam(True, fused=True), 9),
}


def time_round_robin(
    opts: dict[str, torch.optim.Optimizer], warmup: int, steps: int, slow: set[str]
) -> dict[str, list[float]]:
    """Seconds per ``step()`` of each optimizer, timed one step each in turn, ``steps`` rounds.

    Interleaving spreads any load from other processes over every optimizer alike. Optimizers
    in ``slow`` are timed on every third round only.
    """
    for opt in opts.values():
        for _ in range(warmup):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in opts}
    for i in range(steps):
        for name, opt in opts.items():
            if name in slow and i % 3:
                continue
            sync()
            t0 = time.perf_counter()
            opt.step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def triad_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of ``c = a + b`` over ``numel`` float32 elements (median time)."""
    a = torch.randn(numel, device=DEVICE)
    b = torch.randn(numel, device=DEVICE)
    c = torch.empty(numel, device=DEVICE)
    for _ in range(3):
        torch.add(a, b, out=c)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        torch.add(a, b, out=c)
        sync()
        times.append(time.perf_counter() - t0)
    return 3 * 4 * numel / statistics.median(times)


def kernel_info() -> dict:
    """Build (or load) the fused kernel now, outside every timing; how long it took, its flags."""
    t0 = time.perf_counter()
    ops = _fused.load()
    info = _fused.status()
    info["seconds"] = time.perf_counter() - t0
    info["loaded"] = ops is not None
    return info


def _path(opt: torch.optim.Optimizer) -> str:
    from bamsprod.core.train import optimizer_path

    return optimizer_path(opt)


def bench_set(name: str, warmup: int, steps: int, only: set[str] | None = None) -> dict:
    spec = SETS[name]()
    n_real = sum(torch.Size(s).numel() for s, b in spec if not b)
    n_binary = sum(torch.Size(s).numel() for s, b in spec if b)
    numel = n_real + n_binary
    bandwidth = triad_bandwidth(numel, max(steps, 10))
    opts: dict[str, torch.optim.Optimizer] = {}
    rows: dict[str, dict] = {}
    first: dict[str, float] = {}  # the first step: state creation, compiling, capture
    for opt_name, (factory, _) in OPTIMIZERS.items():
        if only is not None and opt_name not in only:
            continue
        if opt_name == "bamsprod fused" and DEVICE.type == "cpu" and not _fused.status()["loaded"]:
            error = _fused.status()["error"] or "the fused kernel is not loaded"
            rows[opt_name] = {"optimizer": opt_name, "error": f"kernel unavailable: {error}"}
            continue
        if opt_name == "bamsprod cudagraph" and DEVICE.type != "cuda":
            continue
        real, binary = make_params(spec)
        try:
            t0 = time.perf_counter()
            opts[opt_name] = factory(real, binary)
            opts[opt_name].step()  # fused=True on an unsupported device fails here
            sync()
            first[opt_name] = time.perf_counter() - t0
        except (RuntimeError, ValueError, AssertionError) as exc:
            opts.pop(opt_name, None)
            rows[opt_name] = {"optimizer": opt_name, "error": str(exc).splitlines()[0]}
    slow = {n for n in opts if "single-tensor" in n or "reference" in n}
    times = time_round_robin(opts, warmup, steps, slow)
    for opt_name, (_, per_elem) in OPTIMIZERS.items():
        if opt_name not in times:
            continue
        seconds = statistics.median(times[opt_name])
        ideal = per_elem * 4 * numel if per_elem else 4 * (5 * n_binary + 7 * n_real)
        inner = getattr(opts[opt_name], "opt", opts[opt_name])
        rows[opt_name] = {
            "optimizer": opt_name,
            "path": _path(inner),
            "first_step_s": first[opt_name],
            "ms": seconds * 1e3,
            "min_ms": min(times[opt_name]) * 1e3,
            "timed_steps": len(times[opt_name]),
            "ideal_bytes": ideal,
            "gbps": ideal / seconds / 1e9,
        }
    del opts
    gc.collect()
    ordered = [rows[n] for n in OPTIMIZERS if n in rows]
    amsgrad = [r["ms"] for r in ordered if r["optimizer"].startswith("amsgrad") and "ms" in r]
    fastest = min(amsgrad)
    fastest_name = next(r["optimizer"] for r in ordered if r.get("ms") == fastest)
    for r in ordered:
        if "ms" in r:
            r["x_fastest_amsgrad"] = r["ms"] / fastest
            r["of_triad"] = r["gbps"] * 1e9 / bandwidth
    timed = {r["optimizer"]: r for r in ordered if "ms" in r}
    fast = min((timed[n] for n in BAMSPROD_FAST if n in timed), key=lambda r: r["ms"], default=None)
    default = timed.get(BAMSPROD_DEFAULT)
    return {
        "device": str(DEVICE),
        "defaults": {n: timed[n]["x_fastest_amsgrad"] for n in DEFAULTS if n in timed},
        "set": name,
        "params": numel,
        "binary_params": n_binary,
        "triad_gbps": bandwidth / 1e9,
        "fastest_amsgrad": fastest_name,
        "fastest_amsgrad_ms": fastest,
        "bamsprod_fast_path": fast["optimizer"] if fast else None,
        "bamsprod_fast_ratio": fast["x_fastest_amsgrad"] if fast else None,
        "bamsprod_default_path": BAMSPROD_DEFAULT if default else None,
        "bamsprod_default_ratio": default["x_fastest_amsgrad"] if default else None,
        "target": TARGET,
        "rows": ordered,
    }


def print_table(result: dict) -> None:
    print(
        f"\n{result['set']}: {result['params']:,} parameters ({result['binary_params']:,} "
        f"binary), triad bandwidth {result['triad_gbps']:.1f} GB/s"
    )
    header = (
        f"{'optimizer':<24}{'ms/step':>10}{'x AMSGrad*':>12}{'GB/s':>8}{'of triad':>10}"
        f"{'1st step s':>12}  path"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['optimizer']:<24}  unavailable: {r['error']}")
            continue
        print(
            f"{r['optimizer']:<24}{r['ms']:>10.3f}{r['x_fastest_amsgrad']:>12.2f}"
            f"{r['gbps']:>8.1f}{r['of_triad']:>9.0%}{r['first_step_s']:>12.2f}  {r['path']}"
        )
    print(f"* the fastest torch AMSGrad variant above ({result['fastest_amsgrad']})")
    print(headline(result))
    for name, ratio in result["defaults"].items():
        verdict = "met" if ratio <= result["target"] else "not met"
        print(f"  {name} / fastest AMSGrad = {ratio:.2f} (target \u2264 {TARGET}: {verdict})")


def headline(result: dict) -> str:
    """``BAMSProd fast path / fastest AMSGrad = X (target <= 1.3)`` and the default path's."""
    if result["bamsprod_fast_ratio"] is None:
        return "BAMSProd fast path / fastest AMSGrad: not measured"
    ratio = result["bamsprod_fast_ratio"]
    verdict = "met" if ratio <= result["target"] else "not met"
    line = (
        f"BAMSProd fast path ({result['bamsprod_fast_path']}) / fastest AMSGrad "
        f"({result['fastest_amsgrad']}) = {ratio:.2f} (target \u2264 {result['target']}: {verdict})"
    )
    if result["bamsprod_default_ratio"] is not None:
        line += (
            f"; default path ({result['bamsprod_default_path']}) = "
            f"{result['bamsprod_default_ratio']:.2f}"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sets", default="resnet18,mlp", help="comma-separated: resnet18,mlp")
    parser.add_argument("--steps", type=int, help="timed steps (default 30; 5 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps (default 5; 2 with --quick)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--only",
        help="comma-separated optimizer names to time (default: all); include an amsgrad one",
    )
    args = parser.parse_args(argv)
    steps = args.steps or (5 if args.quick else 30)
    warmup = args.warmup or (2 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        parser.error(f"unknown set {unknown[0]!r}; known: {', '.join(SETS)}")
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    if only is not None:
        bad = sorted(only - set(OPTIMIZERS))
        if bad:
            parser.error(f"unknown optimizer {bad[0]!r}; known: {', '.join(OPTIMIZERS)}")
        if not any(n.startswith("amsgrad") for n in only):
            parser.error("--only must include an amsgrad variant (the ratios' baseline)")
    machine = {
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }
    print(
        f"{machine['device']}: torch {machine['torch']}, {machine['threads']} threads, "
        f"{machine['cpu_capability']}, load average {machine['load_avg'][0]:.2f}; "
        f"median of {steps} steps after {warmup} warmup"
    )
    uses_kernel = only is None or bool({"bamsprod fused", BAMSPROD_DEFAULT} & only)
    wants_kernel = DEVICE.type == "cpu" and uses_kernel
    kernel = kernel_info() if wants_kernel else None
    if kernel is not None:
        state = "loaded" if kernel["loaded"] else f"unavailable ({kernel['error']})"
        print(f"fused BAMSProd kernel {state} in {kernel['seconds']:.1f} s: {kernel['name']}")
    results = []
    for name in sets:
        result = bench_set(name, warmup, steps, only)
        print_table(result)
        results.append(result)
    machine["load_avg_end"] = os.getloadavg()
    if args.json:
        payload = {
            "machine": machine,
            "steps": steps,
            "warmup": warmup,
            "kernel": kernel,
            "sets": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
