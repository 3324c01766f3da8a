"""Connectivity beyond degrees on hand-built networks with known answers: effective sparsity
(connections on no input-to-output path), spectral gaps against the Ramanujan bound, and N:M
semi-structured sparsity."""

from __future__ import annotations

import numpy as np
import pytest

from topoprune.cli import main
from topoprune.topology import connectivity
from topoprune.topology.connectivity import effective_connectivity, ramanujan_row
from topoprune.topology.layers import WeightLayer, nm_share
from topoprune.topology.network import SparseNetwork


def layer(name, rows):
    return WeightLayer(name, np.array(rows, dtype=bool))


def test_effective_connectivity_by_hand():
    # 3 inputs -> 3 hidden -> 2 hidden -> 1 output.
    # hidden a.1 receives nothing: its out-edge is ineffective; hidden b.1 feeds nothing: its
    # in-edges are ineffective, which cuts a.2 off from the output, and so a.2's in-edge too.
    a = layer("a.weight", [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    b = layer("b.weight", [[1, 1, 0], [0, 0, 1]])
    c = layer("c.weight", [[1, 0]])
    result = effective_connectivity(SparseNetwork([a, b, c], chain=True))
    assert [r["effective_nnz"] for r in result["layers"]] == [2, 1, 1]
    assert [r["ineffective"] for r in result["layers"]] == [1, 2, 0]
    assert result["effective_nnz"] == 4 and result["nnz"] == 7
    cut = {n["node_layer"]: (n["cut_from_input"], n["cut_from_output"])
           for n in result["node_layers"]}  # fmt: skip
    assert cut == {"input": (0, 1), "a": (1, 1), "b": (0, 1), "c": (0, 0)}


def test_effective_connectivity_through_a_flatten():
    conv = WeightLayer("conv.weight", np.zeros((2, 1, 3, 3), dtype=bool))
    conv.mask[0, 0, 1, 1] = True  # channel 1 receives nothing
    fc = WeightLayer("fc.weight", np.ones((3, 2 * 4), dtype=bool))  # 2 channels x 4 positions
    result = effective_connectivity(SparseNetwork([conv, fc], chain=True))
    # channel 1's four features carry nothing to the 3 outputs: 12 of 24 are ineffective
    assert [r["effective_nnz"] for r in result["layers"]] == [1, 12]


def test_unchained_networks_have_no_effective_connectivity():
    a, b = layer("a.weight", [[1, 1]]), layer("b.weight", [[1]])
    assert effective_connectivity(SparseNetwork([a, b], chain=False)) is None


def test_spectral_gaps_of_known_graphs():
    complete = ramanujan_row(np.ones((3, 5), dtype=bool))
    assert complete["s1"] == pytest.approx(np.sqrt(15)) and complete["s2"] == pytest.approx(0)
    assert complete["ramanujan_bound"] == pytest.approx(np.sqrt(4) + np.sqrt(2))
    assert complete["below_bound"]
    matching = ramanujan_row(np.eye(4, dtype=bool))  # degree 1: no gap, bound 0
    assert (matching["s1"], matching["s2"], matching["ramanujan_bound"]) == pytest.approx((1, 1, 0))
    assert not matching["below_bound"]
    # two disjoint K_{2,2}: disconnected, s1 = s2 = 2
    blocks = np.kron(np.eye(2), np.ones((2, 2))).astype(bool)
    assert ramanujan_row(blocks)["spectral_gap"] == pytest.approx(0, abs=1e-9)


def test_sparse_and_dense_singular_values_agree(monkeypatch):
    adjacency = np.random.default_rng(0).random((50, 60)) < 0.2
    dense = connectivity.top_singular_values(adjacency)
    monkeypatch.setattr(connectivity, "DENSE_SVD_LIMIT", 2)
    assert connectivity.top_singular_values(adjacency) == pytest.approx(dense, rel=1e-6)


def test_nm_shares():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 256))
    # 2:4 by magnitude: the 2 largest of every 4 consecutive inputs
    groups = np.abs(weights).reshape(64, 64, 4)
    keep = groups >= np.sort(groups, axis=2)[:, :, 2:3]
    two_four = WeightLayer("fc", keep.reshape(64, 256))
    assert nm_share(two_four, 2, 4) == 1.0
    assert nm_share(two_four, 4, 8) == 1.0  # 2:4 implies 4:8
    half = WeightLayer("fc", rng.random((400, 400)) < 0.5)
    assert nm_share(half, 2, 4) == pytest.approx(11 / 16, abs=0.02)  # P(Bin(4, 1/2) <= 2)
    # convolutions group input channels at each kernel position
    conv = np.zeros((2, 4, 3, 3), dtype=bool)
    conv[:, :2] = True  # channels 0-1 everywhere: 2 of every 4 channels, all 9 taps
    assert nm_share(WeightLayer("conv", conv), 2, 4) == 1.0
    assert nm_share(WeightLayer("tiny", np.ones((3, 3), dtype=bool)), 2, 4) is None


def test_boolean_masks_with_odd_bytes_count_as_booleans():
    from topoprune.topology.layers import mask_from_tensor

    raw = np.array([[2, 0, 5, 0, 1, 1, 0, 0]], dtype=np.uint8).view(bool)  # a file's bytes
    layer = WeightLayer("fc", mask_from_tensor("fc", raw, raw.shape))
    assert layer.nnz == 4 and nm_share(layer, 2, 4) == 1.0


def test_analyze_reports_connectivity_spectra_and_nm(tmp_path, capsys):
    np.savez(tmp_path / "net.npz", a=np.array([[1.0, 1, 0, 0], [0, 0, 0, 0]]),
             b=np.array([[1.0, 1]]))  # fmt: skip
    path = str(tmp_path / "net.npz")
    assert main(["analyze", path, "--chain", "sequential", "--no-fit", "--spectral",
                 "--allow-empty-layers"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "effective connectivity: 3 of 4 connections" in out
    assert "Ramanujan bound" in out and "2:4 / 4:8" in out


def test_analyze_figures_draw_panels_and_an_overview(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mlp.npz", a=(rng.random((60, 80)) < 0.2).astype(np.float32),
             b=(rng.random((10, 60)) < 0.3).astype(np.float32))  # fmt: skip
    figures = tmp_path / "figures"
    assert main(["analyze", str(tmp_path / "mlp.npz"), "--chain", "sequential", "--boot", "0",
                 "--figures", str(figures), "--quiet"]) == 0  # fmt: skip
    names = {p.name for p in figures.iterdir()}
    assert {"node-layers-1.png", "overview.png"} <= names
    assert all((figures / n).stat().st_size > 5000 for n in names)
