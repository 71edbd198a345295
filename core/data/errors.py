"""The one exception the data package raises for missing, corrupt or malformed data."""

from __future__ import annotations

__all__ = ["DatasetError", "install_hint"]


class DatasetError(RuntimeError):
    """A data set is missing, corrupt (checksum mismatch) or malformed.

    The message names the file involved and how to install the data set.
    """


def install_hint(name: str) -> str:
    """How a user gets data set ``name`` onto this machine, as one sentence."""
    if name == "cifar10":
        return (
            "CIFAR-10 ships in no package: extract cifar-10-python.tar.gz yourself and put its "
            "cifar-10-batches-py directory under <data root>/cifar10/ (or pass data_dir)"
        )
    return f"install it with: bamsprod data install {name}"
