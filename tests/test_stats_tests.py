"""Bootstrap p-values, alternatives, the random null, verdicts, and the fit CLI."""

import json

import numpy as np
import pytest

from topoprune.cli import main
from topoprune.stats import BoundedPowerLaw, binomial_mixture_pmf, node_layer_null
from topoprune.stats.alternatives import vuong, wilks_boundary
from topoprune.stats.bootstrap import bootstrap_ks, bootstrap_ks_discrete
from topoprune.stats.bounded_power_law import sample
from topoprune.stats.scan import Histogram, scan_xmin
from topoprune.topology import SparseNetwork, WeightLayer


@pytest.fixture(scope="module")
def power_law_data():
    rng = np.random.default_rng(0)
    return np.concatenate([sample(1500, 2.3, 5, 150, True, rng), rng.integers(1, 5, 300)])


def test_bootstrap_is_seeded_and_in_range(power_law_data):
    a = BoundedPowerLaw(n_boot=100, seed=1, alternatives=[]).fit(power_law_data)
    b = BoundedPowerLaw(n_boot=100, seed=1, alternatives=[]).fit(power_law_data)
    c = BoundedPowerLaw(n_boot=100, seed=2, alternatives=[]).fit(power_law_data)
    assert a.p_value_ == b.p_value_ and 0.0 <= a.p_value_ <= 1.0
    assert a.fit_.n_boot == 100 and a.fit_.seed == 1
    assert c.p_value_ != a.p_value_ or c.p_value_ in (0.0, 1.0)


def test_batched_bootstrap_equals_the_replicate_by_replicate_procedure(power_law_data):
    fit = BoundedPowerLaw(alternatives=[]).fit(power_law_data).fit_
    batched = bootstrap_ks_discrete(
        power_law_data.astype(float),
        fit.alpha,
        fit.xmin,
        fit.xmax,
        scan=True,
        xmax_is_max=True,
        n_boot=30,
        seed=3,
        chunk=7,
    )

    def refit(hist):
        scan = scan_xmin(hist, hist.values[-1], True)
        return float(scan.ks[scan.best()])

    # the same replicates, drawn in the same order, refitted one by one
    rng = np.random.default_rng(3)
    values = power_law_data.astype(float)
    outside = values[(values < fit.xmin) | (values > fit.xmax)]
    looped = []
    for size in (7, 7, 7, 7, 2):
        n_model = rng.binomial(values.size, (values.size - outside.size) / values.size, size)
        drawn = sample(int(n_model.sum()), fit.alpha, fit.xmin, fit.xmax, True, rng)
        extra = rng.choice(outside, int(size * values.size - n_model.sum()))
        starts = np.r_[0, np.cumsum(n_model)]
        extra_starts = np.r_[0, np.cumsum(values.size - n_model)]
        for r in range(size):
            rep = np.concatenate(
                [drawn[starts[r] : starts[r + 1]], extra[extra_starts[r] : extra_starts[r + 1]]]
            )
            looped.append(refit(Histogram.of(rep.astype(float))))
    assert np.allclose(batched, looped, atol=1e-9)


def test_p_value_is_small_for_data_that_are_not_a_power_law():
    rng = np.random.default_rng(1)
    data = np.round(rng.lognormal(3, 0.3, 3000))
    model = BoundedPowerLaw(mode="fixed", xmin=10, xmax="max", n_boot=200, alternatives=[]).fit(
        data
    )
    assert model.p_value_ < 0.05 and "rejected" in model.verdict_


def test_continuous_bootstrap_runs_the_same_procedure():
    rng = np.random.default_rng(2)
    data = sample(500, 2.0, 1.0, 50.0, False, rng)
    model = BoundedPowerLaw(discrete=False, n_boot=50, alternatives=[]).fit(data)
    assert 0.0 <= model.p_value_ <= 1.0 and model.fit_.n_boot == 50
    ks = bootstrap_ks(
        data, model.alpha_, model.xmin_, model.xmax_, False, lambda h: 0.0, n_boot=5, seed=0
    )
    assert ks.tolist() == [0.0] * 5


def test_window_mode_keeps_a_range_with_p_at_least_p_min(power_law_data):
    model = BoundedPowerLaw(mode="window", n_boot=100, alternatives=[]).fit(power_law_data)
    assert model.fit_.fittable and model.p_value_ >= 0.1
    assert model.fit_.mode == "window" and model.xmin_ < model.xmax_
    from topoprune.stats import FitError

    with pytest.raises(FitError, match="window mode chooses its range by bootstrap"):
        BoundedPowerLaw(mode="window").fit(power_law_data)


def test_alternatives_pick_the_true_family():
    rng = np.random.default_rng(5)
    exponential = np.floor(rng.exponential(8.0, 4000)) + 1
    model = BoundedPowerLaw(mode="fixed", xmin=1, xmax="max").fit(exponential)
    row = {r["alternative"]: r for r in model.comparisons_}["exponential"]
    assert row["loglik_ratio"] < 0 and row["p"] < 0.001  # the exponential wins
    assert "exponential (p < 0.001) favoured" in model.verdict_
    assert abs(row["params"][0] - 1 / 8.0) < 0.01  # floor(Exp(mean 8)) is geometric, rate 1/8


