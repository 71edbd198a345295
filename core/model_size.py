"""A run's parameter count and parameter memory in closed form: no torch, no model built.

The API checks every submitted run against a memory limit with these, so an ``mlp`` of width
8192 and depth 16 (over a billion parameters, 8 GB of weights alone) is refused at submit
instead of being allocated on a worker. The counts follow ``core.nn.models`` layer by layer (a
test compares them with the built models); the memory is float32 weights, their gradients,
the optimizer's state (its spec's ``state_slots``) and the trainer's flip-rate copy, per
parameter.

A plugin model gives its count in closed form (``bamsprod_param_count``) or is built on torch's
``meta`` device, which allocates nothing, and counted there. A plugin model that cannot be
built on ``meta`` is not checked (``param_count`` is None; ``too_large`` lets it through), and
a plugin model has no activation estimate (``too_much_activation`` lets it through).

Activations, too: what a training step keeps for its backward pass grows with the batch, and
a model whose parameters fit may still need far more for its feature maps (``resnet18`` with
``width_mult=4`` at ``batch_size=8192``: its first map alone is 5.9 GB). The estimate counts
every layer's output per example (each linear or convolution output, pooled maps and
shortcuts) times ``ACTIVATION_FACTOR`` float32 tensors of that size (the layer input a
convolution saves, BatchNorm's input, the sign's input), plus the input batch; a test holds it
at or above what autograd really saves, within 60 %.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from bamsprod.core.config import DATASETS, MODELS, RegistryView, RunConfig, resolve_model_args
from bamsprod.core.plugins import registry, resolve

__all__ = ["ACTIVATION_FACTOR", "SIZE_ARG", "activation_bytes", "activation_elements",
           "fitting_size", "param_bytes", "param_count", "size_field", "too_large",
           "too_much_activation"]

log = logging.getLogger(__name__)

# Per-parameter float32 tensors an optimizer keeps (an upper bound: Bop's Adam side for the
# real layers, AMSGrad's running max for the *ms* ones, SGD's momentum buffer); a plugin's
# ``bamsprod_state_slots``, else 2.
STATE_SLOTS: Mapping[str, int] = RegistryView("optimizer", lambda spec: spec.state_slots)
# The argument that scales each model, searched for the largest size that fits (None: the
# model names none).
SIZE_ARG: Mapping[str, str | None] = RegistryView("model", lambda spec: spec.size_arg)


def _ch(base: int, width_mult: float) -> int:
    return max(1, int(round(base * width_mult)))


def mlp_params(shape: tuple[int, int, int], k: int, width: int, depth: int, **_: Any) -> int:
    c, h, w = shape
    layer = width * width + 2 * width  # binary linear (no bias) + BatchNorm
    return c * h * w * width + 2 * width + depth * layer + width * k + k


def binarynet_params(shape: tuple[int, int, int], k: int, width_mult: float, **_: Any) -> int:
    c_in, h, w = shape
    c1, c2, c3 = (_ch(b, width_mult) for b in (128, 256, 512))
    fc = _ch(1024, width_mult)
    n = c_in * c1 * 9 + 2 * c1
    for i, o, pool in ((c1, c1, True), (c1, c2, False), (c2, c2, True), (c2, c3, False),
                       (c3, c3, True)):
        n += i * o * 9 + 2 * o
        if pool and min(h, w) >= 2:
            h, w = h // 2, w // 2
    flat = c3 * min(h, 4) * min(w, 4)
    return n + flat * fc + 2 * fc + fc * fc + 2 * fc + fc * k + 2 * k


def resnet18_params(shape: tuple[int, int, int], k: int, width_mult: float, **_: Any) -> int:
    c_in, h, w = shape
    widths = [_ch(b, width_mult) for b in (64, 128, 256, 512)]

    def unit(ci: int, co: int, stride: int) -> int:  # binary 3x3 + BN (+ 1x1 shortcut + BN)
        shortcut = 0 if stride == 1 and ci == co else ci * co + 2 * co
        return ci * co * 9 + 2 * co + shortcut

    n = c_in * widths[0] * 9 + 2 * widths[0]
    prev = widths[0]
    for i, width in enumerate(widths):  # two basic blocks of two units per stage
        stride = 2 if i > 0 and min(h, w) > 1 else 1
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
        n += unit(prev, width, stride) + 3 * unit(width, width, 1)
        prev = width
    return n + prev * k + k


def _meta_count(model: str, shape: tuple[int, int, int], k: int, args: dict[str, Any]
                ) -> int | None:
    """Trainable parameters of ``model`` built on torch's meta device, or None if it cannot."""
    try:
        import torch

        from bamsprod.core.nn import build_model

        with torch.device("meta"):
            built = build_model(model, shape, k, **args)
        return sum(p.numel() for p in built.parameters() if p.requires_grad)
    except Exception as exc:
        log.warning("cannot count the parameters of model %r on the meta device: %s", model, exc)
        return None

# Float32 tensors of each layer's output size that a training step keeps for backward.
ACTIVATION_FACTOR = 3


def _mlp_maps(shape: tuple[int, int, int], k: int, width: int, depth: int, **_: Any) -> int:
    return (depth + 1) * width + k


def _binarynet_maps(shape: tuple[int, int, int], k: int, width_mult: float, **_: Any) -> int:
    c_in, h, w = shape
    c1, c2, c3 = (_ch(b, width_mult) for b in (128, 256, 512))
    fc = _ch(1024, width_mult)
    n = c1 * h * w
    for _i, o, pool in ((c1, c1, True), (c1, c2, False), (c2, c2, True), (c2, c3, False),
                        (c3, c3, True)):
        n += o * h * w
        if pool and min(h, w) >= 2:
            h, w = h // 2, w // 2
            n += o * h * w
    return n + c3 * min(h, 4) * min(w, 4) + 2 * fc + k


