"""Connectivity beyond degrees: which connections lie on an input-to-output path, and how far a
layer's graph is from a Ramanujan expander.

- **Effective sparsity** (Vysogorets and Kempe 2023): in a feed-forward stack, a connection
  whose source cannot be reached from the input, or whose target cannot reach the output, carries
  nothing from input to output; removing it leaves the function unchanged (biases aside: a node
  cut off from the input still adds a constant). The effective density counts only the others.
  Reachability is over node layers in the chosen view (feature maps in the channel views).
- **Spectral gap** (Hoang et al. 2023): a layer's bipartite graph (an edge where any weight
  connects the two nodes) has adjacency eigenvalues +-s_i, the singular values of its
  biadjacency. A d-biregular graph is Ramanujan when s_2 <= sqrt(d_in - 1) + sqrt(d_out - 1);
  irregular graphs are compared at their mean degrees, and beside a random mask of the same
  shape and density.
"""

from __future__ import annotations

import sys

import numpy as np

from topoprune.topology.layers import WeightLayer, edge_multiplicity
from topoprune.topology.network import SparseNetwork, short_name


def _edge_counts(network: SparseNetwork, index: int, view: str) -> np.ndarray:
    """``(n_out, n_in)`` weights between each node pair of layer ``index`` (the channel view's
    multiplicities in both channel views: nodes are the same, weights are counted)."""
    counting = "im2col" if view == "im2col" else "channel"
    layer = network.layers[index]
    return edge_multiplicity(layer, counting, network.input_groups(index, counting))


def effective_connectivity(network: SparseNetwork, view: str = "channel") -> dict | None:
    """Connections on an input-to-output path, per layer and in total; nodes cut off from the
    input or the output, per node layer. None unless every consecutive pair of layers chains in
    ``view`` (a residual or parallel branch would need the module's graph), or when the layers
    were read for their degrees only.

    Examples
    --------
    Hidden node 1 receives nothing, so its outgoing connection carries nothing:

    >>> from topoprune.topology.layers import WeightLayer
    >>> fc1 = WeightLayer("fc1.weight", np.array([[1, 1], [0, 0]], dtype=bool))
    >>> fc2 = WeightLayer("fc2.weight", np.array([[1, 1]], dtype=bool))
    >>> result = effective_connectivity(SparseNetwork([fc1, fc2], chain=True))
    >>> [layer["effective_nnz"] for layer in result["layers"]], result["effective_nnz"]
    ([2, 1], 3)
    """
    if not all(network.chained_in_view(i, view) for i in range(len(network.layers) - 1)):
        return None
    if len(network.layers) < 2 or any(layer.reduced is not None for layer in network.layers):
        return None  # one layer: trivially all; read for degrees only: the masks are gone
    counts = [_edge_counts(network, i, view) for i in range(len(network.layers))]
    edges = [c > 0 for c in counts]
    # forward: nodes reached from the input; backward: nodes from which the output is reached
    forward = [np.ones(edges[0].shape[1], dtype=bool)]
    for adjacency in edges:
        forward.append((adjacency.astype(np.int64) @ forward[-1]) > 0)
    backward = [np.ones(edges[-1].shape[0], dtype=bool)]
    for adjacency in reversed(edges):
        backward.append((backward[-1].astype(np.int64) @ adjacency) > 0)
    backward.reverse()
    layers, total = [], 0
    for i, (layer, count) in enumerate(zip(network.layers, counts, strict=True)):
        effective = int(backward[i + 1].astype(np.int64) @ count @ forward[i].astype(np.int64))
        total += effective
        layers.append({
            "layer": layer.name, "nnz": layer.nnz, "effective_nnz": effective,
            "ineffective": layer.nnz - effective,
            "effective_density": effective / layer.size if layer.size else 0.0,
        })  # fmt: skip
    names = ["input", *(short_name(layer.name) for layer in network.layers)]
    last = len(names) - 1
    nodes = [
        {"node_layer": name, "nodes": int(f.size),
         "cut_from_input": int(np.count_nonzero(~f)) if i else 0,
         "cut_from_output": int(np.count_nonzero(~b)) if i < last else 0}
        for i, (name, f, b) in enumerate(zip(names, forward, backward, strict=True))
    ]  # fmt: skip
    return {
        "view": view,
        "nnz": network.nnz,
        "effective_nnz": total,
        "density": network.nnz / network.size if network.size else 0.0,
        "effective_density": total / network.size if network.size else 0.0,
        "layers": layers,
        "node_layers": nodes,
    }


DENSE_SVD_LIMIT = 4096  # nodes on the smaller side up to which a full SVD is cheaper


def top_singular_values(adjacency: np.ndarray, k: int = 2) -> np.ndarray:
    """The ``k`` largest singular values of a 0/1 biadjacency (a full SVD up to
    ``DENSE_SVD_LIMIT`` nodes on the smaller side, else a sparse Lanczos solver)."""
    if min(adjacency.shape) <= max(DENSE_SVD_LIMIT, k):
        values = np.linalg.svd(adjacency.astype(np.float64), compute_uv=False)
        return np.pad(values, (0, max(0, k - values.size)))[:k]
    from scipy.sparse import csr_array
    from scipy.sparse.linalg import svds

    values = svds(csr_array(adjacency).astype(np.float64), k=k, return_singular_vectors=False)
    return np.sort(values)[::-1]


def ramanujan_row(adjacency: np.ndarray) -> dict:
    """Spectral gap and Ramanujan bound of one bipartite graph (``(n_out, n_in)`` 0/1)."""
    s1, s2 = top_singular_values(adjacency)
    edges = int(adjacency.sum())
    d_out = edges / adjacency.shape[0] if adjacency.shape[0] else 0.0  # an output's mean degree
    d_in = edges / adjacency.shape[1] if adjacency.shape[1] else 0.0
    bound = np.sqrt(max(d_in - 1, 0.0)) + np.sqrt(max(d_out - 1, 0.0))
    return {"s1": float(s1), "s2": float(s2), "spectral_gap": float(s1 - s2),
            "ramanujan_bound": float(bound), "below_bound": bool(s2 <= bound + 1e-9)}  # fmt: skip


def spectral_table(
    network: SparseNetwork, view: str = "channel-simple", seed: int = 0, progress: bool = False
) -> list[dict]:
    """Per layer: s1, s2, the gap, the Ramanujan bound at the mean degrees, and the same for a
    random mask with the layer's shape and number of weights (``random_*``, one draw from
    ``seed``).
    """
    rng = np.random.default_rng(seed)
    rows = []
    layers = enumerate(network.layers)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        layers = tqdm(layers, total=len(network.layers), desc="spectra", leave=False)
    for i, layer in layers:
        groups = network.input_groups(i, view)
        adjacency = edge_multiplicity(layer, view, groups) > 0
        ours = ramanujan_row(adjacency)
        # the same number of weights at random positions of the layer's own weight shape (a
        # grouped convolution keeps its blocks), read in the same view
        shuffled = np.zeros(layer.size, dtype=bool)
        shuffled[rng.choice(layer.size, size=layer.nnz, replace=False)] = True
        twin = WeightLayer(layer.name, shuffled.reshape(layer.shape), groups=layer.groups)
        random = ramanujan_row(edge_multiplicity(twin, view, groups) > 0)
        rows.append({"layer": layer.name, "nodes_in": adjacency.shape[1],
                     "nodes_out": adjacency.shape[0], **ours,
                     **{f"random_{k}": v for k, v in random.items()}})  # fmt: skip
    return rows


__all__ = [
    "effective_connectivity",
    "ramanujan_row",
    "spectral_table",
    "top_singular_values",
]
