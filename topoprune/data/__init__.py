"""Data sets: MNIST, Fashion-MNIST, CIFAR-10 and permuted-MNIST continual-learning tasks.

>>> from topoprune.data import load_dataset  # doctest: +SKIP
>>> mnist = load_dataset("mnist")            # doctest: +SKIP
>>> task_b = load_dataset("permuted-mnist", square=14, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from topoprune.data.cache import data_home
from topoprune.data.cifar import fetch_cifar10, find_cifar10, load_cifar10
from topoprune.data.images import (
    DEFAULT_VAL_SIZE,
    ImageDataset,
    Split,
    load_fashion_mnist,
    load_mnist,
    normalized,
)
from topoprune.data.permuted import (
    DEFAULT_SQUARE,
    central_square_permutation,
    permute_pixels,
    permuted_mnist,
)
from topoprune.data.sources import IDX_DATASETS, fetch_idx, idx_status
from topoprune.registry import Registry

DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset")
DATASETS.register("mnist")(load_mnist)
DATASETS.register("fashion-mnist")(load_fashion_mnist)
DATASETS.register("cifar10")(load_cifar10)
DATASETS.register("permuted-mnist")(permuted_mnist)

# Data sets that live in the cache (permuted-mnist is derived from mnist).
STORED = ("mnist", "fashion-mnist", "cifar10")


def load_dataset(name: str, **kwargs: object) -> ImageDataset:
    """Load a registered data set by name; keyword arguments go to its loader."""
    return DATASETS[name](**kwargs)


def fetch(
    name: str,
    *,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Put a verified copy of a stored data set in the cache; return its folder."""
    if name == "cifar10":
        return fetch_cifar10(data_dir=data_dir, root=root, force=force)
    if name == "permuted-mnist":
        name = "mnist"
    spec = IDX_DATASETS[_stored(name)]
    return fetch_idx(spec, data_dir=data_dir, root=root, force=force)


def _stored(name: str) -> str:
    DATASETS[name]  # unknown names raise, listing the valid ones
    return name


def status(name: str, *, root: str | Path | None = None, verify: bool = True) -> dict:
    """What is known about a stored data set: present, path, source, verified."""
    if name == "cifar10":
        cache = data_home(root) / "cifar10"
        found = find_cifar10(cache) if cache.is_dir() else None
        return {
            "name": name,
            "path": str(cache),
            "present": found is not None,
            "note": "not downloadable: copy it in with `topoprune data fetch cifar10 --data-dir`",
        }
    return idx_status(IDX_DATASETS[_stored(name)], root=root, verify=verify)


__all__ = [
    "DATASETS",
    "DEFAULT_SQUARE",
    "DEFAULT_VAL_SIZE",
    "STORED",
    "ImageDataset",
    "Split",
    "central_square_permutation",
    "data_home",
    "fetch",
    "fetch_cifar10",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "normalized",
    "permute_pixels",
    "permuted_mnist",
    "status",
]
