"""Degrees, views, node layers and chaining on tiny networks with exact answers."""

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topoprune.topology import (
    SparseNetwork,
    TopologyError,
    WeightLayer,
    layer_degrees,
    layer_graph,
)


def nx_degrees_of_mask(mask):
    """Independent reference: build the bipartite graph edge by edge, read networkx's degrees."""
    out, n_in = mask.shape
    graph = nx.Graph()
    graph.add_nodes_from(range(n_in + out))
    graph.add_edges_from((i, n_in + j) for j, i in zip(*np.nonzero(mask)))
    degrees = np.array([d for _, d in sorted(graph.degree())])
    return degrees[:n_in], degrees[n_in:]


@settings(max_examples=60, deadline=None)
@given(
    out=st.integers(1, 12),
    n_in=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_linear_degrees_equal_networkx(out, n_in, density, seed):
    mask = np.random.default_rng(seed).random((out, n_in)) < density
    fan_out, fan_in = layer_degrees(WeightLayer("fc", mask))
    ref_out, ref_in = nx_degrees_of_mask(mask)
    assert fan_out.tolist() == ref_out.tolist()
    assert fan_in.tolist() == ref_in.tolist()


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=2, max_size=4),
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_chained_node_degrees_equal_networkx_multipartite(sizes, density, seed):
    rng = np.random.default_rng(seed)
    masks = [rng.random((b, a)) < density for a, b in itertools.pairwise(sizes)]
    net = SparseNetwork([WeightLayer(f"l{i}", m) for i, m in enumerate(masks)], chain=True)
    graph = nx.Graph()
    for layer_index, size in enumerate(sizes):
        graph.add_nodes_from((layer_index, k) for k in range(size))
    for i, m in enumerate(masks):
        graph.add_edges_from(((i, a), (i + 1, b)) for b, a in zip(*np.nonzero(m)))
    for layer_index, node_layer in enumerate(net.node_layers()):
        expected = [graph.degree((layer_index, k)) for k in range(sizes[layer_index])]
        assert node_layer.total_degree.tolist() == expected
        assert node_layer.dead == expected.count(0)


def test_exported_graph_has_the_same_degrees():
    mask = np.random.default_rng(1).random((7, 9)) < 0.3
    weight = np.where(mask, np.random.default_rng(2).normal(size=mask.shape), 0.0)
    net = SparseNetwork([WeightLayer("fc.weight", mask, weight)])
    graph = layer_graph(net, "fc")
    fan_out, fan_in = layer_degrees(net.layers[0])
    assert [graph.degree(i) for i in range(9)] == fan_out.tolist()
    assert [graph.degree(9 + j) for j in range(7)] == fan_in.tolist()
    assert {d["bipartite"] for n, d in graph.nodes(data=True) if n < 9} == {0}
    j, i = np.nonzero(mask)
    assert graph.edges[i[0], 9 + j[0]]["weight"] == pytest.approx(weight[j[0], i[0]])


# A hand-computed conv layer: 2 output channels, 3 input channels, 2x2 kernels.
CONV = np.zeros((2, 3, 2, 2), dtype=bool)
CONV[0, 0] = [[1, 1], [0, 1]]  # 3 entries between in0 and out0
CONV[0, 2, 1, 1] = True  # 1 entry between in2 and out0
CONV[1, 2] = [[1, 0], [1, 0]]  # 2 entries between in2 and out1
# in1 is connected to nothing.


def test_conv_channel_view_counts_kernel_entries():
    fan_out, fan_in = layer_degrees(WeightLayer("conv", CONV), "channel")
    assert fan_out.tolist() == [3, 0, 3]
    assert fan_in.tolist() == [4, 2]


def test_conv_channel_simple_view_counts_neighbours():
    fan_out, fan_in = layer_degrees(WeightLayer("conv", CONV), "channel-simple")
    assert fan_out.tolist() == [1, 0, 2]
    assert fan_in.tolist() == [2, 1]


def test_conv_im2col_view_is_the_unrolled_matrix():
    fan_out, fan_in = layer_degrees(WeightLayer("conv", CONV), "im2col")
    # columns are (c_in, kh, kw) in C order: in0 -> 0..3, in1 -> 4..7, in2 -> 8..11
    assert fan_out.tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1]
    assert fan_in.tolist() == [4, 2]


def test_conv_graph_multiplicity_matches_channel_view():
    net = SparseNetwork([WeightLayer("conv", CONV)])
    graph = layer_graph(net, "conv", "channel")
    assert graph.edges[0, 3]["multiplicity"] == 3
    assert dict(graph.degree(weight="multiplicity")) == {0: 3, 1: 0, 2: 3, 3: 4, 4: 2}
    simple = layer_graph(net, "conv", "channel-simple")
    assert dict(simple.degree()) == {0: 1, 1: 0, 2: 2, 3: 2, 4: 1}


