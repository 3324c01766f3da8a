"""Weight layers as bipartite graphs, and their degrees in each convolution view.

A weight layer with weight W (out x in [x kernel]) and mask M is a bipartite graph between its
input nodes and output nodes (docs/design.md, Definitions). Degrees are vectorised reductions
over the mask; no graph is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from topoprune.errors import TopopruneError

VIEWS = ("channel", "channel-simple", "im2col")
_BLOCK = 1 << 22  # elements per block when scanning a weight tensor
KINDS = {2: "linear", 3: "conv1d", 4: "conv2d"}


class TopologyError(TopopruneError):
    """A layer or network that cannot be analysed as given."""


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise TopologyError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    return view


@dataclass(frozen=True, eq=False)
class WeightLayer:
    """One weight layer: its name, boolean mask, and (optionally) its weights.

    Parameters
    ----------
    name : str
        The parameter's name in the checkpoint (e.g. ``fc1.weight``).
    mask : numpy.ndarray
        Boolean, shape ``(out, in)`` for linear layers, ``(out, in, k)`` or ``(out, in, kh, kw)``
        for convolutions. True means the connection exists.
    weight : numpy.ndarray, optional
        The weights, same shape; None when only the topology is kept.
    nonfinite : int
        Number of NaN or infinite weights (they count as connections).
    groups : int
        A grouped convolution's groups (``C_in / groups`` is the weight's second dimension;
        depthwise: ``groups = C_in``). Output channel ``o`` connects only to the input channels
        of its group, ``o // (C_out / groups)``.
    reduced : dict, optional
        Set by :func:`reduce_layer`: the layer was read for its degrees only; its mask is gone
        (a zero-memory placeholder of the right shape) and ``nnz``, the degrees in the views it
        was reduced for and the N:M shares are kept. Anything else that needs the mask is an
        error.
    """

    name: str
    mask: np.ndarray
    weight: np.ndarray | None = field(default=None, repr=False)
    nonfinite: int = 0
    groups: int = 1
    reduced: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_:
            raise TopologyError(f"{self.name}: mask must be boolean, got {self.mask.dtype}")
        if self.mask.ndim not in KINDS:
            raise TopologyError(
                f"{self.name}: {self.mask.ndim}-D tensors are not weight layers "
                "(linear is 2-D, conv1d 3-D, conv2d 4-D)"
            )
        if self.weight is not None and self.weight.shape != self.mask.shape:
            raise TopologyError(
                f"{self.name}: mask shape {self.mask.shape} differs from weight shape "
                f"{self.weight.shape}"
            )
        if self.groups < 1 or (self.groups > 1 and self.mask.ndim == 2):
            raise TopologyError(f"{self.name}: groups must be 1 for linear layers, >= 1 else")
        if self.mask.shape[0] % self.groups:
            raise TopologyError(
                f"{self.name}: {self.mask.shape[0]} output channels do not split into "
                f"{self.groups} groups"
            )

    @property
    def kind(self) -> str:
        """``linear``, ``conv1d`` or ``conv2d``."""
        return KINDS[self.mask.ndim]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mask.shape)

    @property
    def out_channels(self) -> int:
        return int(self.mask.shape[0])

    @property
    def in_channels(self) -> int:
        """Input channels (features): the weight's second dimension times ``groups``."""
        return int(self.mask.shape[1]) * self.groups

    @cached_property
    def nnz(self) -> int:
        """Number of connections (nonzero weights)."""
        if self.reduced is not None:
            return int(self.reduced["nnz"])
        return int(np.count_nonzero(self.mask))

    def require_mask(self, what: str) -> np.ndarray:
        """The mask, or a clear error for a layer read for its degrees only."""
        if self.reduced is not None:
            raise TopologyError(
                f"{self.name}: read for its degrees only (masks dropped to bound memory); "
                f"{what} needs the mask: read the file without reduce_to_degrees"
            )
        return self.mask

    @property
    def size(self) -> int:
        return int(self.mask.size)

    @property
    def density(self) -> float:
        return self.nnz / self.size if self.size else 0.0

    @property
    def compression(self) -> float:
        """Total weights / nonzero weights (``inf`` for an all-zero layer)."""
        return self.size / self.nnz if self.nnz else float("inf")

    def view_name(self, view: str) -> str:
        """The view this layer is read in: ``linear`` for linear layers, else ``view``."""
        return "linear" if self.kind == "linear" else check_view(view)

    def node_counts(self, view: str, input_groups: int | None = None) -> tuple[int, int]:
        """``(n_inputs, n_outputs)`` of the layer's bipartite graph in ``view``."""
        grouped = _grouped_mask_shape(self, view, input_groups)
        return grouped[1] * self.groups, grouped[0]


