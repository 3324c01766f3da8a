"""Checkpoint readers and writers behind one entry point, :func:`load_network`.

Formats, detected from the file's content: topoprune checkpoints, PyTorch state_dicts (zeros are
pruned weights), torch.nn.utils.prune state_dicts (``_orig`` / ``_mask``), safetensors
(memory-mapped, layer by layer), ``.npz`` and topoprune's compressed files (``topoprune
compress``: weight sharing and Huffman coding, decoded here). Nothing is ever unpickled beyond
tensors.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topoprune.compress.container import is_compressed_file, read_compressed
from topoprune.errors import TopopruneError
from topoprune.io import hf, safetensors_file
from topoprune.io.checkpoint import (
    is_topoprune_checkpoint,
    network_from_checkpoint,
    save_network,
    with_recorded_chain,
)
from topoprune.io.errors import CheckpointError
from topoprune.io.tensors import CHAIN_MODES, network_from_tensors
from topoprune.io.torch_file import load_torch_object, state_dict_items
from topoprune.topology.network import SparseNetwork

FORMATS = ("topoprune", "torch", "safetensors", "npz", "compressed", "sharded")


def detect_format(path: str | Path) -> str:
    """``torch`` (including topoprune checkpoints), ``safetensors``, ``npz`` or ``compressed``,
    from the content."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a folder without a checkpoint topoprune recognises (a *.index.json of a "
            "sharded checkpoint, model.safetensors or pytorch_model.bin); give the file"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            raise CheckpointError(f"{path}: corrupt or truncated zip archive") from None
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        raise CheckpointError(f"{path}: a zip archive that is neither a PyTorch file nor .npz")
    if path.name.endswith(hf.INDEX_SUFFIX):
        return "sharded"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if is_compressed_file(head):
        return "compressed"
    if head[:1] == b"\x80":
        return "torch"  # the legacy (non-zip) torch.save format is a pickle stream
    if hf.is_index(path, head):
        return "sharded"
    raise CheckpointError(
        f"{path}: unrecognised format; topoprune reads PyTorch (.pt/.pth), safetensors, .npz and "
        "its compressed files"
    )


def load_network(
    path: str | Path,
    *,
    chain: str | None = None,
    layers: Sequence[str] | None = None,
    keep_weights: bool = True,
    snapshot: str | None = None,
    layout: str = "auto",
    reduce_to_degrees: str | None = None,
    progress: bool = False,
) -> SparseNetwork:
    """Read a checkpoint of any supported format as a :class:`SparseNetwork`.

    Parameters
    ----------
    path : path
    chain : {None, "none", "sequential"}
        None: what the file records (topoprune checkpoints) else ``none``, every layer its own
        bipartite graph. ``sequential`` asserts a feed-forward stack in file order.
    layers : sequence of str, optional
        Glob patterns selecting weight layers by name.
    keep_weights : bool
        False keeps only the masks (less memory; enough for degrees).
    snapshot : str, optional
        A topoprune training checkpoint's mask snapshot (a stage name, ``STAGE/epochN`` or
        ``stepN``): the network as its masks were then (weights are not kept for snapshots).
    layout : {"auto", "torch", "conv1d"}
        How 2-D weights are stored: ``torch`` as ``(out, in)``; ``conv1d`` as Hugging Face
        Conv1D's ``(in, out)`` (GPT-2), embedding tables skipped; ``auto`` asks the
        ``config.json`` beside the file, if any (see :mod:`topoprune.io.hf`).

    reduce_to_degrees : str, optional
        A view (``channel``, ...): read an unchained foreign file layer by layer, keeping each
        layer's degrees in that view and dropping its mask (memory of one layer, not the model:
        LLM-sized files). Degrees, node layers, fits and N:M shares work on the result; graph
        export, effective connectivity and spectra need the masks. bfloat16/float16 safetensors
        are then read as bit patterns, never widened.

    progress : bool
        A progress bar over the tensors of a foreign file (on a terminal only).

    A folder is read through its sharded index (``*.index.json``), ``model.safetensors`` or
    ``pytorch_model.bin``.
    """
    path = _checkpoint_in(Path(path))
    try:
        return _load_network(path, chain, layers, keep_weights, snapshot, layout,
                             reduce_to_degrees, progress)  # fmt: skip
    except TopopruneError:
        raise
    except MemoryError:
        raise CheckpointError(f"{path}: too large to read into memory") from None
    except Exception as exc:
        if _raised_by_topoprune(exc):
            raise  # a bug of ours, not a damaged file: keep its traceback
        # whatever a damaged file makes a library raise names the file
        raise CheckpointError(
            f"{path}: could not be read ({type(exc).__name__}: {exc}); the file may be corrupt"
        ) from None


