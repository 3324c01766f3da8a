"""``BoundedPowerLaw``: fit, bootstrap p-value, comparisons and verdict, scikit-learn style."""

from __future__ import annotations

import math

import numpy as np

from topoprune.stats.alternatives import ALTERNATIVES, SIGNIFICANCE, compare, null_comparison
from topoprune.stats.bootstrap import bootstrap_ks, bootstrap_ks_discrete, p_value
from topoprune.stats.bounded_power_law import moments
from topoprune.stats.data import positive_data
from topoprune.stats.errors import FitError
from topoprune.stats.fit import MIN_TAIL, MODES, PowerLawFit, fit_at, fit_power_law, parse_bound
from topoprune.stats.scan import Histogram, scan_xmin

WINDOW_CANDIDATES = 12  # per bound: log-spaced distinct values scanned in window mode
MIN_DECADES = 1.0  # a power law is not claimed on a range narrower than this (log10 units)


class BoundedPowerLaw:
    """Fit a bounded power law to degree data, with the statistics to defend it.

    Parameters
    ----------
    mode : {"clauset", "bounded", "window", "fixed"}
        Bound selection (docs/design.md, Fitting). Default ``bounded``: xmax = the largest value,
        xmin by KS minimisation.
    xmin, xmax : number, "max" or "inf", optional
        Fixed bounds (``xmin`` skips its KS scan).
    discrete : bool
        Integer data (default) or real-valued data.
    ks : {"observed", "integers"}
        KS convention (see :mod:`topoprune.stats.scan`); default ``observed`` as in powerlaw.
    n_boot : int
        Bootstrap replicates for the goodness-of-fit p-value (0: none; 1,000 is the usual,
        2,500 gives +-0.01). Required by ``window`` mode.
    seed : int
        Seed of the bootstrap.
    alternatives : list of str or None
        Alternative distributions compared on the same range (default: all registered).
    null_pmf : array, optional
        The random-null degree pmf (index = degree), e.g. from
        :func:`topoprune.stats.null.node_layer_null`.
    p_min : float
        Window mode: the widest range with bootstrap p >= p_min is kept.
    min_tail : int
        Fewest values a range may hold.
    progress : bool
        Show a progress bar for the bootstrap (only on a terminal).

    Attributes
    ----------
    fit_ : PowerLawFit
        Every number of the fit; ``alpha_``, ``alpha_se_``, ``xmin_``, ``xmax_``, ``n_tail_``,
        ``ks_``, ``p_value_``, ``loglik_``, ``comparisons_`` and ``verdict_`` mirror it.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> model = BoundedPowerLaw(mode="clauset").fit(rng.zipf(2.5, 3000))
    >>> model.xmin_, round(model.alpha_, 2)  # true alpha 2.5; the standard error is 0.03
    (1.0, 2.54)
    """

    def __init__(
        self,
        mode: str = "bounded",
        *,
        xmin: float | str | None = None,
        xmax: float | str | None = None,
        discrete: bool = True,
        ks: str = "observed",
        n_boot: int = 0,
        seed: int = 0,
        alternatives: list[str] | None = None,
        null_pmf: np.ndarray | None = None,
        p_min: float = 0.1,
        min_tail: int = MIN_TAIL,
        progress: bool = False,
    ) -> None:
        self.mode = mode
        self.xmin = xmin
        self.xmax = xmax
        self.discrete = discrete
        self.ks = ks
        self.n_boot = n_boot
        self.seed = seed
        self.alternatives = alternatives
        self.null_pmf = null_pmf
        self.p_min = p_min
        self.min_tail = min_tail
        self.progress = progress

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, data: object) -> BoundedPowerLaw:
        if self.mode not in MODES:
            raise FitError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.n_boot < 0:
            raise FitError("n_boot must be >= 0")
        sample = positive_data(data, self.discrete)
        if sample.n == 0:
            result = PowerLawFit(
                self.mode,
                self.discrete,
                self.ks,
                0,
                sample.n_zero,
                fittable=False,
                reason=f"all {sample.n_zero} values are 0",
            )
            result.verdict = verdict(result)
            self.fit_ = result
            self._mirror(result)
            return self
        if self.mode == "window":
            result = self._fit_window(sample.values, sample.n_zero)
        else:
            result = fit_power_law(
                sample.values,
                mode=self.mode,
                xmin=self.xmin,
                xmax=self.xmax,
                discrete=self.discrete,
                ks=self.ks,
                min_tail=self.min_tail,
            )
            result.n_zero = sample.n_zero
            if result.fittable and self.n_boot:
                self._bootstrap(result, sample.values)
        if result.fittable:
            self._compare(result, sample.values)
        result.verdict = verdict(result)
        self.fit_ = result
        self._mirror(result)
        return self

    def _mirror(self, result: PowerLawFit) -> None:
        for name in (
            "alpha",
            "alpha_se",
            "xmin",
            "xmax",
            "n_tail",
            "ks",
            "p_value",
            "loglik",
            "comparisons",
            "verdict",
        ):
            setattr(self, name + "_", getattr(result, name))

    def _refit_function(self, result: PowerLawFit):
        """The data's procedure as a function of a replicate's histogram -> KS distance."""
        scanned = self.xmin is None and result.mode != "fixed"
        xmax_rule = parse_bound(self.xmax, "xmax")
        fixed_upper = (
            result.xmax if xmax_rule not in (None, "max") or result.mode == "clauset" else None
        )

        def refit(hist: Histogram) -> float | None:
            upper = fixed_upper if fixed_upper is not None else float(hist.values[-1])
            if scanned:
                scan = scan_xmin(hist, upper, self.discrete, self.ks, self.min_tail)
                best = scan.best()
                return None if best is None else float(scan.ks[best])
            numbers = fit_at(hist, result.xmin, upper, self.discrete, self.ks, self.min_tail)
            return numbers.get("ks")

        return refit

    def _bootstrap(
        self,
        result: PowerLawFit,
        values: np.ndarray,
        *,
        n_boot: int | None = None,
        stop_below: float | None = None,
    ) -> None:
        n_boot = n_boot or self.n_boot
        if self.discrete:
            xmax_rule = parse_bound(self.xmax, "xmax")
            replicate_ks = bootstrap_ks_discrete(
                values,
                result.alpha,
                result.xmin,
                result.xmax,
                scan=self.xmin is None and result.mode not in ("fixed", "window"),
                xmax_is_max=result.mode in ("bounded", "fixed") and xmax_rule in (None, "max"),
                ks=self.ks,
                min_tail=self.min_tail,
                n_boot=n_boot,
                seed=self.seed,
                progress=self.progress,
                stop_below=stop_below,
                observed_ks=result.ks,
            )
        else:
            replicate_ks = bootstrap_ks(
                values,
                result.alpha,
                result.xmin,
                result.xmax,
                False,
                self._refit_function(result),
                n_boot=n_boot,
                seed=self.seed,
                progress=self.progress,
                stop_below=stop_below,
                observed_ks=result.ks,
            )
        result.p_value, result.n_boot_failed = p_value(replicate_ks, result.ks)
        result.n_boot = int(replicate_ks.size)
        result.seed = self.seed

    def _fit_window(self, values: np.ndarray, n_zero: int) -> PowerLawFit:
        if not self.n_boot:
            raise FitError("window mode chooses its range by bootstrap p-values: give n_boot > 0")
        hist = Histogram.of(values)
        distinct = hist.values
        picks = np.unique(np.geomspace(1, distinct.size, WINDOW_CANDIDATES).astype(int) - 1)
        lows, highs = distinct[picks], distinct[picks]
        pairs = []
        for lo in lows:
            for hi in highs:
                n_in = int(hist.counts[(distinct >= lo) & (distinct <= hi)].sum())
                if hi > lo and n_in >= self.min_tail:
                    pairs.append((math.log(hi / lo), n_in, lo, hi))
        pairs.sort(key=lambda p: (-p[0], -p[1]))
        tried = 0
        for _, _, lo, hi in pairs:
            candidate = fit_power_law(
                values,
                mode="fixed",
                xmin=lo,
                xmax=hi,
                discrete=self.discrete,
                ks=self.ks,
                min_tail=self.min_tail,
            )
            if not candidate.fittable:
                continue
            tried += 1
            self._bootstrap(candidate, values, stop_below=self.p_min)
            if candidate.p_value is not None and candidate.p_value >= self.p_min:
                candidate.mode = "window"
                candidate.n_zero = n_zero
                return candidate
        empty = PowerLawFit("window", self.discrete, self.ks, int(values.size), n_zero)
        empty.fittable = False
        empty.reason = (
            f"no range among {tried} scanned has bootstrap p >= {self.p_min:g}"
            if tried
            else "no range holds enough distinct values"
        )
        return empty

    def _compare(self, result: PowerLawFit, values: np.ndarray) -> None:
        tail = Histogram.of(values).restrict(result.xmin, result.xmax)
        if not self.discrete:
            result.comparisons = []
            return
        log_z, _, _ = moments(result.alpha, result.xmin, result.xmax, True)
        log_pmf = -result.alpha * np.log(tail.values) - log_z
        names = self.alternatives if self.alternatives is not None else ALTERNATIVES.names()
        rows = compare(
            log_pmf, result.loglik, tail.values, tail.counts, result.xmin, result.xmax, list(names)
        )
        if self.null_pmf is not None:
            rows.append(
                null_comparison(
                    log_pmf,
                    tail.values,
                    tail.counts,
                    result.xmin,
                    result.xmax,
                    np.asarray(self.null_pmf),
                )
            )
        result.comparisons = rows


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.995 else "p = 1"


