"""Fitting a (bounded) power law with bound selection: the ``clauset``, ``bounded``, ``window``
and ``fixed`` modes (docs/design.md, Fitting)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from topoprune.stats.bounded_power_law import moments, solve_alpha
from topoprune.stats.data import positive_data
from topoprune.stats.errors import FitError
from topoprune.stats.scan import KS_CONVENTIONS, Histogram, ks_distance, scan_xmin

MODES = ("clauset", "bounded", "window", "fixed")
MIN_TAIL = 10


@dataclass
class PowerLawFit:
    """One fit. ``fittable`` False comes with ``reason`` and no numbers."""

    mode: str
    discrete: bool
    ks_convention: str
    n: int  # positive values
    n_zero: int  # zeros (dead nodes), never fitted
    fittable: bool = True
    reason: str = ""
    alpha: float | None = None
    alpha_se: float | None = None
    xmin: float | None = None
    xmax: float | None = None  # inf: unbounded
    n_tail: int | None = None  # in [xmin, xmax]
    n_below: int | None = None
    n_above: int | None = None
    data_max: float | None = None
    ks: float | None = None
    loglik: float | None = None
    p_value: float | None = None
    n_boot: int = 0
    n_boot_failed: int = 0  # replicates left out of p because they could not be fitted
    seed: int | None = None
    comparisons: list[dict] = field(default_factory=list)
    verdict: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("xmin", "xmax"):
            if out[key] is not None and math.isinf(out[key]):
                out[key] = "inf"
        return out


def parse_bound(value: object, name: str) -> float | str | None:
    """A bound from the CLI/API: a number, ``max``, ``inf``, or None (the mode's default)."""
    if value is None or value in ("max",):
        return value
    if value in ("inf", float("inf")):
        return float("inf")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FitError(f"{name} must be a number, 'max' or 'inf', got {value!r}") from None
    if not number > 0:
        raise FitError(f"{name} must be positive, got {number:g}")
    return number


def fit_at(
    hist: Histogram,
    xmin: float,
    xmax: float,
    discrete: bool,
    ks: str,
    min_tail: int = MIN_TAIL,
    alpha: float | None = None,
    ks_value: float | None = None,
) -> dict:
    """Alpha (solved unless given), SE, log-likelihood and KS (measured unless given) on a given
    range; ``reason`` set when not fittable."""
    tail = hist.restrict(xmin, xmax)
    if tail.n < min_tail:
        return {
            "reason": f"only {tail.n} values in [{xmin:g}, {xmax:g}] (at least {min_tail} needed)"
        }
    if tail.values.size == 1:
        return {"reason": f"all {tail.n} values in range equal {tail.values[0]:g}"}
    if np.isinf(xmax) and not xmin > 0:
        return {"reason": "xmin must be positive"}
    if alpha is None:
        alpha = float(solve_alpha(tail.sum_log / tail.n, xmin, xmax, discrete)[0])
    if not np.isfinite(alpha):
        return {"reason": "no maximum-likelihood alpha: the data pile up at one end of the range"}
    log_z, _, var = moments(alpha, xmin, xmax, discrete)
    return {
        "alpha": alpha,
        "alpha_se": float(1.0 / np.sqrt(tail.n * var)) if var > 0 else float("inf"),
        "loglik": float(-alpha * tail.sum_log - tail.n * log_z),
        "ks": ks_distance(hist, alpha, xmin, xmax, discrete, ks) if ks_value is None else ks_value,
        "n_tail": tail.n,
    }


def fit_power_law(
    data: object,
    *,
    mode: str = "bounded",
    xmin: float | None = None,
    xmax: float | str | None = None,
    discrete: bool = True,
    ks: str = "observed",
    min_tail: int = MIN_TAIL,
) -> PowerLawFit:
    """Fit a (bounded) power law, choosing the bounds the way ``mode`` says.

    ``window`` needs a bootstrap to choose its range: use :class:`BoundedPowerLaw`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.floor(rng.pareto(1.5, 5000) + 1)
    >>> fit = fit_power_law(x, mode="clauset")
    >>> fit.xmin, fit.xmax, round(fit.alpha, 2), fit.n_tail
    (2.0, inf, 2.29, 1817)
    """
    if mode not in MODES:
        raise FitError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if ks not in KS_CONVENTIONS:
        raise FitError(f"unknown KS convention {ks!r}; valid: {', '.join(KS_CONVENTIONS)}")
    sample = positive_data(data, discrete)
    result = PowerLawFit(mode, discrete, ks, sample.n, sample.n_zero)
    if sample.n == 0:
        return _unfit(result, "no positive values")
    hist = Histogram.of(sample.values)
    xmin_arg = parse_bound(xmin, "xmin")
    xmax_arg = parse_bound(xmax, "xmax")
    if discrete and xmin_arg not in (None, "max") and float(xmin_arg) != round(float(xmin_arg)):
        raise FitError(f"xmin must be an integer for a discrete fit, got {xmin_arg}")
    if mode == "clauset":
        if xmax_arg not in (None, float("inf")):
            raise FitError("clauset mode is unbounded (xmax = inf); use bounded mode for an xmax")
        upper = float("inf")
    elif xmax_arg in (None, "max"):
        upper = float(hist.values[-1])
    else:
        upper = float(xmax_arg)
    if mode == "fixed" and xmin_arg is None:
        raise FitError("fixed mode needs both bounds: give xmin (and xmax, default max)")
    if xmin_arg is not None:
        lower = float(xmin_arg)
        if not lower < upper:
            raise FitError(f"xmin ({lower:g}) must be below xmax ({upper:g})")
    else:
        scan = scan_xmin(hist, upper, discrete, ks, min_tail)
        best = scan.best()
        if best is None:
            return _unfit(result, _no_candidate_reason(hist, upper, min_tail))
        lower = float(scan.candidates[best])
        return _complete(
            result,
            hist,
            lower,
            upper,
            min_tail,
            alpha=float(scan.alphas[best]),
            ks_value=float(scan.ks[best]),
        )
    return _complete(result, hist, lower, upper, min_tail)


def _no_candidate_reason(hist: Histogram, upper: float, min_tail: int) -> str:
    in_range = hist.restrict(-np.inf, upper)
    if in_range.values.size <= 1:
        value = in_range.values[0] if in_range.values.size else float("nan")
        if in_range.n == 1:
            return f"a single value ({value:g}): nothing to fit"
        return f"all {in_range.n} values are equal ({value:g}): nothing to fit"
    return f"fewer than {min_tail} values above every candidate xmin ({in_range.n} values)"


def _complete(
    result: PowerLawFit,
    hist: Histogram,
    xmin: float,
    xmax: float,
    min_tail: int,
    alpha: float | None = None,
    ks_value: float | None = None,
) -> PowerLawFit:
    numbers = fit_at(
        hist, xmin, xmax, result.discrete, result.ks_convention, min_tail, alpha, ks_value
    )
    result.xmin, result.xmax = xmin, xmax
    result.n_below = int(hist.counts[hist.values < xmin].sum())
    result.n_above = int(hist.counts[hist.values > xmax].sum())
    result.data_max = float(hist.values[-1])
    if "reason" in numbers:
        return _unfit(result, numbers["reason"])
    for key, value in numbers.items():
        setattr(result, key, value)
    return result


def _unfit(result: PowerLawFit, reason: str) -> PowerLawFit:
    result.fittable = False
    result.reason = reason
    result.verdict = f"cannot fit: {reason}"
    return result