def _raised_by_topoprune(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is topoprune's own code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    package = str(Path(__file__).resolve().parents[1])
    return tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(
        package
    )


def _checkpoint_in(path: Path) -> Path:
    """A folder's checkpoint file (its sharded index, or its one model file); a file as is."""
    if not path.is_dir():
        return path
    index = hf.index_file(path)
    if index is not None:
        return index
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    return path  # detect_format explains what a folder needs


def _foreign(
    path: Path, items, chain, layers, keep_weights, layout, reduce, progress=False
) -> SparseNetwork:
    """A network from a foreign file's tensors, read in ``layout``."""
    conv1d, skip_embeddings, note = hf.resolve_layout(path, layout)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        items = tqdm(items, desc=f"reading {path.name}", unit=" tensors", leave=False)
    network = network_from_tensors(
        items,
        chain=chain or "none",
        layers=layers,
        keep_weights=keep_weights,
        source=str(path),
        transposed=hf.is_conv1d_weight if conv1d else None,
        skip=hf.not_a_layer if skip_embeddings else None,
        reduce_to_degrees=reduce,
    )  # fmt: skip
    if note:
        network.notes.append(note)
    return network


def _load_network(
    path: Path,
    chain: str | None,
    layers: Sequence[str] | None,
    keep_weights: bool,
    snapshot: str | None,
    layout: str,
    reduce: str | None = None,
    progress: bool = False,
) -> SparseNetwork:
    if chain is not None and chain not in CHAIN_MODES:
        raise CheckpointError(f"unknown chain mode {chain!r}; valid: {', '.join(CHAIN_MODES)}")
    if layout not in hf.LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; valid: {', '.join(hf.LAYOUTS)}")
    layers = list(layers) if layers else None
    fmt = detect_format(path)
    if snapshot is not None and fmt != "torch":
        raise CheckpointError(f"{path}: only topoprune training checkpoints hold mask snapshots")
    raw = reduce is not None and not keep_weights and (chain or "none") == "none"
    if fmt == "safetensors":
        items = ((name, array) for name, array, _ in
                 safetensors_file.iter_tensors(path, raw_halves=raw))  # fmt: skip
        return _foreign(path, items, chain, layers, keep_weights, layout, reduce, progress)
    if fmt == "sharded":
        unlisted: dict[str, str] = {}
        items = hf.iter_sharded(path, raw_halves=raw, unlisted=unlisted)
        network = _foreign(path, items, chain, layers, keep_weights, layout, reduce, progress)
        network.skipped.update(unlisted)
        return network
    if fmt == "compressed":
        return _network_from_compressed(path, chain, layers, keep_weights)
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                items = [(name, archive[name]) for name in archive.files]
        except Exception as exc:  # zlib, zipfile and numpy errors alike
            raise CheckpointError(f"{path}: corrupt .npz ({type(exc).__name__}: {exc})") from None
        return _foreign(path, items, chain, layers, keep_weights, layout, reduce, progress)
    obj = load_torch_object(path)
    if is_topoprune_checkpoint(obj):
        return network_from_checkpoint(
            obj, path, chain=chain, layers=layers, keep_weights=keep_weights, snapshot=snapshot
        )
    if snapshot is not None:
        raise CheckpointError(f"{path}: only topoprune training checkpoints hold mask snapshots")
    items = state_dict_items(obj, path)
    return _foreign(path, items, chain, layers, keep_weights, layout, reduce, progress)


def _network_from_compressed(
    path: Path, chain: str | None, layers: list[str] | None, keep_weights: bool
) -> SparseNetwork:
    model = read_compressed(path)
    network = network_from_tensors(
        [(layer.name, layer.weight) for layer in model.layers],
        masks={layer.name: layer.mask for layer in model.layers},
        groups={layer.name: layer.groups for layer in model.layers},
        chain="none",
        layers=layers,
        keep_weights=keep_weights,
        source=str(path),
    )
    names = [layer.name for layer in model.layers]
    return with_recorded_chain(network, names, model.chain, chain, path)


__all__ = [
    "FORMATS",
    "CheckpointError",
    "detect_format",
    "load_network",
    "network_from_tensors",
    "save_network",
]
