"""Reproducible train/validation/test splits, stored as npz (``train_idx``, ``val_idx``, ``test_idx``)."""

from __future__ import annotations

import numbers
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxatom.errors import ConfigError, DataError

__all__ = ["random_split", "load_or_create_split", "SPLIT_KEYS"]

SPLIT_KEYS = ("train_idx", "val_idx", "test_idx")


def _count(size: int | float, n: int, name: str) -> int:
    """A count (int) as is, a fraction (float) of ``n`` rounded."""
    if isinstance(size, float):
        if not 0.0 <= size <= 1.0:
            raise ConfigError(f"the {name} fraction must lie in [0, 1] (or give a count as an int), got {size}")
        return int(round(size * n))
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise ConfigError(f"the {name} size must be a count (int) or a fraction (float), got {size!r}")
    if size < 0:
        raise ConfigError(f"the {name} size must not be negative, got {size}")
    return int(size)


def _fit_rounding(sizes: tuple, counts: list[int], n: int) -> list[int]:
    """``counts`` with rounding up of fractions undone where fractions adding up to at most 1 would otherwise ask for
    more than ``n`` structures (0.9 and 0.1 of 55 round to 50 + 6): the test, then validation, then training count
    of a fraction gives way."""
    fractions = [isinstance(size, float) for size in sizes]
    if sum(size for size, f in zip(sizes, fractions, strict=True) if f) > 1.0 + 1e-9:
        return counts
    excess = sum(counts) - n
    for index in (2, 1, 0):
        if excess > 0 and fractions[index]:
            cut = min(excess, counts[index])
            counts[index] -= cut
            excess -= cut
    return counts


def random_split(
    n: int, train: int | float, val: int | float, test: int | float | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Split ``range(n)`` at random into disjoint index arrays.

    Sizes are absolute counts (int) or fractions of ``n`` (float ≤ 1); ``test=None`` takes the rest.
    """
    n_train, n_val = _count(train, n, "train"), _count(val, n, "validation")
    n_test = 0 if test is None else _count(test, n, "test")
    n_train, n_val, n_test = _fit_rounding((train, val, test), [n_train, n_val, n_test], n)
    n_test = n - n_train - n_val if test is None else n_test
    if n_train + n_val + n_test > n or n_test < 0:
        raise ConfigError(
            f"the split asks for {n_train} + {n_val} + {max(n_test, 0)} structures but the data set has only {n}; "
            "ask for fewer (or give fractions)"
        )
    order = np.random.default_rng(seed).permutation(n)
    return {
        "train_idx": np.sort(order[:n_train]),
        "val_idx": np.sort(order[n_train : n_train + n_val]),
        "test_idx": np.sort(order[n_train + n_val : n_train + n_val + n_test]),
    }


def _validate(split: dict[str, np.ndarray], n: int, path: Path) -> None:
    for key, indices in split.items():
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise DataError(
                f"{key} in {path} refers to structures outside the data set (0..{n - 1}); the split was made for "
                f"other data: remove {path} to make a new split"
            )
        if len(np.unique(indices)) != len(indices):
            raise DataError(f"{key} in {path} repeats indices; remove {path} to make a new split")
    keys = list(split)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            if np.intersect1d(split[keys[a]], split[keys[b]]).size:
                raise DataError(
                    f"{keys[a]} and {keys[b]} in {path} overlap; a split must be disjoint: remove {path} to make a "
                    "new split"
                )


def _read_split(path: Path) -> dict[str, np.ndarray]:
    """The index arrays of a split file; a :class:`DataError` naming the file if it is unreadable or incomplete."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"the split file {path} is not an npz archive; remove it to make a new split")
    try:
        with np.load(path) as data:
            missing = [k for k in SPLIT_KEYS if k not in data.files]
            split = {k: np.asarray(data[k]) for k in SPLIT_KEYS if k in data.files}
    except Exception as err:  # np.load raises several unrelated types on a corrupt file
        raise DataError(
            f"cannot read the split file {path} ({type(err).__name__}: {err}); remove it to make a new split"
        ) from err
    if missing:
        raise DataError(f"the split file {path} lacks {', '.join(missing)}; remove it to make a new split")
    bad = [k for k, v in split.items() if v.ndim != 1 or (v.size and not np.issubdtype(v.dtype, np.integer))]
    if bad:
        raise DataError(f"{', '.join(bad)} in {path} are not lists of integer indices; remove it to make a new split")
    return {k: v.astype(np.int64) for k, v in split.items()}


def load_or_create_split(
    path: str | os.PathLike,
    n: int,
    train: int | float,
    val: int | float,
    test: int | float | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Reuse the split file at ``path`` (validated against ``n`` and the requested sizes) or create and save one."""
    path = Path(path)
    requested = random_split(n, train, val, test, seed)
    if path.exists():
        split = _read_split(path)
        _validate(split, n, path)
        sizes = {k: len(v) for k, v in split.items()}
        wanted = {k: len(v) for k, v in requested.items()}
        if sizes != wanted:
            raise ConfigError(
                f"the split file {path} has sizes {sizes}, but {wanted} were asked for; "
                "pass matching sizes or remove the file to make a new split"
            )
        return split
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.npz")
    np.savez(partial, **requested)
    os.replace(partial, path)
    return requested
