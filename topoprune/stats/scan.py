"""Choosing xmin by KS minimisation (Clauset, Shalizi & Newman 2009), on sufficient statistics.

Two KS conventions for discrete data, both over the fitted range:

- ``observed`` (default; plfit.py and powerlaw 2.0.0): ``max |P(X < x) - S(x)|`` over the distinct
  observed values x, with S(x) the fraction of the data below x;
- ``integers`` (Clauset et al.'s definition, ``sup`` over the real line): ``max |F(k) - S(k)|``
  over every integer k in range with F, S the CDFs ``P(X <= k)``. Between observed values the
  empirical CDF is flat and the model's increases, so only the points ``u`` and ``u + 1`` of each
  observed ``u`` are needed; the result is ``max(observed, max |P(X <= u) - S(<= u)|)``.

Continuous data use the usual ``max(i/n - F(x_i), F(x_i) - (i-1)/n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topoprune.stats.bounded_power_law import cdf_below, power_sum, solve_alpha

KS_CONVENTIONS = ("observed", "integers")
_SHORT_GAP = 4  # gaps between observed values up to this are summed term by term


@dataclass(frozen=True)
class Histogram:
    """Distinct positive values with their counts, ascending (sufficient for every fit here)."""

    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Histogram:
        values, counts = np.unique(x, return_counts=True)
        return cls(values.astype(float), counts.astype(np.int64))

    def restrict(self, xmin: float, xmax: float) -> Histogram:
        keep = (self.values >= xmin) & (self.values <= xmax)
        return Histogram(self.values[keep], self.counts[keep])

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def sum_log(self) -> float:
        return float(self.counts @ np.log(self.values))


def ks_distance(
    hist: Histogram, alpha: float, xmin: float, xmax: float, discrete: bool, ks: str = "observed"
) -> float:
    """KS distance between the data in ``[xmin, xmax]`` and the fitted power law."""
    tail = hist.restrict(xmin, xmax)
    n = tail.n
    if n == 0:
        return float("nan")
    below = np.concatenate([[0], np.cumsum(tail.counts)[:-1]]) / n  # S(X < u)
    upto = np.cumsum(tail.counts) / n  # S(X <= u)
    if discrete:
        model_below = cdf_below(tail.values, alpha, xmin, xmax, True)
        distance = np.max(np.abs(model_below - below))
        if ks == "integers":
            model_upto = cdf_below(tail.values + 1, alpha, xmin, xmax, True)
            distance = max(distance, np.max(np.abs(model_upto - upto)))
        return float(distance)
    model = _continuous_cdf(tail.values, alpha, xmin, xmax)
    return float(max(np.max(upto - model), np.max(model - below)))


def _continuous_cdf(x: np.ndarray, alpha: float, xmin: float, xmax: float) -> np.ndarray:
    t = 1.0 - alpha
    if np.isinf(xmax):
        return 1.0 - (x / xmin) ** t
    if abs(t) < 1e-12:
        return np.log(x / xmin) / np.log(xmax / xmin)
    return np.expm1(t * np.log(x / xmin)) / np.expm1(t * np.log(xmax / xmin))


@dataclass(frozen=True)
class ScanResult:
    candidates: np.ndarray
    alphas: np.ndarray
    ks: np.ndarray
    n_tail: np.ndarray

    def best(self) -> int | None:
        """Index of the smallest KS distance (ties: the smallest xmin); None if none is finite."""
        finite = np.isfinite(self.ks)
        if not finite.any():
            return None
        return int(np.argmin(np.where(finite, self.ks, np.inf)))


def scan_xmin(
    hist: Histogram, xmax: float, discrete: bool, ks: str = "observed", min_tail: int = 10
) -> ScanResult:
    """Fit alpha at every candidate xmin (each distinct value but the largest in range with at
    least ``min_tail`` points from it up to ``xmax``) and measure the KS distance of each."""
    data = hist.restrict(-np.inf, xmax)
    if discrete:
        batch = scan_batch(
            data.values,
            data.counts,
            np.zeros(data.values.size, np.int64),
            np.array([xmax], float),
            ks,
            min_tail,
        )
        return ScanResult(batch.candidates, batch.alphas, batch.ks, batch.n_tail)
    values, counts = data.values, data.counts
    n_tail = np.cumsum(counts[::-1])[::-1]
    sum_log = np.cumsum((counts * np.log(values))[::-1])[::-1]
    keep = (np.arange(values.size) < values.size - 1) & (n_tail >= min_tail)
    candidates = values[keep]
    if candidates.size == 0:
        return ScanResult(candidates, candidates, candidates, n_tail[keep])
    alphas = solve_alpha(sum_log[keep] / n_tail[keep], candidates, xmax, False)
    distances = np.array(
        [
            ks_distance(data, a, c, xmax, False, ks) if np.isfinite(a) else np.nan
            for a, c in zip(alphas, candidates)
        ]
    )
    return ScanResult(candidates, alphas, distances, n_tail[keep])


@dataclass(frozen=True)
class BatchScan:
    """Per candidate of many samples at once: its sample, xmin, alpha, KS distance, tail size."""

    sample: np.ndarray
    candidates: np.ndarray
    alphas: np.ndarray
    ks: np.ndarray
    n_tail: np.ndarray

    def best_ks(self, n_samples: int) -> np.ndarray:
        """Smallest KS distance of each sample (NaN where it has no fittable candidate)."""
        best = np.full(n_samples, np.inf)
        np.minimum.at(best, self.sample, np.where(np.isfinite(self.ks), self.ks, np.inf))
        return np.where(np.isfinite(best), best, np.nan)


def scan_batch(
    values: np.ndarray,
    counts: np.ndarray,
    sample: np.ndarray,
    upper: np.ndarray,
    ks: str = "observed",
    min_tail: int = 10,
    lower: np.ndarray | None = None,
) -> BatchScan:
    """The discrete xmin scan of many samples in one vectorised pass.

    ``values``/``counts`` are the concatenated histograms (ascending within each sample, all
    values <= that sample's ``upper[sample]``), ``sample`` the sample index of each entry.
    Candidates and (candidate, value) pairs of all samples are processed as flat arrays, so the
    cost is a few array operations however many samples there are. With ``lower`` (per sample)
    the bounds are fixed: the only candidate of a sample is its first entry, fitted on
    ``[lower, upper]`` (its values must lie in that range).
    """
    size = values.size
    if size == 0:
        empty = np.zeros(0)
        return BatchScan(np.zeros(0, np.int64), empty, empty, empty, np.zeros(0, np.int64))
    ends = np.flatnonzero(np.r_[sample[1:] != sample[:-1], True])  # last entry of each sample
    starts = np.r_[0, ends[:-1] + 1]
    seg = np.repeat(np.arange(ends.size), ends - starts + 1)
    cum = np.cumsum(counts)
    cum_log = np.cumsum(counts * np.log(values))
    n_tail = cum[ends][seg] - cum + counts
    sum_log = cum_log[ends][seg] - cum_log + counts * np.log(values)
    if lower is None:
        keep = (np.arange(size) < ends[seg]) & (n_tail >= min_tail)
    else:
        keep = (np.arange(size) == starts[seg]) & (n_tail >= min_tail) & (ends[seg] > starts[seg])
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        empty = np.zeros(0)
        return BatchScan(np.zeros(0, np.int64), empty, empty, empty, np.zeros(0, np.int64))
    bound = upper[sample[idx]]
    start_at = values[idx] if lower is None else lower[sample[idx]]
    alphas = solve_alpha(sum_log[idx] / n_tail[idx], start_at, bound, True)
    # pairs (candidate, value at or above it in the same sample), contiguous per candidate
    lengths = ends[seg[idx]] - idx + 1
    pair_c = np.repeat(np.arange(idx.size), lengths)
    first_pair = np.r_[0, np.cumsum(lengths)[:-1]]
    pair_v = idx[pair_c] + (np.arange(pair_c.size) - first_pair[pair_c])
    valid = np.isfinite(alphas)
    alpha = np.where(valid, alphas, 2.0)[pair_c]
    top = bound[pair_c]
    u = values[pair_v]
    # Tail sums T(u) = sum_{k=u}^{top} k^-alpha at each observed u of a candidate's tail, built
    # from the short sums between consecutive observed values (cumulated from the top), so each
    # pair costs about one power instead of a full range.
    last = np.r_[first_pair[1:] - 1, pair_c.size - 1] if pair_c.size else first_pair
    is_last = np.zeros(pair_c.size, bool)
    is_last[last] = True
    following = np.where(is_last, top, np.r_[u[1:], 0.0] - 1)
    # most gaps between consecutive observed degrees are a single integer: one power each
    log_u = np.log(u)
    piece = np.exp(-alpha * log_u)
    # short gaps: a few more powers; long ones (and the last piece, up to xmax): closed forms
    for extra in range(1, _SHORT_GAP):
        more = following >= u + extra
        if not more.any():
            break
        piece[more] += np.exp(-alpha[more] * np.log(u[more] + extra))
    wide = following >= u + _SHORT_GAP
    if wide.any():
        piece[wide] = power_sum(alpha[wide], u[wide], following[wide])
    tail = _segment_reverse_cumsum(piece, first_pair)
    # fixed bounds: the range may start below the first observed value
    missing = values[idx] > start_at
    head = np.zeros(idx.size)
    if missing.any():
        head[missing] = power_sum(
            np.where(valid, alphas, 2.0)[missing], start_at[missing], values[idx][missing] - 1
        )
    total = (tail[first_pair] + head)[pair_c]
    tail_n = n_tail[idx][pair_c]
    below_tail = (np.r_[0, cum][pair_v] - np.r_[0, cum][idx][pair_c]) / tail_n
    gap = np.abs(1.0 - tail / total - below_tail)
    if ks == "integers":
        upto = (cum[pair_v] - np.r_[0, cum][idx][pair_c]) / tail_n
        tail_up = tail - np.exp(-alpha * log_u)
        gap = np.maximum(gap, np.abs(1.0 - tail_up / total - upto))
    distance = np.maximum.reduceat(gap, first_pair) if gap.size else np.zeros(0)
    return BatchScan(sample[idx], start_at, alphas, np.where(valid, distance, np.nan), n_tail[idx])


def _segment_reverse_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Within each segment (beginning at ``starts``), the sum of x from each entry to its end.

    Done on a zero-padded (segments x longest) matrix so that no sum crosses a segment: a global
    running sum would lose the small tails of later segments to cancellation.
    """
    if x.size == 0:
        return x
    lengths = np.diff(np.r_[starts, x.size])
    rows = np.repeat(np.arange(starts.size), lengths)
    cols = np.arange(x.size) - np.repeat(starts, lengths)
    padded = np.zeros((starts.size, int(lengths.max())))
    padded[rows, cols] = x
    return np.cumsum(padded[:, ::-1], axis=1)[:, ::-1][rows, cols]
