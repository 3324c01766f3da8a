"""Permuted-MNIST tasks for continual learning: pixels inside a central square are shuffled.

Task B of the preferential-attachment and progressive-network studies is MNIST whose pixels
inside the central ``square x square`` window are permuted by one fixed, seeded permutation;
``square=28`` is the fully permuted MNIST of Goodfellow et al. (2013).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from topoprune.data.images import DEFAULT_VAL_SIZE, ImageDataset, Split, load_mnist
from topoprune.errors import DataError

DEFAULT_SQUARE = 14
SIDE = 28


def central_square_permutation(square: int, seed: int, side: int = SIDE) -> np.ndarray:
    """Flat pixel indices ``perm`` such that ``image.flat[perm]`` is the permuted image.

    Only the pixels of the central ``square x square`` window move (its top-left corner is at
    ``(side - square) // 2`` in both axes); the rest map to themselves.

    Examples
    --------
    >>> perm = central_square_permutation(2, seed=0, side=4)
    >>> sorted(perm[[5, 6, 9, 10]].tolist())
    [5, 6, 9, 10]
    >>> perm[[0, 3, 12, 15]].tolist()
    [0, 3, 12, 15]
    """
    if not 1 <= square <= side:
        raise DataError(f"square must be between 1 and {side}, got {square}")
    start = (side - square) // 2
    grid = np.arange(side * side).reshape(side, side)
    inside = grid[start : start + square, start : start + square].ravel()
    perm = np.arange(side * side)
    perm[inside] = inside[np.random.default_rng(seed).permutation(inside.size)]
    return perm


def permute_pixels(images: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """Apply a flat pixel permutation to ``(N, C, H, W)`` images (each channel alike)."""
    n, c, h, w = images.shape
    if perm.shape != (h * w,):
        raise DataError(f"permutation of {perm.size} pixels for {h}x{w} images")
    index = torch.from_numpy(perm)
    return images.reshape(n, c, h * w)[:, :, index].reshape(n, c, h, w)


def permuted_mnist(
    square: int = DEFAULT_SQUARE,
    seed: int = 0,
    *,
    base: ImageDataset | None = None,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    normalize: bool = False,
) -> ImageDataset:
    """MNIST with the central ``square x square`` pixels permuted by a fixed seeded permutation.

    Parameters
    ----------
    square : int
        Side of the permuted central window (default 14; 28 permutes every pixel).
    seed : int
        Seed of the permutation: the same seed is the same task.
    base : ImageDataset, optional
        An already loaded MNIST (saves reloading it); otherwise MNIST is loaded with ``data_dir``,
        ``root``, ``val_size`` and ``normalize``. Labels and splits are those of the base.
    """
    if base is None:
        base = load_mnist(data_dir=data_dir, root=root, val_size=val_size, normalize=normalize)
    if base.input_shape[1:] != (SIDE, SIDE):
        raise DataError(f"permuted_mnist needs 28x28 images, got {base.input_shape}")
    perm = central_square_permutation(square, seed)

    def apply(split: Split) -> Split:
        return Split(permute_pixels(split.images, perm), split.labels)

    return replace(
        base,
        name=f"permuted-mnist(square={square},seed={seed})",
        train=apply(base.train),
        val=apply(base.val),
        test=apply(base.test),
        info={**base.info, "base": base.name, "square": square, "seed": seed},
    )
