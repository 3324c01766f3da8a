"""Where training batches come from: in-memory splits or any iterable of ``(inputs, targets)``.

Both give every epoch a fixed order from (seed, stage, epoch), so a run resumed at an epoch
boundary sees the batches an uninterrupted run saw:

- :class:`SplitBatches` shuffles an in-memory :class:`~topoprune.data.images.Split` with its own
  generator;
- :class:`LoaderBatches` iterates any iterable (a ``DataLoader``) after seeding torch's global
  generator from (seed, stage, epoch): a ``DataLoader`` without its own generator draws its
  shuffle (and its workers' seeds) from it, and so do dropout layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from topoprune.data.images import ImageDataset, Split
from topoprune.errors import TopopruneError

Batch = tuple[Any, Any]


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    return ((seed * 1009 + stage) * 100_003 + epoch) % 2**63


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(epoch_seed(seed, stage, epoch))
    return torch.randperm(n, generator=generator)


def to_device(value: Any, device: str) -> Any:
    """Tensors (also inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


class SplitBatches:
    """Shuffled mini-batches of an in-memory split."""

    def __init__(self, split: Split, batch_size: int, device: str = "cpu") -> None:
        if len(split) == 0:
            raise TopopruneError("the training split is empty")
        self.split, self.batch_size, self.device = split, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def epoch(self, seed: int, stage: int, epoch: int) -> Iterator[Batch]:
        torch.manual_seed(epoch_seed(seed, stage, epoch))  # dropout and other global draws
        order = epoch_order(len(self.split), seed, stage, epoch)
        for start in range(0, len(order), self.batch_size):
            yield self._take(order[start : start + self.batch_size])

    def draw(self, examples: int, key: int) -> Iterator[Batch]:
        """``examples`` training examples chosen at random from ``key`` (scoring batches)."""
        generator = torch.Generator().manual_seed(key % 2**63)
        chosen = torch.randperm(len(self.split), generator=generator)[:examples]
        for start in range(0, len(chosen), self.batch_size):
            yield self._take(chosen[start : start + self.batch_size])

    def _take(self, index: torch.Tensor) -> Batch:
        images = self.split.images[index].to(self.device)
        return images, self.split.labels[index].to(self.device)


class LoaderBatches:
    """Any re-iterable of ``(inputs, targets)`` batches (a ``DataLoader``, a list)."""

    def __init__(self, batches: Iterable, device: str = "cpu") -> None:
        if isinstance(batches, Iterator):
            raise TopopruneError(
                "training data must be re-iterable (a DataLoader or a list of batches), not a "
                "one-shot iterator or generator"
            )
        self.batches, self.device = batches, device

    def __len__(self) -> int:
        try:
            return len(self.batches)  # type: ignore[arg-type]
        except TypeError:
            return 0  # unknown: schedules that need it say so

    def epoch(self, seed: int, stage: int, epoch: int) -> Iterator[Batch]:
        torch.manual_seed(epoch_seed(seed, stage, epoch))
        for batch in self.batches:
            yield self._unpack(batch)

    def draw(self, examples: int, key: int) -> Iterator[Batch]:
        """The first ``examples`` examples of an epoch shuffled from ``key``; torch's global
        generator is restored afterwards, so scoring does not shift the run's own draws."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key % 2**63)
            seen = 0
            for batch in self.batches:
                inputs, targets = self._unpack(batch)
                size = len(targets)
                if seen + size > examples:
                    keep = examples - seen
                    inputs, targets = inputs[:keep], targets[:keep]
                    size = keep
                if size:
                    yield inputs, targets
                seen += size
                if seen >= examples:
                    return

    def _unpack(self, batch: Any) -> Batch:
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TopopruneError(
                f"training batches must be (inputs, targets) pairs, got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
            )
        return to_device(batch[0], self.device), to_device(batch[1], self.device)


def training_batches(data: Any, batch_size: int, device: str) -> SplitBatches | LoaderBatches:
    """The batch source of ``data``: an :class:`ImageDataset` (its training split), a
    :class:`Split`, or any re-iterable of ``(inputs, targets)``."""
    if isinstance(data, ImageDataset):
        return SplitBatches(data.train, batch_size, device)
    if isinstance(data, Split):
        return SplitBatches(data, batch_size, device)
    if isinstance(data, SplitBatches | LoaderBatches):
        return data
    if not isinstance(data, Iterable):
        raise TopopruneError(
            f"cannot train on a {type(data).__name__}: give an iterable of "
            "(inputs, targets) batches, e.g. a DataLoader"
        )
    return LoaderBatches(data, device)
