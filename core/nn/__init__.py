"""Binary layers and the models built from them."""

from bamsprod.core.nn.binary import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binary_weights,
    is_binary,
    ste_sign,
)
from bamsprod.core.nn.models import BinaryMLP, BinaryNet, BiRealResNet18, build_model, model_names

__all__ = [
    "BiRealResNet18",
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryMLP",
    "BinaryNet",
    "SignSTE",
    "binary_weights",
    "build_model",
    "is_binary",
    "model_names",
    "ste_sign",
]
