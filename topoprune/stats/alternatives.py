"""Alternative distributions fitted on the same range as the power law, and likelihood-ratio tests.

All are discrete distributions on the integers of [xmin, xmax] (normalised there), fitted by
maximum likelihood on the histogram. Non-nested alternatives are compared by Vuong's test, the
power law with exponential cutoff (which nests the power law) by Wilks' test with the boundary
correction (the cutoff rate is >= 0, so the statistic is a 50:50 mixture of chi2_0 and chi2_1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from scipy.special import gammaln

from topoprune.registry import Registry

SIGNIFICANCE = 0.1
# Normalising sums of light-tailed alternatives on an unbounded range stop here (relative to the
# largest observed value); their mass beyond is negligible at any fitted parameter.
UNBOUNDED_FACTOR = 100
UNBOUNDED_MIN = 10_000


@dataclass(frozen=True)
class Alternative:
    """A parametric family: unconstrained parameters -> log-pmf on integer points."""

    name: str
    n_params: int
    log_kernel: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    start: Callable[[np.ndarray, np.ndarray], np.ndarray]
    nests_power_law: bool = False


ALTERNATIVES: Registry[Alternative] = Registry("alternative distribution")


def _register(alt: Alternative) -> Alternative:
    return ALTERNATIVES.register(alt.name)(alt)


def _mean(values, counts):
    return float(counts @ values / counts.sum())


_register(
    Alternative(
        "exponential",
        1,
        lambda p, k, logk: -p[0] * k,
        lambda v, c: np.array([1.0 / max(_mean(v, c) - v.min() + 1, 1.0)]),
    )
)
_register(
    Alternative(
        "lognormal",
        2,
        lambda p, k, logk: -logk - (logk - p[0]) ** 2 / (2 * math.exp(2 * p[1])),
        lambda v, c: np.array(
            [
                float(c @ np.log(v) / c.sum()),
                math.log(
                    max(
                        math.sqrt(
                            float(c @ np.log(v) ** 2 / c.sum() - (c @ np.log(v) / c.sum()) ** 2)
                        ),
                        0.1,
                    )
                ),
            ]
        ),
    )
)
_register(
    Alternative(
        "poisson",
        1,
        lambda p, k, logk: k * p[0] - gammaln(k + 1),
        lambda v, c: np.array([math.log(max(_mean(v, c), 1e-3))]),
    )
)
_register(
    Alternative(
        "power_law_cutoff",
        2,
        lambda p, k, logk: -p[0] * logk - math.exp(p[1]) * k,
        lambda v, c: np.array([1.5, math.log(1.0 / max(_mean(v, c), 1.0))]),
        nests_power_law=True,
    )
)
_register(
    Alternative(
        "stretched_exponential",
        2,
        lambda p, k, logk: (math.exp(p[0]) - 1) * logk - math.exp(p[1]) * k ** math.exp(p[0]),
        lambda v, c: np.array([math.log(0.5), math.log(1.0 / max(math.sqrt(_mean(v, c)), 1.0))]),
    )
)


def _logsumexp(x: np.ndarray) -> float:
    """log(sum(exp(x))) of a 1-D array; scipy's general version costs ~20x more per call, and
    the optimisers call this thousands of times."""
    top = float(np.max(x))
    if not np.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(x - top))))


def support(values: np.ndarray, xmin: float, xmax: float) -> np.ndarray:
    """The integers over which alternatives are normalised."""
    top = xmax if np.isfinite(xmax) else max(values.max() * UNBOUNDED_FACTOR, UNBOUNDED_MIN)
    return np.arange(int(xmin), int(top) + 1, dtype=float)


def fit_alternative(
    alt: Alternative, values: np.ndarray, counts: np.ndarray, xmin: float, xmax: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """MLE of an alternative on [xmin, xmax]: (params, log-pmf at ``values``, log-likelihood)."""
    k = support(values, xmin, xmax)
    logk = np.log(k)
    index = (values - xmin).astype(np.int64)

    def negative_loglik(params):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            kernel = alt.log_kernel(params, k, logk)
            log_z = _logsumexp(kernel)
            value = -(counts @ (kernel[index] - log_z))
        return value if np.isfinite(value) else 1e300

    start = alt.start(values, counts)
    if alt.n_params == 1:
        # a bounded scalar search around the moment-based start
        width = max(abs(float(start[0])), 1.0) * 4
        found = optimize.minimize_scalar(
            lambda v: negative_loglik(np.array([v])),
            bounds=(float(start[0]) - width, float(start[0]) + width),
            method="bounded",
            options={"xatol": 1e-10},
        )
        best = optimize.OptimizeResult(x=np.array([found.x]), fun=found.fun)
    else:
        best = None
        for _ in range(2):  # a restart from the first optimum guards against early stops
            result = optimize.minimize(
                negative_loglik,
                start if best is None else best.x,
                method="Nelder-Mead",
                options={"xatol": 1e-8, "fatol": 1e-9, "maxiter": 2000},
            )
            if best is None or result.fun < best.fun:
                best = result
    kernel = alt.log_kernel(best.x, k, logk)
    log_pmf = kernel[index] - _logsumexp(kernel)
    return best.x, log_pmf, float(-best.fun)


def vuong(log_p1: np.ndarray, log_p2: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Vuong's normalised log-likelihood ratio test on histogram data: (R, two-sided p)."""
    diff = log_p1 - log_p2
    n = counts.sum()
    ratio = float(counts @ diff)
    mean = ratio / n
    sigma = math.sqrt(max(float(counts @ (diff - mean) ** 2) / n, 0.0))
    if sigma == 0:
        return ratio, 1.0 if ratio == 0 else 0.0
    z = ratio / (math.sqrt(n) * sigma)
    return ratio, float(math.erfc(abs(z) / math.sqrt(2)))


