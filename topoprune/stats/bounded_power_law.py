"""The bounded ("truncated") power law on [xmin, xmax]: log-normaliser, moments, exact MLE.

Kolyukhin & Torabi form, as on the Lu & Kwok slides:

- discrete:   p(k) = k^-a / sum_{j=xmin}^{xmax} j^-a,   k = xmin..xmax
- continuous: p(x) = (1-a) / (xmax^(1-a) - xmin^(1-a)) * x^-a  on [xmin, xmax]

``a`` is any real number on a finite range; ``xmax = inf`` is the unbounded power law (a > 1,
Hurwitz zeta normaliser in the discrete case). The MLE depends on the data only through
``n`` and ``mean(log x)`` (sufficient statistics); it solves the score equation
``E_a[log X] = mean(log x)``, whose left side decreases strictly in ``a`` (its derivative is
``-Var_a[log X]``), by safeguarded Newton steps. The standard error is ``1/sqrt(n Var_a[log X])``
(Fisher information).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp, zeta

ALPHA_LIMIT = 60.0  # |alpha| beyond this is reported as "cannot fit"
_H = 1e-5  # step of the central differences of log Z in alpha


# ---- discrete -------------------------------------------------------------------------------

_EM_START = 16  # terms below this are summed directly, the rest by Euler-Maclaurin
# B_2k / (2k)! for k = 1..6
_EM = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600, 1 / 47900160, -691 / 1307674368000)


def power_sum(alpha, a, b) -> np.ndarray:
    """``sum_{j=a}^{b} j^-alpha`` for broadcast arrays; ``b`` may be ``inf`` (then alpha > 1).

    Terms below 16 are summed directly, the rest by the Euler-Maclaurin formula with six
    Bernoulli corrections (relative error below 1e-11 for -20 <= alpha <= 12), so any range costs
    at most 15 powers plus a closed form, and alpha <= 1 works (scipy's Hurwitz zeta is undefined
    there).

    Examples
    --------
    >>> round(float(power_sum(2.0, 1, np.inf)), 12)  # pi^2 / 6
    1.644934066848
    >>> round(float(power_sum(-1.0, 1, 100)), 6)  # 100 * 101 / 2, to the relative error above
    5050.0
    """
    alpha, a, b = (np.asarray(v, float) for v in (alpha, a, b))
    if not alpha.shape == a.shape == b.shape:
        alpha, a, b = np.broadcast_arrays(alpha, a, b)
    shape = alpha.shape
    alpha, a, b = alpha.ravel(), a.ravel(), b.ravel()
    direct = np.zeros(a.size)
    low = np.flatnonzero(a < _EM_START)
    if low.size:
        # direct terms below _EM_START, only as many as each range has (ragged, flattened)
        n_terms = np.maximum(np.minimum(b[low], _EM_START - 1) - a[low] + 1, 0).astype(np.int64)
        owner = np.repeat(np.arange(low.size), n_terms)
        offset = np.arange(owner.size) - np.repeat(np.cumsum(n_terms) - n_terms, n_terms)
        terms = np.exp(-alpha[low][owner] * np.log(a[low][owner] + offset))
        direct[low] = np.bincount(owner, weights=terms, minlength=low.size)
    c = np.maximum(a, _EM_START)  # Euler-Maclaurin from here on
    rest = c <= b
    total = direct
    if rest.any():
        s, cc, bb = alpha[rest], c[rest], b[rest]
        finite = np.isfinite(bb)
        bb = np.where(finite, bb, cc)  # placeholder where b = inf (its terms are zeroed)
        log_c, log_b = np.log(cc), np.log(bb)
        pc = np.exp(-s * log_c)  # c^-s
        pb = np.where(finite, np.exp(-s * log_b), 0.0)  # b^-s (0 at infinity)
        t = 1.0 - s
        small = np.abs(t) < 1e-12
        t_safe = np.where(small, 1.0, t)
        ratio = log_b - log_c
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            integral = np.where(small, ratio, np.expm1(t_safe * ratio) / t_safe) * cc * pc
            integral = np.where(finite, integral, cc * pc / (s - 1.0))
        value = integral + 0.5 * (pc + pb)
        inv_c2, inv_b2 = 1.0 / (cc * cc), np.where(finite, 1.0 / (bb * bb), 0.0)
        dc, db = pc / cc, np.where(finite, pb / bb, 0.0)  # x^(-s-m) for m = 1, 3, 5, ...
        rising = s.copy()  # s (s+1) ... (s+m-1)
        for k, coeff in enumerate(_EM, start=1):
            m = 2 * k - 1
            # f^(m)(x) = -rising x^(-s-m) for odd m
            value = value + coeff * (-rising) * (db - dc)
            rising = rising * (s + m) * (s + m + 1)
            dc, db = dc * inv_c2, db * inv_b2
        total = total.copy()
        total[rest] += value
    return total.reshape(shape)


def log_power_sum(alpha, a, b) -> np.ndarray:
    return np.log(power_sum(alpha, a, b))


def discrete_moments(alpha, xmin, xmax):
    """``(log Z, E[log X], Var[log X])`` of the discrete bounded power law.

    ``E`` and ``Var`` are the first and second derivatives of ``-log Z`` and ``log Z`` in alpha,
    by central differences (error about 1e-10 in ``E``, 1e-5 relative in ``Var``).

    Examples
    --------
    >>> log_z, mean, var = discrete_moments(0.0, 1, 2)  # uniform on {1, 2}
    >>> round(float(np.exp(log_z)), 12), round(float(mean), 10)
    (2.0, 0.3465735903)
    """
    alpha, xmin, xmax = np.broadcast_arrays(
        np.asarray(alpha, float), np.asarray(xmin, float), np.asarray(xmax, float)
    )
    f0 = log_power_sum(alpha, xmin, xmax)
    h = np.where(np.isinf(xmax), np.minimum(_H, (alpha - 1.0) / 4), _H)
    plus, minus = log_power_sum(alpha + h, xmin, xmax), log_power_sum(alpha - h, xmin, xmax)
    # central differences: truncation ~h^2 and rounding ~eps/h both near 1e-10 for E
    first = (plus - minus) / (2 * h)
    second = (plus - 2 * f0 + minus) / (h * h)
    return f0, -first, np.maximum(second, 0.0)


# ---- continuous -----------------------------------------------------------------------------


def continuous_moments(alpha, xmin, xmax):
    """``(log Z, E[log X], Var[log X])`` of the continuous bounded power law.

    With u = log(x / xmin) on [0, L], L = log(xmax / xmin), the density of u is proportional to
    exp(t u), t = 1 - alpha: a truncated exponential, computed stably for any t. For
    xmax = inf (alpha > 1), u is exponential with rate alpha - 1.
    """
    alpha, xmin, xmax = np.broadcast_arrays(
        np.asarray(alpha, float), np.asarray(xmin, float), np.asarray(xmax, float)
    )
    t = 1.0 - alpha
    log_a = np.log(xmin)
    unbounded = np.isinf(xmax)
    length = np.log(np.where(unbounded, np.e * xmin, xmax) / xmin)
    s = t * length
    small = np.abs(s) < 1e-4
    s_safe = np.where(small, 1.0, s)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_int = np.where(
            s_safe > 0,
            s_safe + np.log(-np.expm1(-s_safe)) - np.log(np.abs(s_safe)),
            np.log(-np.expm1(s_safe)) - np.log(np.abs(s_safe)),
        ) + np.log(length)
        log_int = np.where(small, np.log(length) + s / 2 + s * s / 24, log_int)
        mean_u = np.where(small, 0.5 + s / 12, 1.0 / -np.expm1(-s_safe) - 1.0 / s_safe) * length
        var_u = (
            np.where(
                small, 1 / 12 - s * s / 240, 1.0 / s_safe**2 - 1.0 / (4 * np.sinh(s_safe / 2) ** 2)
            )
            * length**2
        )
        rate = alpha - 1.0
        log_int = np.where(unbounded, -np.log(rate), log_int)
        mean_u = np.where(unbounded, 1.0 / rate, mean_u)
        var_u = np.where(unbounded, 1.0 / rate**2, var_u)
    return t * log_a + log_int, log_a + mean_u, np.maximum(var_u, 0.0)


# ---- the MLE --------------------------------------------------------------------------------


def moments(alpha, xmin, xmax, discrete: bool = True):
    return (discrete_moments if discrete else continuous_moments)(alpha, xmin, xmax)


def solve_alpha(
    mean_log: np.ndarray,
    xmin: np.ndarray,
    xmax: float | np.ndarray,
    discrete: bool = True,
    *,
    start: np.ndarray | None = None,
    tol: float = 1e-9,
    max_iter: int = 200,
) -> np.ndarray:
    """MLE of alpha for arrays of ``(mean log x, xmin, xmax)``; NaN where none exists.

    The score ``E_a[log X] - mean_log`` decreases strictly in ``a``; Newton steps are kept inside a
    bracket that bisection shrinks, so the iteration always converges.
    """
    mean_log, xmin, xmax = np.broadcast_arrays(
        np.asarray(mean_log, float), np.asarray(xmin), np.asarray(xmax, float)
    )
    mean_log, xmin, xmax = mean_log.ravel(), xmin.ravel(), xmax.ravel()
    unbounded = np.isinf(xmax)
    if unbounded.any() and not unbounded.all():
        raise ValueError("solve_alpha: mix bounded and unbounded ranges in separate calls")
    floor = 1.0 + 1e-9 if unbounded.all() else -ALPHA_LIMIT
    lo = np.full(mean_log.shape, floor)
    hi = np.full(mean_log.shape, ALPHA_LIMIT)
    # a start near the continuous-approximation estimate
    spread = np.maximum(mean_log - np.log(np.maximum(xmin - 0.5 * discrete, 1e-300)), 1e-12)
    guess = 1.0 + 1.0 / spread if start is None else np.broadcast_to(start, spread.shape)
    alpha = np.clip(np.nan_to_num(guess, nan=2.0), lo + 1e-6, hi - 1e-6)
    active = np.arange(alpha.size)
    for _ in range(max_iter):
        a_act, lo_act, hi_act = alpha[active], lo[active], hi[active]
        _, mean, var = moments(a_act, xmin[active], xmax[active], discrete)
        score = mean - mean_log[active]  # > 0: alpha too small
        lo_act = np.where(score > 0, a_act, lo_act)
        hi_act = np.where(score <= 0, a_act, hi_act)
        proposal = a_act + score / np.maximum(var, 1e-300)
        outside = ~((proposal > lo_act) & (proposal < hi_act)) | ~np.isfinite(proposal)
        new = np.where(outside, 0.5 * (lo_act + hi_act), proposal)
        # Newton converges quadratically: after a step below 1e-5 the next would be ~1e-10
        done = (
            np.abs(new - a_act)
            <= np.maximum(tol, np.where(outside, 0.0, 1e-5)) * (1.0 + np.abs(a_act))
        ) | (hi_act - lo_act < tol)
        alpha[active], lo[active], hi[active] = new, lo_act, hi_act
        active = active[~done]
        if active.size == 0:
            break
    # no root inside the limits: the data sit at one end of the range
    at_edge = (alpha >= ALPHA_LIMIT - 1e-6) | (alpha <= floor + 1e-6)
    return np.where(at_edge, np.nan, alpha)


def standard_error(alpha: float, n: int, xmin, xmax, discrete: bool) -> float:
    _, _, var = moments(alpha, xmin, xmax, discrete)
    return float(1.0 / math.sqrt(n * float(var))) if var > 0 else float("inf")


# ---- CDF and sampling -----------------------------------------------------------------------


def cdf_below(x: np.ndarray, alpha: float, xmin, xmax, discrete: bool) -> np.ndarray:
    """``P(X < x)`` (discrete) or ``P(X <= x)`` (continuous) at the given points."""
    x = np.asarray(x, float)
    if discrete:
        above = np.clip(x, xmin, xmax + 1)
        tail = np.where(above > xmax, 0.0, power_sum(alpha, above, xmax))
        return 1.0 - tail / power_sum(alpha, xmin, xmax)
    log_z, _, _ = continuous_moments(alpha, xmin, xmax)
    upper = np.clip(x, xmin * (1 + 1e-15), xmax)
    partial, _, _ = continuous_moments(alpha, xmin, upper)
    return np.where(x <= xmin, 0.0, np.exp(partial - log_z))


class PowerLawSampler:
    """Exact inverse-CDF draws from the (bounded) power law; tables are built once.

    Unbounded discrete: the survival function is tabulated over xmin..xmin+table; the rare draws
    beyond it are found by bisection on ``zeta(alpha, k) / zeta(alpha, xmin) <= 1 - u``.
    """

    def __init__(self, alpha: float, xmin, xmax, discrete: bool, table: int = 20_000) -> None:
        self.alpha, self.xmin, self.xmax, self.discrete = alpha, xmin, xmax, discrete
        if discrete and not np.isinf(xmax):
            self.k = np.arange(int(xmin), int(xmax) + 1)
            logp = -alpha * np.log(self.k)
            self.cdf = np.cumsum(np.exp(logp - logsumexp(logp)))
        elif discrete:
            self.k = np.arange(int(xmin), int(xmin) + table)
            self.survival = zeta(alpha, self.k) / zeta(alpha, xmin)  # P(X >= k)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n)
        alpha, xmin, xmax = self.alpha, self.xmin, self.xmax
        if self.discrete and not np.isinf(xmax):
            index = np.searchsorted(self.cdf, u * self.cdf[-1], side="right")
            return self.k[np.minimum(index, self.k.size - 1)]
        if self.discrete:
            return self._draw_zeta(1.0 - u)
        t = 1.0 - alpha
        if np.isinf(xmax):
            return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))
        if abs(t) < 1e-12:
            return xmin * (xmax / xmin) ** u
        a_t, b_t = xmin**t, xmax**t
        return (a_t + u * (b_t - a_t)) ** (1.0 / t)

    def _draw_zeta(self, survival: np.ndarray) -> np.ndarray:
        alpha, xmin, k = self.alpha, int(self.xmin), self.k
        # index of the last k with P(X >= k) > survival
        idx = np.searchsorted(-self.survival, -survival, side="left") - 1
        out = k[np.clip(idx, 0, k.size - 1)].astype(np.int64)
        norm = zeta(alpha, xmin)
        for i in np.flatnonzero(idx >= k.size - 1):
            lo, hi = int(k[-1]), int(k[-1]) * 2
            while zeta(alpha, hi) / norm > survival[i]:
                lo, hi = hi, hi * 2
            while hi - lo > 1:  # invariant: P(X >= lo) > s >= P(X >= hi)
                mid = (lo + hi) // 2
                if zeta(alpha, mid) / norm > survival[i]:
                    lo = mid
                else:
                    hi = mid
            out[i] = lo
        return out


def sample(n: int, alpha: float, xmin, xmax, discrete: bool, rng: np.random.Generator):
    """``n`` draws from the (bounded) power law (see :class:`PowerLawSampler`)."""
    return PowerLawSampler(alpha, xmin, xmax, discrete).draw(n, rng)
