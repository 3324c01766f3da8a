"""Preferential attachment between two mask snapshots of one layer (docs/design.md, Attachment).

For the pairs (i, j) not connected before, the rate at which connections are created is measured
against k = d_i(0) d_j(0), the product of the two nodes' degrees before. Rates are binned in k
(log bins) for figures; the exponent beta of rate ~ k^beta is fitted by maximum likelihood on
the binned counts (created ~ Poisson(candidates x e^a x k^beta), so empty bins count as the
evidence they are, rather than being dropped from a log-log regression), with a bootstrap over
the layer's output nodes for its confidence interval. beta = 1: connections are created like
d1 d2 (preferential attachment); beta = 0: uniformly at random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from topoprune.errors import TopopruneError


class AttachmentError(TopopruneError):
    """Snapshots or degrees that cannot be compared."""


def created_edges(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Connections present after and absent before (``after & ~before``).

    Examples
    --------
    >>> created_edges(np.array([[1, 0], [0, 0]], bool), np.array([[1, 1], [0, 1]], bool)).sum()
    np.int64(2)
    """
    before, after = _pair(before, after)
    return after & ~before


def removed_edges(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Connections present before and absent after (``before & ~after``)."""
    before, after = _pair(before, after)
    return before & ~after


def _pair(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise AttachmentError(
            f"the snapshots have different shapes {before.shape} and {after.shape}: "
            "they are not the same layer"
        )
    return before.astype(bool), after.astype(bool)


@dataclass
class AttachmentRate:
    """Created connections against k = d_i(0) d_j(0) for one layer.

    ``bins``: per log bin of k the bin edges, candidate pairs, created connections, rate and the
    mean k of its candidates. ``beta`` (+ 95% interval): the fitted exponent of rate ~ k^beta;
    ``beta_cumulative``: the exponent from the cumulative form kappa(k) = sum of rate dk up to
    k ~ k^(beta + 1) (Jeong, Neda and Barabasi 2003), less noisy, with no interval.
    ``dead_pairs``: candidates with a degree-0 node (k = 0, outside the log bins) and
    ``created_dead``: connections created on them.
    """

    edges: np.ndarray
    candidates: np.ndarray
    created: np.ndarray
    mean_k: np.ndarray
    beta: float
    beta_low: float
    beta_high: float
    beta_cumulative: float
    n_created: int
    n_removed: int
    n_candidates: int
    dead_pairs: int
    created_dead: int
    n_boot: int
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.candidates > 0, self.created / self.candidates, np.nan)

    def to_dict(self) -> dict:
        return {
            "beta": self.beta,
            "beta_ci95": [self.beta_low, self.beta_high],
            "beta_cumulative": self.beta_cumulative,
            "n_created": self.n_created,
            "n_removed": self.n_removed,
            "n_candidates": self.n_candidates,
            "dead_pairs": self.dead_pairs,
            "created_dead": self.created_dead,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "bins": {
                "low": self.edges[:-1].tolist(),
                "high": self.edges[1:].tolist(),
                "candidates": self.candidates.tolist(),
                "created": self.created.tolist(),
                "mean_k": self.mean_k.tolist(),
            },
            "notes": self.notes,
        }


def attachment_rate(
    before: np.ndarray,
    after: np.ndarray,
    source_degree: np.ndarray,
    target_degree: np.ndarray,
    *,
    bins_per_decade: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
) -> AttachmentRate:
    """How the creation of connections in one layer depends on d_i(0) d_j(0).

    Parameters
    ----------
    before, after : numpy.ndarray
        Boolean masks ``(n_out, n_in)`` of the layer at snapshots 0 and 1.
    source_degree, target_degree : numpy.ndarray
        Degrees at snapshot 0 of the input nodes (``n_in``) and output nodes (``n_out``), taken
        from the whole network (total degree of each node in its node layer).
    bins_per_decade : int
        Log bins of k per decade.
    n_boot : int
        Bootstrap replicates (output nodes resampled with replacement) for the interval of beta.
    seed : int
        Seed of the bootstrap.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> d_in, d_out = rng.integers(1, 50, 400), rng.integers(1, 50, 300)
    >>> p = 1e-4 * np.outer(d_out, d_in)  # created with probability proportional to d_i d_j
    >>> before = np.zeros((300, 400), bool)
    >>> after = rng.random((300, 400)) < p
    >>> result = attachment_rate(before, after, d_in, d_out, n_boot=200)
    >>> round(result.beta, 1)
    1.0
    """
    before, after = _pair(before, after)
    if before.ndim != 2:
        raise AttachmentError(f"expected (n_out, n_in) masks, got shape {before.shape}")
    n_out, n_in = before.shape
    source_degree = np.asarray(source_degree, float)
    target_degree = np.asarray(target_degree, float)
    if source_degree.shape != (n_in,) or target_degree.shape != (n_out,):
        raise AttachmentError(
            f"degrees of shape {source_degree.shape} (inputs) and {target_degree.shape} "
            f"(outputs) do not fit masks of shape {before.shape}"
        )
    candidate = ~before
    created = after & ~before
    k = np.outer(target_degree, source_degree)
    positive = k > 0
    notes = []
    if not created.any():
        raise AttachmentError(
            "no connection was created between the snapshots: nothing to measure (did the "
            "masked weights receive gradients?)"
        )
    live = candidate & positive
    if not live.any():
        raise AttachmentError("no unconnected pair of live nodes: nothing to measure")
    log_k = np.log10(k[live])
    low = math.floor(log_k.min() * bins_per_decade) / bins_per_decade
    high = math.ceil((log_k.max() + 1e-9) * bins_per_decade) / bins_per_decade
    edges = 10 ** np.arange(low, high + 0.5 / bins_per_decade, 1 / bins_per_decade)
    if edges.size < 3:
        raise AttachmentError(
            "the degree products span less than two bins: no slope can be measured"
        )
    n_bins = edges.size - 1
    # per output node and bin: candidates, created, sum of log k (the bootstrap resamples rows)
    index = np.full(k.shape, -1)
    index[positive] = np.clip(np.searchsorted(edges, k[positive], side="right") - 1, 0, n_bins - 1)
    rows = np.repeat(np.arange(n_out), n_in).reshape(n_out, n_in)
    flat = rows[live] * n_bins + index[live]
    size = n_out * n_bins
    cand_rows = np.bincount(flat, minlength=size).reshape(n_out, n_bins).astype(float)
    made_rows = np.bincount(flat, weights=created[live], minlength=size).reshape(n_out, n_bins)
    logk_rows = np.bincount(flat, weights=np.log(k[live]), minlength=size).reshape(n_out, n_bins)
    cand, made, logk_sum = cand_rows.sum(0), made_rows.sum(0), logk_rows.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_log_k = np.where(cand > 0, logk_sum / cand, np.nan)
    beta = _poisson_slope(cand, made, mean_log_k)
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, n_out, n_out), minlength=n_out).astype(float)
        c, m, s = weights @ cand_rows, weights @ made_rows, weights @ logk_rows
        with np.errstate(invalid="ignore", divide="ignore"):
            value = _poisson_slope(c, m, np.where(c > 0, s / c, np.nan))
        if np.isfinite(value):
            replicates.append(value)
    if n_boot and len(replicates) < n_boot:
        notes.append(f"{n_boot - len(replicates)} bootstrap replicates had no slope")
    lo, hi = np.percentile(replicates, [2.5, 97.5]) if replicates else (math.nan, math.nan)
    dead = candidate & ~positive
    return AttachmentRate(
        edges=edges,
        candidates=cand.astype(np.int64),
        created=made.astype(np.int64),
        mean_k=np.exp(mean_log_k),
        beta=float(beta),
        beta_low=float(lo),
        beta_high=float(hi),
        beta_cumulative=_cumulative_slope(edges, cand, made),
        n_created=int(created.sum()),
        n_removed=int((before & ~after).sum()),
        n_candidates=int(candidate.sum()),
        dead_pairs=int(dead.sum()),
        created_dead=int((created & dead).sum()),
        n_boot=n_boot,
        seed=seed,
        notes=notes,
    )


def _poisson_slope(candidates: np.ndarray, created: np.ndarray, log_k: np.ndarray) -> float:
    """MLE of beta in created ~ Poisson(candidates e^(a + beta log k)), by Newton's method."""
    use = candidates > 0
    n, y, x = candidates[use], created[use], log_k[use]
    if y.sum() == 0 or np.unique(x).size < 2:
        return math.nan
    x = x - np.average(x, weights=n)  # centred: a and beta nearly decouple
    a, b = math.log(y.sum() / n.sum()), 0.0
    for _ in range(100):
        mu = n * np.exp(np.clip(a + b * x, -700, 700))
        grad = np.array([np.sum(y - mu), np.sum((y - mu) * x)])
        hess = np.array([[mu.sum(), (mu * x).sum()], [(mu * x).sum(), (mu * x * x).sum()]])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return math.nan
        a, b = a + step[0], b + step[1]
        if abs(step[1]) < 1e-10:
            break
    return float(b)


def _cumulative_slope(edges: np.ndarray, candidates: np.ndarray, created: np.ndarray) -> float:
    """beta from kappa(k) = integral of the rate from the first bin edge k0 to k, which for a
    rate ~ k^beta is A (k^(beta+1) - k0^(beta+1)); fitted in log space with A profiled out
    (plain log-log slopes of kappa are biased by the lower limit)."""
    use = candidates > 0
    rate = np.zeros_like(created, dtype=float)
    rate[use] = created[use] / candidates[use]
    kappa = np.cumsum(rate * np.diff(edges))
    top, k0 = edges[1:], edges[0]
    keep = (kappa > 0) & use
    if keep.sum() < 3:
        return math.nan
    log_kappa, top = np.log(kappa[keep]), top[keep]

    def loss(beta: float) -> float:
        shape = np.log(top ** (beta + 1) - k0 ** (beta + 1)) if beta > -1 else None
        if shape is None or not np.all(np.isfinite(shape)):
            return math.inf
        residual = log_kappa - shape
        return float(np.sum((residual - residual.mean()) ** 2))

    found = optimize.minimize_scalar(loss, bounds=(-0.99, 5.0), method="bounded")
    return float(found.x)