def test_cutoff_is_nested_and_never_worse(power_law_data):
    model = BoundedPowerLaw().fit(power_law_data)
    row = {r["alternative"]: r for r in model.comparisons_}["power_law_cutoff"]
    assert row["test"] == "wilks" and row["loglik_ratio"] <= 0
    assert wilks_boundary(-100.0, -100.0) == 1.0
    assert wilks_boundary(-100.0, -98.0) == pytest.approx(0.5 * 0.04550026, rel=1e-5)


def test_vuong_sign_and_symmetry():
    log_a = np.log(np.array([0.5, 0.3, 0.2]))
    log_b = np.log(np.array([0.2, 0.3, 0.5]))
    counts = np.array([50, 30, 20])
    r_ab, p_ab = vuong(log_a, log_b, counts)
    r_ba, p_ba = vuong(log_b, log_a, counts)
    assert r_ab > 0 and r_ab == pytest.approx(-r_ba) and p_ab == pytest.approx(p_ba)


def test_random_null_of_a_tiny_network_is_exact():
    fc1 = WeightLayer("fc1", np.array([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool))  # density 3/8
    fc2 = WeightLayer("fc2", np.array([[1, 1]], dtype=bool))  # density 1
    net = SparseNetwork([fc1, fc2], chain=True)
    nulls = node_layer_null(net)
    assert np.allclose(nulls[0], [25 / 64, 30 / 64, 9 / 64])  # input: out-degree ~ Bin(2, 3/8)
    # hidden: in ~ Bin(4, 3/8) plus out ~ Bin(1, 1) = 1 + Bin(4, 3/8)
    from scipy import stats

    assert np.allclose(nulls[1][1:], stats.binom.pmf(range(5), 4, 3 / 8)) and nulls[1][0] == 0
    assert binomial_mixture_pmf([(10, 0.3), (7, 0.6)]).sum() == pytest.approx(1.0)


def test_conv_channel_simple_null_uses_any_entry_probability():
    conv = WeightLayer("c", np.random.default_rng(0).random((4, 3, 2, 2)) < 0.25)
    net = SparseNetwork([conv])
    from topoprune.stats.null import layer_null_components

    (trials_in, q_in), (trials_out, _) = layer_null_components(net, 0, "channel-simple")
    rho = conv.density
    assert (trials_in, trials_out) == (4, 3)
    assert q_in == pytest.approx(1 - (1 - rho) ** 4)
    assert layer_null_components(net, 0, "channel") == ((16, rho), (12, rho))


# ---- CLI ------------------------------------------------------------------------------------


def test_fit_cli_reads_lines_json_and_stdin(tmp_path, capsys, monkeypatch, power_law_data):
    lines = tmp_path / "deg.txt"
    lines.write_text("# degrees\n" + "\n".join(str(int(v)) for v in power_law_data) + "\n")
    as_json = tmp_path / "deg.json"
    as_json.write_text(json.dumps([int(v) for v in power_law_data]))
    outputs = []
    for source in (lines, as_json):
        assert main(["fit", str(source), "--json", "--alternatives", ""]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert outputs[0]["xmax"] == float(power_law_data.max())
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(lines.read_text()))
    assert main(["fit", "-", "--mode", "clauset", "--boot", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "alpha = " in out and "bootstrap p = " in out and "verdict: power law" in out


def test_fit_cli_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nthree\n")
    assert main(["fit", str(bad)]) == 2
    assert "bad.txt:3: not a number: 'three'" in capsys.readouterr().err
    frac = tmp_path / "frac.txt"
    frac.write_text("1\n2.5\n")
    assert main(["fit", str(frac)]) == 2
    assert "non-integer" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "missing.txt")]) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["fit", str(empty)]) == 2
    assert "no data" in capsys.readouterr().err


def test_fit_cli_figure(tmp_path, power_law_data, capsys):
    data = tmp_path / "d.txt"
    data.write_text("\n".join(str(int(v)) for v in power_law_data))
    figure = tmp_path / "fit.png"
    assert main(["fit", str(data), "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 10_000


def test_analyze_has_fit_columns(tmp_path, capsys):
    import torch

    rng = np.random.default_rng(0)
    torch.save(
        {
            "fc1.weight": torch.from_numpy((rng.random((300, 784)) < 0.1) * 1.0),
            "fc2.weight": torch.from_numpy((rng.random((100, 300)) < 0.1) * 1.0),
        },
        tmp_path / "r.pt",
    )
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "r.pt"),
                "--chain",
                "sequential",
                "--json",
                "--boot",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    for row in report["node_layers"]:
        columns = row["fit_columns"]
        assert set(columns) >= {
            "alpha",
            "alpha_se",
            "xmin",
            "xmax",
            "n_in_range",
            "ks",
            "p",
            "verdict",
        }
        assert columns["p"] is None or 0 <= columns["p"] <= 1
        assert columns["scale_free"] is False  # a random mask is not scale-free
    assert main(["analyze", str(tmp_path / "r.pt"), "--chain", "sequential"]) == 0
    text = capsys.readouterr().out
    assert "scale-free" in text and "verdict" not in text.split("node layer  alpha")[0]
