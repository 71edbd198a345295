"""Binary layers and the models built from them."""

from core.nn.binary import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binary_weights,
    is_binary,
    ste_sign,
)

__all__ = ["BinaryConv2d", "BinaryLinear", "SignSTE", "binary_weights", "is_binary", "ste_sign"]
