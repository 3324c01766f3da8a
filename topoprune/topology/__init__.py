"""Topology of sparse networks: weight layers, node layers, degrees and graphs."""

from topoprune.topology.graphs import biadjacency, layer_graph, network_graph
from topoprune.topology.layers import (
    VIEWS,
    TopologyError,
    WeightLayer,
    edge_multiplicity,
    layer_degrees,
)
from topoprune.topology.module import network_from_module
from topoprune.topology.network import (
    DEGREE_KINDS,
    NetworkSummary,
    NodeLayer,
    SparseNetwork,
    summarize,
)

__all__ = [
    "DEGREE_KINDS",
    "VIEWS",
    "NetworkSummary",
    "NodeLayer",
    "SparseNetwork",
    "TopologyError",
    "WeightLayer",
    "biadjacency",
    "edge_multiplicity",
    "layer_degrees",
    "layer_graph",
    "network_from_module",
    "network_graph",
    "summarize",
]
