"""Shared fixtures: real MNIST (fetched once into the user's cache), and temporary caches."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from topoprune.data import ImageDataset, load_mnist
from topoprune.runner.task import WORKER


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


def _kill_when_started(root: Path, key: str, killed: list[int], after: str | None = None):
    """SIGKILL the process running ``key`` once it has started (and, with ``after``, once that
    file exists in its temporary folder); the pids killed go in ``killed``."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for worker in root.glob(f"{key}-*.partial/{WORKER}"):
                if after is not None and not (worker.parent / after).exists():
                    continue
                try:
                    pid = json.loads(worker.read_text())["pid"]
                except (OSError, ValueError):
                    continue
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def kill_when_started():
    """``kill_when_started(root, key, killed, after=None)``: a thread that SIGKILLs the worker
    running run ``key`` under ``root`` (the runner's worker.json names it)."""
    return _kill_when_started


@pytest.fixture
def ray_temp_dir(tmp_path_factory) -> str:
    """Ray's session files under the test's temporary folder (kept short: socket paths are
    limited to 107 characters)."""
    return str(tmp_path_factory.mktemp("ray"))