def verdict(result: PowerLawFit, significance: float = SIGNIFICANCE) -> str:
    """The fit in plain words, e.g. ``bounded power law not rejected (p = 0.43); favoured over
    exponential (p < 0.001) and the random null; lognormal indistinguishable (p = 0.31)``."""
    if not result.fittable:
        return f"cannot fit: {result.reason}"
    name = (
        "power law" if result.xmax is not None and math.isinf(result.xmax) else "bounded power law"
    )
    if result.p_value is None or (isinstance(result.p_value, float) and math.isnan(result.p_value)):
        head = f"{name} fitted (goodness of fit not tested: no bootstrap)"
    elif result.p_value < significance:
        head = f"{name} rejected ({_fmt_p(result.p_value)})"
    else:
        head = f"{name} not rejected ({_fmt_p(result.p_value)})"
    if result.n_boot_failed:
        head += f" [{result.n_boot_failed} of {result.n_boot} replicates could not be fitted]"
    favoured, beaten, tied = [], [], []
    for row in result.comparisons:
        label = (
            "the random null"
            if row["alternative"] == "random_null"
            else row["alternative"].replace("_", " ")
        )
        if row["p"] < significance and row["loglik_ratio"] > 0:
            favoured.append((label, row["p"]))
        elif row["p"] < significance and row["loglik_ratio"] < 0:
            beaten.append((label, row["p"]))
        else:
            tied.append((label, row["p"]))
    parts = [head]
    decades = _decades(result)
    if decades < MIN_DECADES:
        top = result.xmax if math.isfinite(result.xmax) else result.data_max
        parts.append(
            f"range {result.xmin:g}..{top:g} spans only {decades:.2f} decades: too "
            "narrow to call a power law"
        )
    if favoured:
        named = [
            f"{label} ({_fmt_p(p)})" if label != "the random null" else label
            for label, p in favoured
        ]
        parts.append("favoured over " + _join(named))
    if beaten:
        parts.append(_join([f"{label} ({_fmt_p(p)})" for label, p in beaten]) + " favoured")
    if tied:
        parts.append(
            _join([f"{label}" for label, _ in tied])
            + " indistinguishable ("
            + ", ".join(_fmt_p(p) for _, p in tied)
            + ")"
        )
    return "; ".join(parts)