def test_conv1d_views():
    mask = np.zeros((1, 2, 3), dtype=bool)
    mask[0, 1] = [1, 0, 1]
    assert layer_degrees(WeightLayer("c", mask), "channel")[0].tolist() == [0, 2]
    assert layer_degrees(WeightLayer("c", mask), "channel-simple")[0].tolist() == [0, 1]
    assert layer_degrees(WeightLayer("c", mask), "im2col")[0].tolist() == [0, 0, 0, 1, 0, 1]


def flatten_network():
    conv = np.ones((2, 1, 1, 1), dtype=bool)  # 1 input channel -> 2 channels, 1x1 kernel
    fc = np.zeros((3, 8), dtype=bool)  # 2 channels x 2x2 positions flattened = 8 features
    fc[0, [0, 1, 4]] = True  # out0 <- channel 0 (two positions) and channel 1 (one)
    fc[1, [2]] = True  # out1 <- channel 0
    fc[2, [5, 6, 7]] = True  # out2 <- channel 1 (three positions)
    return SparseNetwork([WeightLayer("conv", conv), WeightLayer("fc", fc)], chain=True)


def test_flatten_boundary_in_channel_views():
    net = flatten_network()
    channel = {n.name: n for n in net.node_layers("channel")}
    assert channel["conv"].in_degree.tolist() == [1, 1]
    assert channel["conv"].out_degree.tolist() == [3, 4]  # nonzero weights per channel
    assert channel["fc"].in_degree.tolist() == [3, 1, 3]
    simple = {n.name: n for n in net.node_layers("channel-simple")}
    assert simple["conv"].out_degree.tolist() == [2, 2]  # distinct neighbours per channel
    assert simple["fc"].in_degree.tolist() == [2, 1, 1]


def test_im2col_does_not_chain_patch_nodes_to_channels():
    net = flatten_network()
    names = [n.name for n in net.node_layers("im2col")]
    assert names == ["input", "conv", "fc:in", "fc"]
    fc_in = net.node_layers("im2col")[2]
    assert fc_in.out_degree.tolist() == [1, 1, 1, 0, 1, 1, 1, 1]


def test_dead_nodes_are_counted_not_dropped():
    mask = np.array([[1, 0, 0], [0, 0, 0]], dtype=bool)
    net = SparseNetwork([WeightLayer("fc", mask)])
    inputs, outputs = net.node_layers()
    assert inputs.size == 3 and inputs.dead == 2
    assert outputs.size == 2 and outputs.dead == 1
    row = net.layer_table()[0]
    assert (row["dead_inputs"], row["dead_outputs"]) == (2, 1)


def test_unchained_layers_get_their_own_node_layers():
    a = WeightLayer("q.weight", np.eye(3, dtype=bool))
    b = WeightLayer("k.weight", np.eye(3, dtype=bool))
    names = [n.name for n in SparseNetwork([a, b], chain=False).node_layers()]
    assert names == ["input", "q", "k:in", "k"]


def test_sequential_chain_checks_shapes():
    a = WeightLayer("fc1", np.ones((4, 3), dtype=bool))
    b = WeightLayer("fc2", np.ones((2, 5), dtype=bool))
    with pytest.raises(TopologyError, match="fc1 has 4 outputs, fc2 takes 5 inputs"):
        SparseNetwork([a, b], chain=True)
    conv = WeightLayer("conv", np.ones((3, 1, 2, 2), dtype=bool))
    with pytest.raises(TopologyError, match="10 input features are not a multiple of 3"):
        SparseNetwork([conv, WeightLayer("fc", np.ones((2, 10), dtype=bool))], chain=True)


def test_select_keeps_chain_only_between_neighbours():
    layers = [WeightLayer(f"fc{i}.weight", np.ones((3, 3), dtype=bool)) for i in range(1, 4)]
    net = SparseNetwork(layers, chain=True)
    assert net.select("fc[12]").chain == (True,)
    picked = net.select(["fc1", "fc3"])
    assert picked.chain == (False,) and picked.skipped["fc2.weight"] == "not selected"
    with pytest.raises(TopologyError, match="no weight layer matches conv"):
        net.select("conv*")


def test_layer_statistics():
    mask = np.zeros((4, 5), dtype=bool)
    mask[0, :2] = True
    layer = WeightLayer("fc", mask)
    assert (layer.nnz, layer.size, layer.density, layer.compression) == (2, 20, 0.1, 10.0)
    assert WeightLayer("z", np.zeros((2, 2), bool)).compression == float("inf")


def test_invalid_layers():
    with pytest.raises(TopologyError, match="must be boolean"):
        WeightLayer("fc", np.ones((2, 2)))
    with pytest.raises(TopologyError, match="1-D tensors are not weight layers"):
        WeightLayer("b", np.ones(3, dtype=bool))
    with pytest.raises(TopologyError, match=r"mask shape \(2, 2\) differs from weight shape"):
        WeightLayer("fc", np.ones((2, 2), bool), np.ones((2, 3)))
    with pytest.raises(TopologyError, match="unknown view"):
        layer_degrees(WeightLayer("fc", np.ones((2, 2), bool)), "pixels")
