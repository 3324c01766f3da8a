"""SparseNetwork: ordered weight layers, how they chain, and their node layers and degrees."""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from topoprune.topology.layers import (
    NM_PATTERNS,
    TopologyError,
    WeightLayer,
    check_view,
    layer_degrees,
    nm_share,
)

DEGREE_KINDS = ("in", "out", "total")


def short_name(parameter: str) -> str:
    """``features.0.weight`` -> ``features.0``: the module a weight belongs to."""
    return parameter[: -len(".weight")] if parameter.endswith(".weight") else parameter


@dataclass(frozen=True, eq=False)
class NodeLayer:
    """A layer of nodes with their in-, out- and total degrees.

    ``source`` is the weight layer whose outputs these nodes are (None for an input layer) and
    ``target`` the weight layer they feed (None for an output layer).
    """

    name: str
    in_degree: np.ndarray
    out_degree: np.ndarray
    source: str | None = None
    target: str | None = None

    @property
    def total_degree(self) -> np.ndarray:
        return self.in_degree + self.out_degree

    @property
    def size(self) -> int:
        return int(self.in_degree.shape[0])

    @property
    def role(self) -> str:
        if self.source is None:
            return "input"
        return "output" if self.target is None else "hidden"

    def degrees(self, kind: str = "total") -> np.ndarray:
        """Degrees of every node: ``in``, ``out`` or ``total`` (dead nodes included)."""
        if kind == "in":
            return self.in_degree
        if kind == "out":
            return self.out_degree
        if kind == "total":
            return self.total_degree
        raise TopologyError(f"unknown degree kind {kind!r}; valid: {', '.join(DEGREE_KINDS)}")

    @property
    def dead(self) -> int:
        """Nodes with no connection at all (total degree 0)."""
        return int(np.count_nonzero(self.total_degree == 0))

    def summary(self) -> dict:
        """Size, dead nodes and min/median/mean/max of each degree kind."""
        row: dict = {
            "node_layer": self.name,
            "role": self.role,
            "size": self.size,
            "dead": self.dead,
        }
        for kind in DEGREE_KINDS:
            values = self.degrees(kind)
            row[kind] = _describe(values)
        return row


def _describe(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": int(values.max()),
    }


