"""Preferential attachment across a whole network: two snapshots of the same architecture."""

from __future__ import annotations

import numpy as np

from topoprune.attachment.growth import degree_growth, distribution_change
from topoprune.attachment.rates import AttachmentError, attachment_rate
from topoprune.topology.network import SparseNetwork, short_name


def _check_same(before: SparseNetwork, after: SparseNetwork) -> None:
    ours = [(layer.name, layer.mask.shape) for layer in before.layers]
    theirs = [(layer.name, layer.mask.shape) for layer in after.layers]
    if ours != theirs:
        raise AttachmentError(
            "the two snapshots are not the same architecture: "
            f"{[n for n, _ in ours]} vs {[n for n, _ in theirs]} (or their shapes differ)"
        )


def compare_snapshots(
    before: SparseNetwork,
    after: SparseNetwork,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    fit_options: dict | None = None,
) -> dict:
    """Created and removed connections, attachment rates per linear layer, degree growth and
    degree distributions per node layer, between snapshots 0 (``before``) and 1 (``after``).

    Degrees are total degrees of each node in its node layer (channel view). Convolutions are
    reported with their created and removed counts only: the d_i d_j product needs one node per
    row and column of the mask, which only a linear layer has.
    ``fit_options`` (e.g. ``{"mode": "clauset", "n_boot": 500}``) turns on bounded power-law fits
    of every node layer at both times.
    """
    _check_same(before, after)
    nodes0, nodes1 = before.node_layers(), after.node_layers()
    by_target = {n.target: n for n in nodes0 if n.target is not None}
    by_source = {n.source: n for n in nodes0 if n.source is not None}
    layers = []
    for index, (l0, l1) in enumerate(zip(before.layers, after.layers, strict=True)):
        row = {
            "layer": short_name(l0.name),
            "kind": l0.kind,
            "created": int((l1.mask & ~l0.mask).sum()),
            "removed": int((l0.mask & ~l1.mask).sum()),
            "kept_before": int(l0.mask.sum()),
            "kept_after": int(l1.mask.sum()),
        }
        source, target = by_target.get(l0.name), by_source.get(l0.name)
        reason = ""
        if l0.kind != "linear":
            reason = "a convolution: d_i d_j needs one node per mask row and column"
        elif source is None or target is None:
            reason = "the layer is not chained into node layers"
        elif source.size != l0.mask.shape[1] or target.size != l0.mask.shape[0]:
            reason = "its input nodes are channels of a flattened convolution, not mask columns"
        if reason:
            row["attachment_error"] = f"not measured: {reason}"
        else:
            try:
                result = attachment_rate(
                    l0.mask,
                    l1.mask,
                    source.total_degree,
                    target.total_degree,
                    n_boot=n_boot,
                    seed=seed + index,
                )
                row["attachment"] = result.to_dict()
            except AttachmentError as exc:
                row["attachment_error"] = str(exc)
        layers.append(row)
    node_layers = []
    for n0, n1 in zip(nodes0, nodes1, strict=True):
        d0, d1 = n0.total_degree, n1.total_degree
        entry: dict = {"node_layer": n0.name, "n_nodes": n0.size, "dead_before": n0.dead,
                       "dead_after": n1.dead}  # fmt: skip
        entry.update(_node_layer_change(d0, d1, seed))
        if fit_options is not None:
            entry["fits"] = {"before": _fit(d0, fit_options), "after": _fit(d1, fit_options)}
        node_layers.append(entry)
    return {"layers": layers, "node_layers": node_layers, "seed": seed, "n_boot": n_boot}


def _node_layer_change(d0: np.ndarray, d1: np.ndarray, seed: int) -> dict:
    """Degree growth and the two-sample test; what cannot be measured says why."""
    out: dict = {}
    try:
        out["growth"] = degree_growth(d0, d1).to_dict()
    except AttachmentError as exc:
        out["growth_error"] = str(exc)
    try:
        out["distribution_change"] = distribution_change(d0, d1, seed=seed)
    except AttachmentError as exc:
        out["distribution_change_error"] = str(exc)
    return out


def _fit(degrees: np.ndarray, options: dict) -> dict:
    from topoprune.stats import BoundedPowerLaw

    return BoundedPowerLaw(**options).fit(degrees).fit_.to_dict()