def mask_from_tensor(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask, checked to be binary and of the weight's shape."""
    if mask.shape != shape:
        raise TopologyError(f"{name}: mask shape {mask.shape} differs from weight shape {shape}")
    if mask.dtype == np.bool_:
        raw = mask.view(np.uint8)
        # a file's booleans may hold bytes other than 0/1; byte-level arithmetic needs 0/1
        return raw != 0 if raw.size and raw.max() > 1 else mask
    binary = (mask == 0) | (mask == 1)
    if not np.all(binary):
        bad = mask[~binary].ravel()[:3].tolist()
        raise TopologyError(f"{name}: mask is not binary (values such as {bad}); expected 0/1")
    return mask != 0


def weight_layer(
    name: str,
    weight: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    keep_weights: bool = True,
    groups: int = 1,
) -> WeightLayer:
    """A WeightLayer from a weight and an optional explicit mask (else its nonzeros).

    NaN and infinite weights are counted; a NaN weight is a connection (NaN != 0).
    """
    explicit = mask is not None
    if explicit:
        mask = mask_from_tensor(name, mask, weight.shape)
    else:
        mask = np.empty(weight.shape, dtype=bool)
    rows = weight.reshape(weight.shape[0], -1)
    mask_rows = mask.reshape(weight.shape[0], -1)
    step = max(1, _BLOCK // max(rows.shape[1], 1))
    nonfinite = 0
    # In row blocks: temporaries stay small however large the layer (e.g. a memory-mapped file).
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step]
        nonfinite += int(block.size - np.count_nonzero(np.isfinite(block)))
        if not explicit:
            np.not_equal(block, 0, out=mask_rows[start : start + step])
    return WeightLayer(name, mask, weight if keep_weights else None, nonfinite, groups)


def _grouped_mask_shape(
    layer: WeightLayer, view: str, input_groups: int | None
) -> tuple[int, int, int]:
    """``(n_out, n_in_nodes, entries per edge)`` of the mask read in ``view``; for a grouped
    convolution ``n_in_nodes`` counts one group's inputs (those each output can reach)."""
    check_view(view)
    out, *rest = layer.mask.shape
    if layer.kind == "linear":
        if input_groups and view != "im2col":
            if rest[0] % input_groups:
                raise TopologyError(
                    f"{layer.name}: {rest[0]} input features do not split into "
                    f"{input_groups} channels"
                )
            return out, input_groups, rest[0] // input_groups
        return out, rest[0], 1
    kernel = int(np.prod(rest[1:]))
    if view == "im2col":
        return out, rest[0] * kernel, 1
    return out, rest[0], kernel


def _sum(mask: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # numpy reduces booleans through small buffers: no full-size integer copy of the mask.
    return mask.sum(axis=axes, dtype=np.int64)


def _grouped_mask(layer: WeightLayer, view: str, input_groups: int | None) -> np.ndarray:
    mask = layer.require_mask(f"the {view} view")
    return mask.reshape(_grouped_mask_shape(layer, view, input_groups))


def layer_degrees(
    layer: WeightLayer, view: str = "channel", input_groups: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of a layer's input and output nodes in its own bipartite graph.

    Parameters
    ----------
    layer : WeightLayer
    view : {"channel", "channel-simple", "im2col"}
        How a convolution becomes a graph (docs/design.md, Definitions). Linear layers read the
        same in every view, except at a flatten boundary (``input_groups``).
    input_groups : int, optional
        For a linear layer after a convolution: the number of channels its input features were
        flattened from. In the channel views input feature ``(c, h, w)`` belongs to node ``c``.

    Returns
    -------
    fan_out, fan_in : numpy.ndarray
        ``fan_out[i]`` is the out-degree of input node i into this layer; ``fan_in[j]`` the
        in-degree of output node j. In the ``channel`` view an edge counts once per nonzero kernel
        entry; in ``channel-simple`` once per connected pair.

    Examples
    --------
    >>> mask = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)  # 2 outputs x 3 inputs
    >>> fan_out, fan_in = layer_degrees(WeightLayer("fc", mask))
    >>> fan_out.tolist(), fan_in.tolist()
    ([1, 0, 2], [2, 1])
    """
    if layer.reduced is not None:
        cached = layer.reduced["degrees"].get((view, input_groups))
        if cached is None:
            layer.require_mask(f"degrees in the {view} view")
        return cached
    grouped = _grouped_mask(layer, view, input_groups)
    if view == "channel-simple" and grouped.shape[2] > 1:
        grouped = grouped.any(axis=2, keepdims=True)
    if layer.groups > 1:
        # (groups, outputs per group, inputs per group, entries): input i of group g feeds only
        # the outputs of group g
        out, n_in, entries = grouped.shape
        blocks = grouped.reshape(layer.groups, out // layer.groups, n_in, entries)
        return _sum(blocks, (1, 3)).reshape(-1), _sum(grouped, (1, 2))
    return _sum(grouped, (0, 2)), _sum(grouped, (1, 2))


def edge_multiplicity(
    layer: WeightLayer, view: str = "channel", input_groups: int | None = None
) -> np.ndarray:
    """Dense ``(n_out, n_in_nodes)`` count of connections between each node pair in ``view``.

    1/0 for linear layers and the ``im2col`` and ``channel-simple`` views; the number of nonzero
    kernel entries in the ``channel`` view. Dense: meant for graph export of one layer.
    """
    grouped = _grouped_mask(layer, view, input_groups)
    simple = view == "channel-simple"
    counts = grouped.any(axis=2).astype(np.int64) if simple else _sum(grouped, (2,))
    return _block_diagonal(counts, layer.groups)


def _block_diagonal(rows: np.ndarray, groups: int) -> np.ndarray:
    """A grouped layer's ``(out, inputs per group)`` matrix spread over all its inputs: output
    o's row is nonzero only over its group's inputs."""
    if groups == 1:
        return rows
    out, n_in = rows.shape
    per_group = out // groups
    dense = np.zeros((out, n_in * groups), dtype=rows.dtype)
    for g in range(groups):
        block = slice(g * per_group, (g + 1) * per_group)
        dense[block, g * n_in : (g + 1) * n_in] = rows[block]
    return dense


def edge_weights(layer: WeightLayer, view: str = "channel") -> np.ndarray | None:
    """``(n_out, n_in)`` weights when each edge is one weight (linear, im2col), else None."""
    if layer.weight is None or layer.reduced is not None:
        return None
    if layer.kind != "linear" and view != "im2col":
        return None
    return _block_diagonal(np.asarray(layer.weight).reshape(layer.out_channels, -1), layer.groups)


NM_PATTERNS = ((2, 4), (4, 8))


def nm_share(layer: WeightLayer, n: int, m: int) -> float | None:
    """Share of a layer's groups of ``m`` consecutive inputs that hold at most ``n`` connections
    (N:M semi-structured sparsity, as sparse tensor cores run it: 1.0 means the layer is N:M).

    Groups run along the input dimension of each output row; for a convolution along the input
    channels at each (output channel, kernel position), as NVIDIA's ASP permutes conv weights.
    A trailing group shorter than ``m`` is left out; None when a row holds no full group.

    Examples
    --------
    >>> mask = np.array([[1, 1, 0, 0, 1, 1, 1, 0]], dtype=bool)
    >>> nm_share(WeightLayer("fc", mask), 2, 4)
    0.5
    """
    if layer.reduced is not None:
        return layer.reduced["n_m"].get(f"{n}:{m}")
    mask = layer.require_mask("N:M shares")
    if mask.ndim > 2:  # (out, in, k...) -> (out, k..., in): groups along input channels
        mask = np.moveaxis(mask, 1, -1)
    width = mask.shape[-1] // m * m
    if width == 0:
        return None
    rows = mask.reshape(-1, mask.shape[-1])[:, :width]
    if m in _BYTE_SUMS:
        # a group of m booleans is m bytes of 0/1: one unsigned word whose product with
        # 0x0101... sums its bytes into the top byte (a tenth of a generic reduction's time)
        dtype, ones, shift = _BYTE_SUMS[m]
        words = np.ascontiguousarray(rows).view(np.uint8).view(dtype)
        counts = (words * ones) >> shift
        return float(np.count_nonzero(counts <= n) / counts.size)
    counts = _sum(rows.reshape(rows.shape[0], width // m, m), (2,))
    return float(np.count_nonzero(counts <= n) / counts.size)


_BYTE_SUMS = {
    4: (np.uint32, np.uint32(0x01010101), np.uint32(24)),
    8: (np.uint64, np.uint64(0x0101010101010101), np.uint64(56)),
}


def reduce_layer(layer: WeightLayer, views: Sequence[str]) -> WeightLayer:
    """The layer with its mask and weights dropped, keeping what degree analyses need: ``nnz``,
    its degrees in ``views`` (unchained: no flatten grouping), the N:M shares. Reading a large
    file layer by layer this way keeps one layer's mask in memory, not the model's."""
    degrees = {}
    for view in views:
        same = layer.kind == "linear" and degrees  # a linear layer reads alike in every view
        degrees[(view, None)] = next(iter(degrees.values())) if same else layer_degrees(layer, view)
    reduced = {
        "nnz": layer.nnz,
        "degrees": degrees,
        "n_m": {f"{n}:{m}": nm_share(layer, n, m) for n, m in NM_PATTERNS},
    }
    placeholder = np.broadcast_to(np.False_, layer.shape)  # no memory, the right shape
    return dataclasses.replace(layer, mask=placeholder, weight=None, reduced=reduced)