def wilks_boundary(loglik_small: float, loglik_big: float) -> float:
    """p-value of the nested LR test with one parameter on its boundary."""
    statistic = max(2 * (loglik_big - loglik_small), 0.0)
    return float(0.5 * stats.chi2.sf(statistic, 1)) if statistic > 0 else 1.0


def compare(
    power_law_log_pmf: np.ndarray,
    power_law_loglik: float,
    values: np.ndarray,
    counts: np.ndarray,
    xmin: float,
    xmax: float,
    names: list[str] | None = None,
) -> list[dict]:
    """Fit each alternative on the range and test it against the power law.

    ``loglik_ratio`` > 0 favours the power law; ``p`` < 0.1 makes the sign significant.
    """
    rows = []
    for name in names or ALTERNATIVES.names():
        alt = ALTERNATIVES[name]
        params, log_pmf, loglik = fit_alternative(alt, values, counts, xmin, xmax)
        if alt.nests_power_law:
            ratio = power_law_loglik - max(loglik, power_law_loglik)
            p = wilks_boundary(power_law_loglik, max(loglik, power_law_loglik))
            test = "wilks"
        else:
            ratio, p = vuong(power_law_log_pmf, log_pmf, counts)
            test = "vuong"
        rows.append(
            {
                "alternative": name,
                "test": test,
                "loglik": loglik,
                "loglik_ratio": ratio,
                "p": p,
                "params": [float(v) for v in params],
            }
        )
    return rows


def null_comparison(
    power_law_log_pmf: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray,
    xmin: float,
    xmax: float,
    null_pmf: np.ndarray,
) -> dict:
    """Vuong test against the random-mask null degree distribution restricted to the range.

    ``null_pmf[k]`` is the null probability of degree k (k = 0..len-1).
    """
    top = min(int(xmax) if np.isfinite(xmax) else len(null_pmf) - 1, len(null_pmf) - 1)
    mass = null_pmf[int(xmin) : top + 1].sum() if top >= xmin else 0.0
    with np.errstate(divide="ignore"):
        inside = np.where(values <= top, null_pmf[np.minimum(values, top).astype(np.int64)], 0.0)
        log_null = np.log(inside) - (np.log(mass) if mass > 0 else 0.0)
    if not np.all(np.isfinite(log_null)):
        # the null gives (numerically) zero probability to observed degrees: it is rejected
        return {
            "alternative": "random_null",
            "test": "vuong",
            "loglik": float("-inf"),
            "loglik_ratio": float("inf"),
            "p": 0.0,
            "params": [],
        }
    ratio, p = vuong(power_law_log_pmf, log_null, counts)
    return {
        "alternative": "random_null",
        "test": "vuong",
        "loglik": float(counts @ log_null),
        "loglik_ratio": ratio,
        "p": p,
        "params": [],
    }
