"""The data the studies train on."""

from __future__ import annotations

from dataclasses import replace

from topoprune.data import ImageDataset, load_dataset
from topoprune.data.images import Split


def subset(data: ImageDataset, train_subset: int = 0) -> ImageDataset:
    """``data`` with its training split cut to the first ``train_subset`` images (0: all)."""
    if not train_subset:
        return data
    n = train_subset
    return replace(data, train=Split(data.train.images[:n], data.train.labels[:n]))


def mnist(train_subset: int = 0) -> ImageDataset:
    """MNIST, its training split cut to the first ``train_subset`` images (0: all; quick modes)."""
    return subset(load_dataset("mnist"), train_subset)
