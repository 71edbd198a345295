"""Data sets that need no files: scikit-learn's bundled 8x8 digits and a synthetic problem."""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["digits_arrays", "synthetic_arrays", "DIGITS_TEST", "SPLIT_SEED"]

SPLIT_SEED = 0
DIGITS_TEST = 360  # 20 % of 1,797, stratified


@cache
def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, test_x, test_y)``: float32 ``N x 1 x 8 x 8`` standardised with the
    training split's mean and std, int64 labels; a fixed stratified 1437/360 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST, stratify=y, random_state=SPLIT_SEED
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr, x_te = ((a - mean) / std for a in (x_tr, x_te))
    out = (x_tr.reshape(-1, 1, 8, 8), y_tr, x_te.reshape(-1, 1, 8, 8), y_te)
    arrays = tuple(
        np.ascontiguousarray(a, dtype=np.float32 if i % 2 == 0 else np.int64)
        for i, a in enumerate(out)
    )
    for a in arrays:
        a.setflags(write=False)
    return arrays  # type: ignore[return-value]


@cache
def synthetic_arrays(
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 20190101,
) -> tuple[np.ndarray, ...]:
    """A deterministic separable-ish problem: each class a random ``+-1`` prototype image,
    each example its prototype plus Gaussian noise (std 2.5, so a linear model gets most but
    not all right). Features are standardised; labels are balanced and shuffled."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    protos = rng.choice([-1.0, 1.0], size=(classes, d))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % classes)
        x = protos[y] + 2.5 * rng.standard_normal((n, d))
        return x, y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    mean, std = x_tr.mean(), x_tr.std()
    arrays = (
        ((x_tr - mean) / std).astype(np.float32).reshape(n_train, *shape),
        y_tr.astype(np.int64),
        ((x_te - mean) / std).astype(np.float32).reshape(n_test, *shape),
        y_te.astype(np.int64),
    )
    for a in arrays:
        a.setflags(write=False)
    return arrays
