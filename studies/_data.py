"""The data the studies train on."""

from __future__ import annotations

from dataclasses import replace

from topoprune.data import ImageDataset, load_dataset
from topoprune.data.images import Split


def mnist(train_subset: int = 0) -> ImageDataset:
    """MNIST, its training split cut to the first ``train_subset`` images (0: all; quick modes)."""
    data = load_dataset("mnist")
    if train_subset:
        n = train_subset
        data = replace(data, train=Split(data.train.images[:n], data.train.labels[:n]))
    return data
