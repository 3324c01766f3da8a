"""Shared fixtures: real MNIST (fetched once into the user's cache), and temporary caches."""

from __future__ import annotations

import pytest

from topoprune.data import ImageDataset, load_mnist


@pytest.fixture(scope="session")
def mnist() -> ImageDataset:
    """Real, verified MNIST from the cache (`make test` fetches it; fetched here if absent)."""
    return load_mnist()


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """An empty cache root for tests that fetch; the user's cache is never touched."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TOPOPRUNE_DATA", str(root))
    monkeypatch.delenv("TOPOPRUNE_DATA_DIR", raising=False)
    return root


@pytest.fixture
def pruned_lenet300():
    """LeNet-300-100 pruned (90% of each layer, by magnitude) with torch.nn.utils.prune."""
    import torch
    from torch import nn
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    for module in model:
        if isinstance(module, nn.Linear):
            prune.l1_unstructured(module, "weight", amount=0.9)
    return model
