"""Graphs on demand: networkx bipartite graphs, scipy.sparse biadjacency, multipartite networks.

networkx conventions: a layer's input nodes carry ``bipartite=0`` and are numbered
``0..n_in-1``; its output nodes carry ``bipartite=1`` and are numbered ``n_in..n_in+n_out-1``
(as ``networkx.algorithms.bipartite.from_biadjacency_matrix`` numbers rows then columns).
Edges carry ``multiplicity`` (the number of nonzero weights they stand for; 1 for a linear layer)
and ``weight`` (the weight itself) when one edge is one weight and weights are known.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

from topoprune.topology.layers import edge_multiplicity, edge_weights
from topoprune.topology.network import SparseNetwork, short_name


def _layer_edges(network: SparseNetwork, name: str, view: str):
    index = network.names.index(network.layer(name).name)
    layer = network.layers[index]
    counts = edge_multiplicity(layer, view, network.input_groups(index, view))
    out_idx, in_idx = np.nonzero(counts)
    weights = edge_weights(layer, view)
    if weights is not None and weights.shape != counts.shape:
        weights = None  # after a flatten an edge stands for several weights
    values = None if weights is None else weights[out_idx, in_idx]
    return counts.shape, in_idx, out_idx, counts[out_idx, in_idx], values


def biadjacency(network: SparseNetwork, layer: str, view: str = "channel") -> sp.csr_array:
    """The ``(n_in, n_out)`` biadjacency matrix of a layer (rows: inputs, as networkx orders it).

    Entries are edge multiplicities (1 for a linear layer; nonzero kernel entries in the
    ``channel`` view).

    Examples
    --------
    >>> from topoprune.topology.layers import WeightLayer
    >>> net = SparseNetwork([WeightLayer("fc", np.array([[1, 0, 1]], dtype=bool))])
    >>> biadjacency(net, "fc").toarray().tolist()
    [[1], [0], [1]]
    """
    (n_out, n_in), in_idx, out_idx, mult, _ = _layer_edges(network, layer, view)
    return sp.csr_array((mult, (in_idx, out_idx)), shape=(n_in, n_out))


def layer_graph(network: SparseNetwork, layer: str, view: str = "channel") -> nx.Graph:
    """A layer's bipartite graph (inputs ``bipartite=0``, outputs ``bipartite=1``).

    ``G.degree(weight="multiplicity")`` equals topoprune's degrees in the ``channel`` view;
    ``G.degree()`` equals them for linear layers and the other views.
    """
    (n_out, n_in), in_idx, out_idx, mult, values = _layer_edges(network, layer, view)
    graph = nx.Graph(layer=network.layer(layer).name, view=view)
    graph.add_nodes_from(range(n_in), bipartite=0)
    graph.add_nodes_from(range(n_in, n_in + n_out), bipartite=1)
    targets = (out_idx + n_in).tolist()
    if values is None:
        graph.add_edges_from(
            (i, j, {"multiplicity": int(m)})
            for i, j, m in zip(in_idx.tolist(), targets, mult.tolist())
        )
    else:
        graph.add_edges_from(
            (i, j, {"multiplicity": 1, "weight": float(w)})
            for i, j, w in zip(in_idx.tolist(), targets, values.tolist())
        )
    return graph


def network_graph(network: SparseNetwork, view: str = "channel") -> nx.Graph:
    """The whole network as one multipartite graph.

    Nodes are ``(node_layer_name, index)`` with attributes ``subset`` (the node layer's position,
    for ``networkx.multipartite_layout``) and ``node_layer``. Unchained layers get their own input
    node layer, as in :meth:`SparseNetwork.node_layers`.
    """
    graph = nx.Graph(view=view)
    node_layers = network.node_layers(view)
    for i, node_layer in enumerate(node_layers):
        graph.add_nodes_from(
            ((node_layer.name, k) for k in range(node_layer.size)),
            subset=i,
            node_layer=node_layer.name,
        )
    for layer in network.layers:
        target = short_name(layer.name)
        source = next(n.name for n in node_layers if n.target == layer.name)
        _, in_idx, out_idx, mult, values = _layer_edges(network, layer.name, view)
        attrs = (
            ({"multiplicity": int(m)} for m in mult.tolist())
            if values is None
            else ({"multiplicity": 1, "weight": float(w)} for w in values.tolist())
        )
        graph.add_edges_from(
            ((source, i), (target, j), a)
            for i, j, a in zip(in_idx.tolist(), out_idx.tolist(), attrs)
        )
    return graph