class SparseNetwork:
    """The weight layers of a (pruned) network in order, and which consecutive ones chain.

    Parameters
    ----------
    layers : sequence of WeightLayer
        In forward order.
    chain : bool or sequence of bool
        ``chain[i]`` says that layer i's output nodes are layer i+1's input nodes (a conv followed
        by a linear layer chains through the flatten: input feature ``(c, h, w)`` is channel c).
        True chains every consecutive pair (a feed-forward stack); False treats every layer as its
        own bipartite graph.
    skipped : dict, optional
        Tensors of the source that are not weight layers, with the reason.
    source : str
        Where the network came from (a path), for reports.

    Examples
    --------
    >>> fc1 = WeightLayer("fc1.weight", np.array([[1, 1, 0], [0, 1, 0]], dtype=bool))
    >>> fc2 = WeightLayer("fc2.weight", np.array([[1, 0]], dtype=bool))
    >>> net = SparseNetwork([fc1, fc2], chain=True)
    >>> [(n.name, n.total_degree.tolist()) for n in net.node_layers()]
    [('input', [1, 2, 0]), ('fc1', [3, 1]), ('fc2', [1])]
    """

    def __init__(
        self,
        layers: Sequence[WeightLayer],
        chain: bool | Sequence[bool] = False,
        *,
        skipped: dict[str, str] | None = None,
        source: str = "",
        notes: Sequence[str] = (),
    ) -> None:
        self.layers: tuple[WeightLayer, ...] = tuple(layers)
        if not self.layers:
            raise TopologyError("a network needs at least one weight layer")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise TopologyError("weight layer names must be unique")
        n = len(self.layers) - 1
        self.chain: tuple[bool, ...] = (
            (bool(chain),) * n if isinstance(chain, bool) else tuple(bool(c) for c in chain)
        )
        if len(self.chain) != n:
            raise TopologyError(
                f"chain needs {n} entries for {n + 1} layers, got {len(self.chain)}"
            )
        self.skipped: dict[str, str] = dict(skipped or {})
        self.source = source
        self.notes: list[str] = list(notes)
        for i, chained in enumerate(self.chain):
            if chained:
                _check_chain(self.layers[i], self.layers[i + 1])

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        chained = (
            "chained" if all(self.chain) else ("partly chained" if any(self.chain) else "unchained")
        )
        return f"SparseNetwork({len(self.layers)} layers, {chained}, nnz={self.nnz})"

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> WeightLayer:
        for layer in self.layers:
            if layer.name in (name, f"{name}.weight"):
                return layer
        raise TopologyError(f"no weight layer {name!r}; layers: {', '.join(self.names)}")

    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def select(self, patterns: str | Iterable[str]) -> SparseNetwork:
        """The layers whose name matches any glob pattern (``fc*``, ``encoder.*.query*``).

        Two selected layers stay chained only if they were consecutive and chained before.
        """
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        keep = [
            i
            for i, layer in enumerate(self.layers)
            if any(
                fnmatch.fnmatchcase(layer.name, p) or fnmatch.fnmatchcase(short_name(layer.name), p)
                for p in patterns
            )
        ]
        if not keep:
            raise TopologyError(
                f"no weight layer matches {', '.join(patterns)}; layers: {', '.join(self.names)}"
            )
        chain = [b == a + 1 and self.chain[a] for a, b in itertools.pairwise(keep)]
        dropped = {
            self.layers[i].name: "not selected" for i in range(len(self.layers)) if i not in keep
        }
        return SparseNetwork(
            [self.layers[i] for i in keep],
            chain,
            skipped={**self.skipped, **dropped},
            source=self.source,
            notes=self.notes,
        )

    def input_groups(self, index: int, view: str = "channel") -> int | None:
        """Channels that layer ``index``'s input features were flattened from, if any."""
        if index == 0 or not self.chain[index - 1]:
            return None
        prev, layer = self.layers[index - 1], self.layers[index]
        if layer.kind == "linear" and prev.kind != "linear" and view != "im2col":
            return prev.out_channels
        return None

    def chained_in_view(self, boundary: int, view: str) -> bool:
        """Whether layers ``boundary`` and ``boundary + 1`` share a node layer in ``view``."""
        if not self.chain[boundary]:
            return False
        prev = self.layers[boundary]
        n_in, _ = self.layers[boundary + 1].node_counts(view, self.input_groups(boundary + 1, view))
        return n_in == prev.out_channels

    def layer_degrees(self, view: str = "channel") -> list[tuple[np.ndarray, np.ndarray]]:
        """``(fan_out of inputs, fan_in of outputs)`` of every layer in ``view``."""
        check_view(view)
        return [
            layer_degrees(layer, view, self.input_groups(i, view))
            for i, layer in enumerate(self.layers)
        ]

    def node_layers(self, view: str = "channel") -> list[NodeLayer]:
        """The node layers N0..NK with in-, out- and total degrees (docs/design.md, Definitions).

        Where two layers do not chain (not requested, or not possible in this view: im2col patch
        nodes are not the previous layer's channels), each side gets its own node layer, named
        ``<layer>:in``.
        """
        degrees = self.layer_degrees(view)
        result: list[NodeLayer] = []
        for i, (layer, (fan_out, fan_in)) in enumerate(zip(self.layers, degrees)):
            if i > 0 and self.chained_in_view(i - 1, view):
                prev = result.pop()
                result.append(
                    NodeLayer(prev.name, prev.in_degree, fan_out, prev.source, layer.name)
                )
            else:
                name = "input" if i == 0 else f"{short_name(layer.name)}:in"
                result.append(NodeLayer(name, np.zeros_like(fan_out), fan_out, None, layer.name))
            result.append(
                NodeLayer(short_name(layer.name), fan_in, np.zeros_like(fan_in), layer.name, None)
            )
        return result

    def layer_table(self, view: str = "channel") -> list[dict]:
        """Per weight layer: shape, view, nnz, density, compression, dead nodes, degree ranges."""
        rows = []
        for i, (layer, (fan_out, fan_in)) in enumerate(zip(self.layers, self.layer_degrees(view))):
            rows.append(
                {
                    "layer": layer.name,
                    "kind": layer.kind,
                    "shape": list(layer.shape),
                    "view": layer.view_name(view),
                    "input_groups": self.input_groups(i, view),
                    "nnz": layer.nnz,
                    "size": layer.size,
                    "density": layer.density,
                    "compression": layer.compression,
                    "dead_inputs": int(np.count_nonzero(fan_out == 0)),
                    "dead_outputs": int(np.count_nonzero(fan_in == 0)),
                    "fan_in": _describe(fan_in),
                    "fan_out": _describe(fan_out),
                    "nonfinite": layer.nonfinite,
                    "n_m": {f"{n}:{m}": nm_share(layer, n, m) for n, m in NM_PATTERNS},
                }
            )
        return rows

    def problems(self) -> list[str]:
        """Degenerate content a user should know about: all-zero layers, NaN/inf weights."""
        found = []
        for layer in self.layers:
            if layer.nnz == 0:
                found.append(f"{layer.name}: all-zero layer (every connection pruned)")
            if layer.nonfinite:
                found.append(
                    f"{layer.name}: {layer.nonfinite} NaN/inf weights (counted as connections)"
                )
        return found


