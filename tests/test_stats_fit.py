"""Bounded power-law MLE and bound selection: reference values, recovery, cross-checks."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topoprune.stats import BoundedPowerLaw, FitError, fit_power_law, power_sum, solve_alpha
from topoprune.stats.bounded_power_law import sample, standard_error
from topoprune.stats.scan import Histogram, ks_distance, scan_batch, scan_xmin

# A copy of shared/reference/powerlaw (values computed in 30-digit arithmetic; see its README)
REFERENCE = Path(__file__).resolve().parent / "data" / "powerlaw_reference"
EXPECTED = json.loads((REFERENCE / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_alpha_and_loglik(name):
    expected = EXPECTED[name]
    data = np.loadtxt(REFERENCE / f"{name}.txt")
    if expected["mode"] == "fixed":
        fit = fit_power_law(data, mode="fixed", xmin=expected["xmin"], xmax=expected["xmax"])
    else:
        fit = fit_power_law(data, mode="clauset")
        assert fit.xmin == expected["r_poweRlaw"]["xmin"]  # the xmin R's poweRlaw chose
        assert fit.n_tail == expected["n_tail"]
        assert fit.ks == pytest.approx(expected["r_poweRlaw"]["ks"], abs=1e-6)
    assert fit.alpha == pytest.approx(expected["alpha"], rel=1e-6)
    assert fit.loglik == pytest.approx(expected["loglik"], rel=1e-9)


def test_alpha_below_one_on_a_bounded_range():
    data = np.loadtxt(REFERENCE / "bounded_a0.7_1_500_n3000.txt")
    fit = fit_power_law(data, mode="fixed", xmin=1, xmax=500)
    assert 0.6 < fit.alpha < 0.8  # legitimate: the normaliser is a finite sum


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(-3, 9), a=st.integers(1, 60), length=st.integers(0, 3000))
def test_power_sum_equals_the_direct_sum(alpha, a, length):
    b = a + length
    direct = float(np.sum(np.arange(a, b + 1, dtype=float) ** -alpha))
    assert float(power_sum(alpha, a, b)) == pytest.approx(direct, rel=1e-10)


def test_unbounded_sum_is_the_hurwitz_zeta():
    from scipy.special import zeta

    for alpha, a in [(1.5, 1), (2.5, 7), (3.2, 100), (1.05, 20)]:
        assert float(power_sum(alpha, a, np.inf)) == pytest.approx(zeta(alpha, a), rel=1e-12)


def test_score_equation_holds_at_the_mle():
    rng = np.random.default_rng(3)
    x = sample(4000, 1.7, 2, 400, True, rng).astype(float)
    alpha = float(solve_alpha(np.log(x).mean(), 2, 400)[0])
    k = np.arange(2, 401)
    p = k**-alpha / np.sum(k**-alpha)
    assert float(p @ np.log(k)) == pytest.approx(np.log(x).mean(), rel=1e-9)


def test_continuous_unbounded_mle_is_the_closed_form():
    rng = np.random.default_rng(0)
    x = sample(5000, 2.5, 1.0, np.inf, False, rng)
    fit = fit_power_law(x, mode="fixed", xmin=1.0, xmax="inf", discrete=False)
    closed = 1 + x.size / np.sum(np.log(x))
    assert fit.alpha == pytest.approx(closed, rel=1e-9)
    assert fit.alpha_se == pytest.approx((closed - 1) / math.sqrt(x.size), rel=1e-6)


def test_continuous_bounded_fit_recovers_alpha():
    rng = np.random.default_rng(1)
    x = sample(20000, 1.0, 1.0, 100.0, False, rng)  # alpha = 1 exactly: log-uniform
    fit = fit_power_law(x, mode="fixed", xmin=1.0, xmax=100.0, discrete=False)
    assert abs(fit.alpha - 1.0) < 3 * fit.alpha_se


def test_standard_error_has_nominal_coverage():
    rng = np.random.default_rng(7)
    hits = 0
    trials = 300
    for _ in range(trials):
        x = sample(400, 2.2, 3, 300, True, rng).astype(float)
        alpha = float(solve_alpha(np.log(x).mean(), 3, 300)[0])
        se = standard_error(alpha, x.size, 3, 300, True)
        hits += abs(alpha - 2.2) <= 1.96 * se
    assert 0.92 <= hits / trials <= 0.98


@pytest.mark.parametrize(
    ("alpha", "xmin", "xmax"), [(2.5, 1, np.inf), (1.6, 3, 1000), (0.8, 1, 200)]
)
def test_synthetic_recovery_with_bound_selection(alpha, xmin, xmax):
    rng = np.random.default_rng(11)
    x = sample(20000, alpha, xmin, xmax, True, rng).astype(float)
    mode = "clauset" if np.isinf(xmax) else "bounded"
    fit = fit_power_law(x, mode=mode, xmax=None if mode == "bounded" else "inf")
    assert abs(fit.alpha - alpha) < 4 * fit.alpha_se
    assert fit.xmin <= xmin + 3


def test_ks_conventions():
    rng = np.random.default_rng(2)
    hist = Histogram.of(sample(3000, 2.0, 1, 300, True, rng).astype(float))
    observed = ks_distance(hist, 2.0, 1, 300, True, "observed")
    integers = ks_distance(hist, 2.0, 1, 300, True, "integers")
    assert 0 < observed <= integers
    # brute force of the integer convention: CDFs P(X <= k) at every integer in range
    k = np.arange(1, 301)
    model = np.cumsum(k**-2.0) / np.sum(k**-2.0)
    values = np.repeat(hist.values, hist.counts)
    empirical = np.searchsorted(np.sort(values), k, side="right") / values.size
    assert integers == pytest.approx(np.max(np.abs(model - empirical)), abs=1e-12)


def test_batched_scan_equals_one_sample_scans():
    rng = np.random.default_rng(5)
    samples = [
        np.concatenate([sample(800, 2.3, 4, 500, True, rng), rng.integers(1, 4, 200)])
        for _ in range(4)
    ]
    values, counts, which, uppers = [], [], [], []
    for i, s in enumerate(samples):
        hist = Histogram.of(s.astype(float))
        values.append(hist.values)
        counts.append(hist.counts)
        which.append(np.full(hist.values.size, i))
        uppers.append(hist.values[-1])
    batch = scan_batch(
        np.concatenate(values),
        np.concatenate(counts),
        np.concatenate(which),
        np.array(uppers, float),
    )
    for i, s in enumerate(samples):
        hist = Histogram.of(s.astype(float))
        single = scan_xmin(hist, hist.values[-1], True)
        mine = batch.sample == i
        assert np.array_equal(single.candidates, batch.candidates[mine])
        assert np.allclose(single.alphas, batch.alphas[mine], rtol=1e-8)
        assert np.allclose(single.ks, batch.ks[mine], atol=1e-9)
        brute = [
            ks_distance(hist, a, c, hist.values[-1], True)
            for a, c in zip(single.alphas, single.candidates)
        ]
        assert np.allclose(single.ks, brute, atol=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cross_check_with_powerlaw_package():
    powerlaw = pytest.importorskip("powerlaw")
    rng = np.random.default_rng(4)
    x = sample(5000, 2.4, 3, np.inf, True, rng).astype(float)
    x = np.concatenate([x, rng.integers(1, 3, 800).astype(float)])
    ours = fit_power_law(x, mode="clauset")
    with np.errstate(all="ignore"):
        theirs = powerlaw.Fit(
            x,
            discrete=True,
            estimate_discrete=False,
            verbose=False,
            parameter_ranges={"alpha": [1.0001, 6.0]},
        )
    assert ours.xmin == theirs.xmin
    assert ours.alpha == pytest.approx(theirs.alpha, rel=1e-3)  # their optimiser stops early
    assert ours.ks == pytest.approx(theirs.D, abs=1e-3)


def test_barabasi_albert_tail_is_a_power_law():
    import networkx as nx

    graph = nx.barabasi_albert_graph(5000, 3, seed=1)
    degrees = np.array([d for _, d in graph.degree()])
    model = BoundedPowerLaw(mode="clauset", n_boot=200, seed=0).fit(degrees)
    assert 2.5 < model.alpha_ < 3.4  # BA's asymptotic exponent is 3
    assert model.p_value_ >= 0.1
    assert "not rejected" in model.verdict_


def test_erdos_renyi_is_not_called_a_power_law():
    from topoprune.stats import binomial_mixture_pmf, scale_free_supported

    rng = np.random.default_rng(0)
    degrees = rng.binomial(2000, 0.02, 2048)
    null = binomial_mixture_pmf([(2000, 0.02)])
    for mode in ("bounded", "clauset"):
        model = BoundedPowerLaw(mode=mode, n_boot=100, null_pmf=null).fit(degrees)
        assert not scale_free_supported(model.fit_)
        assert "too narrow to call a power law" in model.verdict_ or "rejected" in model.verdict_


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no data"),
        ([1, 2, float("nan")], "NaN"),
        ([1, -2, 3], "negative"),
        ([1, 2.5, 3], "non-integer values \\(e.g. 2.5\\) for a discrete fit"),
        (["a"], "must be numbers"),
    ],
)
def test_invalid_data_is_an_error(data, message):
    with pytest.raises(FitError, match=message):
        fit_power_law(data)


def test_degenerate_data_gives_an_explicit_cannot_fit():
    equal = fit_power_law([7] * 50)
    assert not equal.fittable and "all 50 values are equal" in equal.reason
    assert equal.alpha is None and equal.verdict.startswith("cannot fit")
    few = fit_power_law([1, 2, 3, 4, 5])
    assert not few.fittable and "fewer than 10" in few.reason
    fixed = fit_power_law(list(range(1, 100)), mode="fixed", xmin=95, xmax=99)
    assert not fixed.fittable and "only 5 values in [95, 99]" in fixed.reason
    zeros = BoundedPowerLaw().fit([0, 0, 0]).fit_
    assert not zeros.fittable and zeros.n_zero == 3


def test_zeros_are_set_aside_and_counted():
    rng = np.random.default_rng(0)
    x = np.concatenate([sample(2000, 2.0, 1, 100, True, rng), np.zeros(37)])
    fit = fit_power_law(x)
    assert fit.n_zero == 37 and fit.n == 2000


def test_bad_bounds():
    with pytest.raises(FitError, match=r"xmin .* must be below xmax"):
        fit_power_law(range(1, 50), mode="fixed", xmin=20, xmax=10)
    with pytest.raises(FitError, match="fixed mode needs both bounds"):
        fit_power_law(range(1, 50), mode="fixed")
    with pytest.raises(FitError, match="clauset mode is unbounded"):
        fit_power_law(range(1, 50), mode="clauset", xmax=30)
    with pytest.raises(FitError, match="unknown mode"):
        fit_power_law(range(1, 50), mode="magic")
    with pytest.raises(FitError, match="must be a number, 'max' or 'inf'"):
        fit_power_law(range(1, 50), xmax="big")
