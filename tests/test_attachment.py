"""Preferential attachment: exact edge changes on tiny masks, and the two controls (growth
proportional to d_i d_j gives beta near 1; uniform creation gives beta near 0)."""

import json

import numpy as np
import pytest

from topoprune.attachment import (
    AttachmentError,
    attachment_rate,
    compare_snapshots,
    created_edges,
    degree_growth,
    distribution_change,
    removed_edges,
)
from topoprune.cli import main
from topoprune.io.checkpoint import save_network
from topoprune.topology.layers import WeightLayer
from topoprune.topology.network import SparseNetwork


def test_created_and_removed_edges_exact():
    before = np.array([[1, 1, 0], [0, 0, 1]], bool)
    after = np.array([[1, 0, 1], [1, 0, 1]], bool)
    assert created_edges(before, after).tolist() == [[False, False, True], [True, False, False]]
    assert removed_edges(before, after).tolist() == [[False, True, False], [False, False, False]]
    with pytest.raises(AttachmentError, match="not the same layer"):
        created_edges(before, after[:, :2])


def heterogeneous_degrees(rng, n, exponent=2.2, top=200):
    """Degrees drawn from a discrete power law on [1, top]."""
    k = np.arange(1, top + 1)
    p = k**-exponent
    return rng.choice(k, size=n, p=p / p.sum()).astype(float)


def grow(rng, before, d_in, d_out, n_new, preferential):
    """Add ``n_new`` connections among the unconnected pairs, by batches; each batch's pair
    probabilities are proportional to the current degree product (a bipartite Barabasi-Albert
    growth) or uniform."""
    mask = before.copy()
    d_in, d_out = d_in.copy(), d_out.copy()
    for _ in range(10):
        weight = np.outer(d_out, d_in) if preferential else np.ones(mask.shape)
        weight[mask] = 0
        picks = rng.choice(
            mask.size, size=n_new // 10, replace=False, p=(weight / weight.sum()).ravel()
        )
        rows, cols = np.unravel_index(picks, mask.shape)
        mask[rows, cols] = True
        np.add.at(d_out, rows, 1)
        np.add.at(d_in, cols, 1)
    return mask


@pytest.mark.parametrize(("preferential", "expected"), [(True, 1.0), (False, 0.0)])
def test_controls_growth_and_uniform_creation(preferential, expected):
    # rates stay well below 1 (as in pruned layers), where rate ~ k^beta is the right model
    rng = np.random.default_rng(1)
    d_in = heterogeneous_degrees(rng, 1500, exponent=1.5, top=40)
    d_out = heterogeneous_degrees(rng, 1000, exponent=1.5, top=40)
    before = rng.random((1000, 1500)) < 0.002
    after = grow(rng, before, d_in, d_out, 1500, preferential)
    result = attachment_rate(before, after, d_in, d_out, n_boot=300, seed=0)
    assert result.n_created == 1500 and result.n_removed == 0
    assert abs(result.beta - expected) < 0.1
    assert result.beta_low < expected < result.beta_high
    assert result.beta_high - result.beta_low < 0.15
    assert abs(result.beta_cumulative - expected) < 0.15
    # binned counts add up to every candidate pair and created connection
    assert result.candidates.sum() + result.dead_pairs == result.n_candidates
    assert result.created.sum() + result.created_dead == 1500


def test_attachment_needs_created_edges_and_matching_degrees():
    before = np.zeros((3, 4), bool)
    with pytest.raises(AttachmentError, match="no connection was created"):
        attachment_rate(before, before, np.ones(4), np.ones(3))
    with pytest.raises(AttachmentError, match="do not fit masks"):
        attachment_rate(before, before, np.ones(3), np.ones(3))


def test_degree_growth_exact_and_errors():
    growth = degree_growth(np.array([1, 2, 3, 4]), np.array([3, 5, 7, 9]))  # delta = d + 1
    assert growth.slope == pytest.approx(1.0) and growth.intercept == pytest.approx(1.0)
    assert growth.r_squared == pytest.approx(1.0) and growth.n_nodes == 4
    with pytest.raises(AttachmentError, match="2 distinct degrees"):
        degree_growth(np.array([2, 2, 2]), np.array([3, 4, 5]))


def test_distribution_change():
    rng = np.random.default_rng(0)
    same = rng.integers(1, 30, 500)
    assert distribution_change(same, same, n_permutations=200)["p"] == 1.0
    shifted = distribution_change(same, same * 3, n_permutations=200)
    assert shifted["p"] < 0.01 and shifted["ks"] > 0.4
    with pytest.raises(AttachmentError, match="at least 2 nodes"):
        distribution_change(np.array([0, 0, 3]), same)


def two_layer_network(first: np.ndarray, second: np.ndarray) -> SparseNetwork:
    return SparseNetwork(
        [WeightLayer("fc1.weight", first), WeightLayer("fc2.weight", second)], chain=True
    )


def snapshots():
    rng = np.random.default_rng(3)
    first0 = rng.random((50, 80)) < 0.1
    second0 = rng.random((10, 50)) < 0.3
    first1 = first0 | (rng.random((50, 80)) < 0.05)
    first1[0, :] = False  # node 0 of the hidden layer loses its inputs
    second1 = second0 | (rng.random((10, 50)) < 0.1)
    return (first0, second0), (first1, second1)


def test_compare_snapshots_counts():
    (f0, s0), (f1, s1) = snapshots()
    result = compare_snapshots(two_layer_network(f0, s0), two_layer_network(f1, s1), n_boot=50)
    fc1, fc2 = result["layers"]
    assert fc1["created"] == int((f1 & ~f0).sum()) and fc1["removed"] == int((f0 & ~f1).sum())
    assert fc2["created"] == int((s1 & ~s0).sum()) and fc2["removed"] == 0
    assert fc1["attachment"]["n_created"] == fc1["created"]
    assert [n["n_nodes"] for n in result["node_layers"]] == [80, 50, 10]
    hidden = result["node_layers"][1]
    degree0 = f0.sum(1) + s0.sum(0)
    degree1 = f1.sum(1) + s1.sum(0)
    assert hidden["growth"]["mean_before"] == pytest.approx(degree0.mean())
    assert hidden["growth"]["mean_after"] == pytest.approx(degree1.mean())
    with pytest.raises(AttachmentError, match="not the same architecture"):
        compare_snapshots(two_layer_network(f0, s0), two_layer_network(f0[:, :70], s0))


def test_cli_attach(tmp_path, capsys):
    (f0, s0), (f1, s1) = snapshots()
    save_network(two_layer_network(f0, s0), tmp_path / "a.pt")
    save_network(two_layer_network(f1, s1), tmp_path / "b.pt")
    code = main(["attach", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--json",
                 "--boot", "50", "--figures", str(tmp_path / "fig")])  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["layers"][0]["created"] == int((f1 & ~f0).sum())
    assert (tmp_path / "fig" / "attachment_rates.png").stat().st_size > 10_000
    assert (tmp_path / "fig" / "degree_growth.png").stat().st_size > 10_000
    assert main(["attach", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "beta" in text
    assert main(["attach", str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")]) == 2
