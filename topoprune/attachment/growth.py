"""Degree growth between two snapshots: does a node's degree grow in proportion to its degree
before (docs/design.md, Attachment), and is the degree distribution after the same as before?"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from topoprune.attachment.rates import AttachmentError


@dataclass
class DegreeGrowth:
    """Least-squares line delta_i = intercept + slope d_i(0) over the nodes of a node layer."""

    slope: float
    intercept: float
    pearson_r: float
    r_squared: float
    slope_se: float
    n_nodes: int
    mean_before: float
    mean_after: float

    def to_dict(self) -> dict:
        return asdict(self)


def degree_growth(before: np.ndarray, after: np.ndarray) -> DegreeGrowth:
    """Regress each node's degree increase d(1) - d(0) on its degree d(0).

    Examples
    --------
    >>> growth = degree_growth(np.array([1, 2, 4, 8]), np.array([2, 4, 8, 16]))
    >>> growth.slope, growth.intercept, growth.r_squared
    (1.0, 0.0, 1.0)
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    if before.shape != after.shape or before.ndim != 1:
        raise AttachmentError(
            f"degree vectors of shapes {before.shape} and {after.shape}: not one node layer"
        )
    if before.size < 3 or np.unique(before).size < 2:
        raise AttachmentError(
            "degree growth needs at least 3 nodes with at least 2 distinct degrees before"
        )
    delta = after - before
    fit = stats.linregress(before, delta)
    r = float(fit.rvalue) if np.isfinite(fit.rvalue) else 0.0
    return DegreeGrowth(
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        pearson_r=r,
        r_squared=r * r,
        slope_se=float(fit.stderr),
        n_nodes=int(before.size),
        mean_before=float(before.mean()),
        mean_after=float(after.mean()),
    )


def distribution_change(
    before: np.ndarray, after: np.ndarray, *, n_permutations: int = 2000, seed: int = 0
) -> dict:
    """Two-sample test that the degree distributions before and after are equal.

    The statistic is the KS distance between the two empirical CDFs of the positive degrees; its
    p-value comes from a seeded permutation test (exact for tied integer data, where the
    asymptotic KS distribution is not). The two samples are the same nodes at two times, so
    the test asks whether the distributions differ, not whether nodes changed.

    Examples
    --------
    >>> degrees = np.arange(1, 200)
    >>> distribution_change(degrees, degrees, n_permutations=200)["p"]
    1.0
    """
    a = np.asarray(before, float)
    b = np.asarray(after, float)
    a, b = a[a > 0], b[b > 0]
    if a.size < 2 or b.size < 2:
        raise AttachmentError("each snapshot needs at least 2 nodes of positive degree")
    observed = _ks(a, b)
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([a, b])
    exceed = 0
    for _ in range(n_permutations):
        rng.shuffle(pooled)
        if _ks(pooled[: a.size], pooled[a.size :]) >= observed - 1e-12:
            exceed += 1
    p = (exceed + 1) / (n_permutations + 1)
    return {
        "ks": observed,
        "p": 1.0 if math.isclose(observed, 0.0) else float(p),
        "n_before": int(a.size),
        "n_after": int(b.size),
        "n_permutations": n_permutations,
        "seed": seed,
    }


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))
