"""Weight sharing (Han et al. 2016, section 3): a layer's kept weights replaced by the centroids of
a one-dimensional k-means with k = 2**bits clusters, so each weight is stored as a cluster index.

Plain numpy; the trained centroids (fine-tuning the codebook by summed gradients) are the
``trained-quantization`` pruning method in :mod:`topoprune.prune.quantization`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topoprune.errors import TopopruneError

CENTROID_INITS = ("linear", "density", "random")
MAX_BITS = 16


@dataclass(frozen=True)
class SharedWeights:
    """A codebook (float32, sorted) and one index into it per weight (same order as given)."""

    codebook: np.ndarray
    indices: np.ndarray
    iterations: int  # Lloyd iterations run (0 when the values already fit in the codebook)

    def values(self) -> np.ndarray:
        """The quantised weights, ``codebook[indices]``."""
        return self.codebook[self.indices]


def initial_centroids(
    values: np.ndarray, k: int, init: str = "linear", *, seed: int = 0
) -> np.ndarray:
    """The k starting centroids of Han et al.'s three initialisations, sorted.

    ``linear`` spaces them evenly over [min, max] (the paper's best: large weights, which matter
    most, keep centroids of their own); ``density`` at the quantiles (i + 1/2) / k, the CDF's
    y-axis split evenly (few centroids land on large weights); ``random`` (Forgy) picks k
    distinct observed values.

    Examples
    --------
    >>> initial_centroids(np.array([-1.0, 0.0, 0.5, 3.0]), 3).tolist()
    [-1.0, 1.0, 3.0]
    >>> initial_centroids(np.array([0.0, 1.0, 2.0, 4.0, 8.0]), 2, "density").tolist()
    [1.0, 4.0]
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if init not in CENTROID_INITS:
        raise TopopruneError(
            f"centroid init must be one of {', '.join(CENTROID_INITS)}, got {init!r}"
        )
    if values.size == 0:
        raise TopopruneError("cannot share weights of a layer with no kept weights")
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    distinct = np.unique(values)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(distinct.size, size=min(k, distinct.size), replace=False)
    return np.sort(distinct[chosen])


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for each value (ties to the lower one).

    >>> assign(np.array([-2.0, 0.4, 0.6, 9.0]), np.array([0.0, 1.0])).tolist()
    [0, 0, 1, 1]
    """
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(boundaries, values, side="left")


def kmeans_1d(
    values: np.ndarray,
    k: int,
    *,
    init: str = "linear",
    seed: int = 0,
    max_iterations: int = 300,
) -> SharedWeights:
    """Lloyd's k-means on scalars: assign to the nearest centroid, move centroids to their
    cluster means, until no assignment changes. An empty cluster keeps its centroid.

    Examples
    --------
    >>> shared = kmeans_1d(np.array([0.0, 0.1, 1.0, 1.2]), 2)
    >>> shared.codebook.tolist(), shared.indices.tolist()
    ([0.05000000074505806, 1.100000023841858], [0, 0, 1, 1])
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if k < 1:
        raise TopopruneError(f"k-means needs k >= 1 clusters, got {k}")
    centroids = initial_centroids(values, k, init, seed=seed)
    labels = assign(values, centroids)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        sums = np.bincount(labels, weights=values, minlength=centroids.size)
        counts = np.bincount(labels, minlength=centroids.size)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids = np.sort(centroids)
        new = assign(values, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
    codebook = centroids.astype(np.float32)
    return SharedWeights(codebook, labels.astype(np.int64), iterations)


def share_weights(
    values: np.ndarray, bits: int, *, init: str = "linear", seed: int = 0
) -> SharedWeights:
    """A codebook of at most ``2**bits`` entries for ``values`` (a layer's kept weights).

    Values that already take at most ``2**bits`` distinct float32 values (a model after trained
    quantisation) get exactly those values as the codebook, so compressing such a model is
    lossless; otherwise k-means with ``init``.

    Examples
    --------
    >>> shared = share_weights(np.array([0.5, -0.25, 0.5], dtype=np.float32), bits=1)
    >>> shared.codebook.tolist(), shared.indices.tolist(), shared.iterations
    ([-0.25, 0.5], [1, 0, 1], 0)
    """
    if not 1 <= bits <= MAX_BITS:
        raise TopopruneError(f"weight bits must be in [1, {MAX_BITS}], got {bits}")
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size == 0:
        raise TopopruneError("cannot share weights of a layer with no kept weights")
    if not np.isfinite(values).all():
        raise TopopruneError("cannot share weights: the layer has NaN or infinite weights")
    # distinct bit patterns, so that -0.0 and 0.0 stay apart and the values come back exactly
    patterns, inverse = np.unique(values.view(np.uint32), return_inverse=True)
    if patterns.size <= 2**bits:
        distinct = patterns.view(np.float32)
        order = np.argsort(distinct, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return SharedWeights(distinct[order], rank[inverse.ravel()].astype(np.int64), 0)
    return kmeans_1d(values, 2**bits, init=init, seed=seed)
