"""The random null: degrees of a random mask with the same shape and number of nonzeros.

In a random mask of density rho a node's connections in one layer are independent Bernoulli
trials, so its degree there is binomial (the exact same-nnz law is hypergeometric, which the
binomial matches to O(1/size)). A node layer's total degree is the sum of its in- and out-degree
binomials. In the ``channel-simple`` view a connection is a channel pair with any nonzero kernel
entry, of probability 1 - (1 - rho)^entries.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from topoprune.topology.layers import _grouped_mask_shape
from topoprune.topology.network import SparseNetwork


def binomial_mixture_pmf(components: list[tuple[int, float]]) -> np.ndarray:
    """pmf over 0..sum(trials) of a sum of independent binomials ``(trials, p)``.

    Examples
    --------
    >>> binomial_mixture_pmf([(1, 0.5), (1, 0.5)]).round(12).tolist()
    [0.25, 0.5, 0.25]
    """
    pmf = np.array([1.0])
    for trials, p in components:
        pmf = np.convolve(pmf, stats.binom.pmf(np.arange(trials + 1), trials, p))
    return pmf


def layer_null_components(
    network: SparseNetwork, index: int, view: str
) -> tuple[tuple[int, float], tuple[int, float]]:
    """``((trials, p) of an input node's out-degree, (trials, p) of an output node's in-degree)``
    for layer ``index`` under the random null."""
    layer = network.layers[index]
    out, n_in, per_edge = _grouped_mask_shape(layer, view, network.input_groups(index, view))
    rho = layer.density
    reach = out // layer.groups  # an input feeds only its group's outputs
    if view == "channel-simple" and per_edge > 1:
        q = 1.0 - (1.0 - rho) ** per_edge
        return (reach, q), (n_in, q)
    return (reach * per_edge, rho), (n_in * per_edge, rho)


def node_layer_null(
    network: SparseNetwork, view: str = "channel", kind: str = "total"
) -> list[np.ndarray]:
    """The null degree pmf of every node layer (same order as ``network.node_layers(view)``)."""
    index = {layer.name: i for i, layer in enumerate(network.layers)}
    result = []
    for node_layer in network.node_layers(view):
        components = []
        if node_layer.source is not None and kind in ("in", "total"):
            components.append(layer_null_components(network, index[node_layer.source], view)[1])
        if node_layer.target is not None and kind in ("out", "total"):
            components.append(layer_null_components(network, index[node_layer.target], view)[0])
        result.append(binomial_mixture_pmf(components))
    return result
