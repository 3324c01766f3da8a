"""Chaining read from nn.Modules, and whole-network graph export."""

import numpy as np
import torch
from torch import nn

from topoprune.topology import biadjacency, network_from_module, network_graph


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, x):
        scores = torch.softmax(self.query(x) @ self.key(x).transpose(-1, -2), dim=-1)
        return self.out(scores @ self.value(x))


def test_parallel_layers_do_not_chain_although_shapes_do():
    net = network_from_module(Attention())
    assert net.names == ["query.weight", "key.weight", "value.weight", "out.weight"]
    assert net.chain == (False, False, False)


def test_cnn_chains_through_pooling_and_flatten():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(96, 10),
    )
    net = network_from_module(model)
    assert net.chain == (True, True)
    assert [n.size for n in net.node_layers("channel")] == [1, 4, 6, 10]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(h + self.b(h))


def test_residual_sum_breaks_the_chain_where_two_layers_feed_one():
    net = network_from_module(Residual())
    assert net.names == ["a.weight", "b.weight", "c.weight"]
    # a feeds both b and c; c is fed by a and b: neither boundary is a simple chain
    assert net.chain == (False, False)


def test_network_graph_is_multipartite_with_all_edges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.2] = 0
    net = network_from_module(model)
    graph = network_graph(net)
    assert graph.number_of_nodes() == 6 + 5 + 3
    assert graph.number_of_edges() == net.nnz
    subsets = {d["subset"] for _, d in graph.nodes(data=True)}
    assert subsets == {0, 1, 2}
    for node_layer in net.node_layers():
        degrees = [graph.degree((node_layer.name, k)) for k in range(node_layer.size)]
        assert degrees == node_layer.total_degree.tolist()
    matrix = biadjacency(net, "0").toarray()
    assert matrix.shape == (6, 5)
    assert np.array_equal(matrix.T != 0, model[0].weight.detach().numpy() != 0)


def test_a_layer_called_twice_is_not_chained_and_the_note_says_why():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(self.a(x)))

    network = network_from_module(Shared())
    assert network.chain == (False,)
    assert network.notes == ["a is called more than once (a recurrence or a shared layer): "
                             "layers are not chained"]  # fmt: skip