def _check_chain(prev: WeightLayer, layer: WeightLayer) -> None:
    expected = prev.out_channels
    got = layer.in_channels
    if layer.kind == "linear" and prev.kind != "linear":
        if got % expected == 0:
            return  # a flatten: in_features = channels x spatial positions
        raise TopologyError(
            f"{prev.name} {prev.shape} -> {layer.name} {layer.shape} do not chain: "
            f"{got} input features are not a multiple of {expected} channels"
        )
    if got != expected:
        raise TopologyError(
            f"{prev.name} {prev.shape} -> {layer.name} {layer.shape} do not chain: "
            f"{prev.name} has {expected} outputs, {layer.name} takes {got} inputs"
        )


@dataclass
class NetworkSummary:
    """Everything ``topoprune analyze`` reports, as plain data (JSON-ready)."""

    source: str
    view: str
    layers: list[dict]
    node_layers: list[dict]
    totals: dict
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connectivity: dict | None = None  # effective sparsity, when the whole network chains
    spectral: list[dict] | None = None  # spectral gaps, when asked for


def summarize(
    network: SparseNetwork, view: str = "channel", *, spectral: bool = False, progress: bool = False
) -> NetworkSummary:
    """The per-layer table and per-node-layer degree summary of a network, its effective
    connectivity (when every layer chains) and, with ``spectral``, each layer's spectral gap
    against the Ramanujan bound (:mod:`topoprune.topology.connectivity`)."""
    from topoprune.topology.connectivity import effective_connectivity, spectral_table

    nodes = network.node_layers(view)
    totals = {
        "layers": len(network.layers),
        "size": network.size,
        "nnz": network.nnz,
        "density": network.nnz / network.size if network.size else 0.0,
        "compression": network.size / network.nnz if network.nnz else float("inf"),
        "chained": list(network.chain),
    }
    return NetworkSummary(
        source=network.source,
        view=view,
        layers=network.layer_table(view),
        node_layers=[n.summary() for n in nodes],
        totals=totals,
        skipped=dict(network.skipped),
        notes=list(network.notes),
        problems=network.problems(),
        connectivity=effective_connectivity(network, view),
        spectral=spectral_table(
            network, "channel-simple" if view != "im2col" else view, progress=progress
        )
        if spectral
        else None,
    )
