"""topoprune's own checkpoint format: weights, masks, layer order and chaining, metadata.

A ``torch.save`` zip file holding only tensors and plain containers (so it loads with
``weights_only=True``)::

    {"format": "topoprune", "format_version": 1,
     "layers": [names in forward order], "chain": [bool per consecutive pair],
     "weights": {name: tensor}, "masks": {name: bool tensor},
     "groups": {name: groups of each grouped convolution} (absent in older files),
     "metadata": {...}, "extra": {...}}

``extra`` is free for the training engine (optimizer state, mask history).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import numpy as np

from topoprune.io.errors import CheckpointError
from topoprune.io.tensors import network_from_tensors
from topoprune.topology.network import SparseNetwork

FORMAT = "topoprune"
FORMAT_VERSION = 1


def is_topoprune_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def save_network(
    network: SparseNetwork,
    path: str | Path,
    *,
    metadata: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a network (with its weights when it has them) atomically."""
    import torch

    path = Path(path)
    weights, masks = {}, {}
    for layer in network.layers:
        masks[layer.name] = torch.from_numpy(np.ascontiguousarray(layer.require_mask("saving")))
        if layer.weight is not None:
            weights[layer.name] = torch.from_numpy(np.array(layer.weight, dtype=np.float32))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layers": network.names,
        "chain": list(network.chain),
        "weights": weights,
        "masks": masks,
        "groups": {layer.name: layer.groups for layer in network.layers if layer.groups > 1},
        "metadata": dict(metadata or {}),
        "extra": dict(extra or {}),
    }
    return write_atomic_torch(payload, path)


def write_atomic_torch(obj: object, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through a temporary file, so an interrupted write leaves no
    partial file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def network_from_checkpoint(
    obj: dict,
    path: Path,
    *,
    chain: str | None = None,
    layers: list[str] | None = None,
    keep_weights: bool = True,
    snapshot: str | None = None,
) -> SparseNetwork:
    """A network from a loaded topoprune checkpoint; its recorded chain unless ``chain``;
    with ``snapshot``, the masks of that entry of the training's mask history."""
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: topoprune checkpoint format {version} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    try:
        names = list(obj["layers"])
        masks = obj["masks"]
        weights = obj.get("weights") or {}
        recorded = [bool(c) for c in obj["chain"]]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: corrupt topoprune checkpoint (missing keys)") from None
    if snapshot is not None:
        masks, weights = _snapshot_masks(obj, path, snapshot, masks), {}
    missing = [n for n in names if n not in masks]
    if missing:
        raise CheckpointError(f"{path}: corrupt topoprune checkpoint: no mask for {missing}")
    import torch

    tensors = [(n, weights[n] if n in weights else masks[n].to(torch.float32)) for n in names]
    groups = obj.get("groups") or {}
    if not isinstance(groups, dict) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in groups.values()
    ):
        raise CheckpointError(f"{path}: corrupt topoprune checkpoint (groups)")
    network = network_from_tensors(
        tensors,
        masks=masks,
        groups=groups,
        chain="none",
        layers=layers,
        keep_weights=keep_weights and bool(weights),
        source=str(path),
    )
    return with_recorded_chain(network, names, recorded, chain, path)


def with_recorded_chain(
    network: SparseNetwork, names: list[str], recorded: list[bool], chain: str | None, path
) -> SparseNetwork:
    """``network``, read unchained from a file that records its chain (``recorded[i]``: layers
    ``names[i]`` and ``names[i + 1]`` chain), chained as asked: None, as recorded for the
    selected layers that were neighbours in the file; ``sequential``, every pair; ``none``, no
    pair."""
    if chain == "none":
        return network
    if chain == "sequential":
        return SparseNetwork(network.layers, True, skipped=network.skipped, source=str(path))
    index = {n: i for i, n in enumerate(names)}
    kept = [index[layer.name] for layer in network.layers]
    chained = [b == a + 1 and recorded[a] for a, b in itertools.pairwise(kept)]
    return SparseNetwork(network.layers, chained, skipped=network.skipped, source=str(path))


def snapshot_names(obj: dict) -> list[str]:
    """The mask snapshots a topoprune training checkpoint holds, in the order they were taken."""
    history = obj.get("extra", {}).get("mask_history", {})
    return list(history) if isinstance(history, dict) else []


def _snapshot_masks(obj: dict, path: Path, snapshot: str, final: dict) -> dict:
    history = obj.get("extra", {}).get("mask_history", {})
    if not isinstance(history, dict) or snapshot not in history:
        found = ", ".join(snapshot_names(obj)) or "none"
        raise CheckpointError(f"{path}: no mask snapshot {snapshot!r}; snapshots: {found}")
    taken = history[snapshot]
    # snapshots are keyed by module name; layers that were not pruned keep the file's mask
    return {name: taken.get(name.removesuffix(".weight"), final.get(name)) for name in final}
