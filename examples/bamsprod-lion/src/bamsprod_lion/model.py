"""``tinymlp``: a small binary MLP, as a bamsprod model plugin.

A model plugin is a callable ``(input_shape, num_classes, **kwargs) -> nn.Module``; bamsprod
reads ``kwargs`` from its signature. Its binary layer is bamsprod's public ``BinaryLinear``, so
the quantization error and flip rate find it, and the optimizer gets its latent weights in the
``binary`` group. ``bamsprod_size_arg`` names the argument that scales it, for the message when a
run is too large; its size is counted on torch's meta device.
"""

from __future__ import annotations

import math

import bamsprod
from torch import nn


@bamsprod.hparams(
    width={"lo": 4, "hi": 4096, "help": "hidden units"},
    scale={"help": "per-output-channel scale a = mean|w| in the binary layer"},
)
def tiny_binary_mlp(input_shape: tuple[int, int, int], num_classes: int, width: int = 64,
                    scale: bool = True) -> nn.Module:
    """A tiny binary MLP: real Linear, BatchNorm, one BinaryLinear (sign activations),
    BatchNorm, hardtanh, real Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.BatchNorm1d(width),
        bamsprod.BinaryLinear(width, width, scale=scale),
        nn.BatchNorm1d(width),
        nn.Hardtanh(),
        nn.Linear(width, num_classes),
    )


tiny_binary_mlp.bamsprod_size_arg = "width"