def _resnet18_maps(shape: tuple[int, int, int], k: int, width_mult: float, **_: Any) -> int:
    c_in, h, w = shape
    widths = [_ch(b, width_mult) for b in (64, 128, 256, 512)]
    n = widths[0] * h * w
    prev = widths[0]
    for i, width in enumerate(widths):
        stride = 2 if i > 0 and min(h, w) > 1 else 1
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
        n += 4 * width * h * w  # four binary units
        if stride > 1 or prev != width:  # the first unit's shortcut: pool and 1x1 conv
            n += (prev if stride > 1 else 0) * h * w + width * h * w
        prev = width
    return n + prev + k


_MAPS: dict[str, Callable[..., int]] = {"mlp": _mlp_maps, "binarynet": _binarynet_maps,
                                        "resnet18": _resnet18_maps}


def param_count(model: str, dataset: str, model_args: dict[str, Any]) -> int | None:
    """Trainable parameters of ``model`` built for ``dataset`` with ``model_args`` (None: a
    plugin model that can be neither counted in closed form nor built on the meta device)."""
    meta = DATASETS[dataset]
    args = resolve_model_args(model, model_args)
    shape, k = tuple(meta["shape"]), int(meta["classes"])
    spec = registry().spec("model", model)
    if spec.param_count is None:
        return _meta_count(model, shape, k, args)
    return int(resolve(spec.param_count)(shape, k, **args))


def activation_elements(model: str, dataset: str, model_args: dict[str, Any]) -> int | None:
    """Output elements of every layer of ``model`` for one example (see the module docstring),
    the input not included; None for a model without an estimate (a plugin's)."""
    maps = _MAPS.get(model)
    if maps is None:
        return None
    meta = DATASETS[dataset]
    args = resolve_model_args(model, model_args)
    return maps(tuple(meta["shape"]), int(meta["classes"]), **args)


def activation_bytes(config: RunConfig, batch_size: int | None = None) -> int | None:
    """Bytes a training step of ``config`` keeps for backward at ``batch_size`` (default:
    the config's): the input batch once, each layer's output ``ACTIVATION_FACTOR`` times;
    None for a model without an estimate."""
    n = activation_elements(config.model, config.dataset, config.model_args)
    if n is None:
        return None
    c, h, w = DATASETS[config.dataset]["shape"]
    return 4 * (c * h * w + ACTIVATION_FACTOR * n) * (batch_size or config.batch_size)


def param_bytes(config: RunConfig) -> int | None:
    """Bytes of parameter memory ``config`` needs on its device (see the module docstring);
    None when the model's parameters cannot be counted."""
    n = param_count(config.model, config.dataset, config.model_args)
    return None if n is None else 4 * n * (3 + STATE_SLOTS[config.optimizer])


def fitting_size(config: RunConfig, limit: int) -> float | int | None:
    """The largest value of the model's ``SIZE_ARG`` (others as given) within ``limit`` bytes;
    None when even the smallest does not fit, or the model names no size argument."""
    name = SIZE_ARG[config.model]
    if name is None:
        return None
    spec = MODELS[config.model][name]
    lo_hi = (int(spec.lo or 1), int(spec.hi or 1)) if spec.kind is int else (1, 128)
    to_value = (lambda i: i) if spec.kind is int else (lambda i: i / 32)  # multiples of 1/32

    def fits(i: int) -> bool:
        args = {**config.model_args, name: to_value(i)}
        need = param_bytes(config.model_copy(update={"model_args": args}))
        return need is not None and need <= limit

    lo, hi = lo_hi
    if not fits(lo):
        return None
    while lo < hi:  # the largest i with fits(i): sizes grow with the argument
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return to_value(lo)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def too_large(config: RunConfig, limit: int) -> str | None:
    """Why ``config``'s model does not fit in ``limit`` bytes and what would; None if it fits."""
    need = param_bytes(config)
    if need is None or need <= limit:
        return None
    name = SIZE_ARG[config.model]
    fit = fitting_size(config, limit)
    n = need // (4 * (3 + STATE_SLOTS[config.optimizer]))
    if name is None:
        hint = "make the model smaller (it names no size argument)"
    elif fit is not None:
        hint = f"{name} <= {fit} fits"
    else:
        hint = f"even the smallest {name} does not fit: change the other model_args"
    return (f"{config.model} on {config.dataset} needs about {_gib(need)} of parameter memory "
            f"({n:,} parameters, with gradients and {config.optimizer} state); this server "
            f"allows {_gib(limit)}; with these other model_args, {hint}")


def size_field(config: RunConfig) -> tuple[tuple[str, ...], Any]:
    """Where a too-large error belongs: ``(("model_args", <size arg>), its value)``, or
    ``(("model",), the model)`` for a model that names no size argument."""
    name = SIZE_ARG[config.model]
    if name is None:
        return ("model",), config.model
    return ("model_args", name), config.model_args.get(name)


def too_much_activation(config: RunConfig, limit: int) -> str | None:
    """Why ``config``'s training step needs more than ``limit`` bytes of activations and
    which ``batch_size`` would fit; None if it fits."""
    need = activation_bytes(config)
    if need is None or need <= limit:
        return None
    per_example = activation_bytes(config, 1) or need
    fit = limit // per_example
    hint = (f"batch_size <= {fit} fits" if fit >= 2 else
            f"even a batch of 2 does not fit: make the model smaller "
            f"({SIZE_ARG[config.model] or config.model})")
    return (f"{config.model} on {config.dataset} at batch_size {config.batch_size} needs about "
            f"{_gib(need)} of activation memory for one training step; this server allows "
            f"{_gib(limit)}; {hint}")