def _decades(result: PowerLawFit) -> float:
    """log10 of the fitted range's width; for an unbounded fit, of the largest value in range."""
    top = result.xmax if math.isfinite(result.xmax) else result.data_max
    return math.log10(top / result.xmin) if top and result.xmin else 0.0


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def beats_random_null(result: PowerLawFit, significance: float = SIGNIFICANCE) -> bool:
    """True if the likelihood-ratio test prefers the power law to the random-mask null of the
    same shapes and densities (p below ``significance``): the degrees are not what chance gives.

    Examples
    --------
    >>> null = {"alternative": "random_null", "loglik_ratio": 12.0, "p": 0.001}
    >>> fit = PowerLawFit("window", True, "cdf", n=50, n_zero=0, comparisons=[null])
    >>> beats_random_null(fit), beats_random_null(PowerLawFit("window", True, "cdf", 50, 0))
    (True, False)
    """
    null = next((r for r in result.comparisons if r["alternative"] == "random_null"), None)
    return null is not None and null["p"] < significance and null["loglik_ratio"] > 0


def scale_free_supported(result: PowerLawFit, significance: float = SIGNIFICANCE) -> bool:
    """True only if the fit is not rejected, spans at least one decade, beats the random null,
    and no alternative is significantly better (docs/design.md, Fitting: no scale-free claim
    without beating the null)."""
    if not result.fittable or result.p_value is None or result.p_value < significance:
        return False
    if _decades(result) < MIN_DECADES:
        return False
    if not beats_random_null(result, significance):
        return False
    return not any(r["p"] < significance and r["loglik_ratio"] < 0 for r in result.comparisons)
