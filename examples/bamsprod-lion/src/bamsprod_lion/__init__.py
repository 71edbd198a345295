"""bamsprod-lion: the Lion optimizer and a tiny binary MLP, registered as bamsprod plugins
through the entry points in pyproject.toml."""

from bamsprod_lion.lion import Lion, lion
from bamsprod_lion.model import tiny_binary_mlp

__all__ = ["Lion", "lion", "tiny_binary_mlp"]
