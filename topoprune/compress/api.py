"""Compress any checkpoint topoprune reads, report the storage at each stage, decode it back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from topoprune.compress.container import LayerStats, read_compressed, write_compressed
from topoprune.errors import TopopruneError


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer storage at each stage (:class:`LayerStats`), the file written and its size."""

    layers: list[LayerStats]
    path: str
    file_bytes: int
    tensor_bytes: int  # the raw tensors stored beside the weight layers (biases, ...)

    def total(self) -> dict:
        """The 'Total' row of Han et al.'s tables: sums, entry-weighted mean bits, rates."""
        entries = sum(s.entries for s in self.layers) or 1
        dense = sum(s.dense_bits for s in self.layers)
        weights = sum(s.weights for s in self.layers)
        kept = sum(s.kept for s in self.layers)
        quantised = sum(s.quantised_bits for s in self.layers)
        huffman = sum(s.huffman_bits for s in self.layers)
        return {
            "layer": "total", "weights": weights, "kept": kept,
            "kept_percent": 100 * kept / weights,
            "fillers": entries - kept,
            "weight_bits": sum(s.weight_bits * s.entries for s in self.layers) / entries,
            "weight_bits_huffman": sum(s.huffman_weight_bits for s in self.layers) / entries,
            "index_bits": sum(s.index_bits * s.entries for s in self.layers) / entries,
            "index_bits_huffman": sum(s.huffman_index_bits for s in self.layers) / entries,
            "dense_bytes": dense / 8,
            "pruned_bytes": sum(s.pruned_bits for s in self.layers) / 8,
            "quantised_bytes": quantised / 8, "huffman_bytes": huffman / 8,
            "rate_quantised_percent": 100 * quantised / dense,
            "rate_huffman_percent": 100 * huffman / dense,
        }  # fmt: skip

    def rows(self) -> list[dict]:
        return [s.row() for s in self.layers] + [self.total()]

    def ratios(self) -> dict[str, float]:
        """Compression ratio (dense 32-bit bytes / bytes) after each stage, weight layers only;
        ``pruned_params`` is the count ratio Han et al. 2015 report."""
        t = self.total()
        return {
            "pruned_params": t["weights"] / t["kept"],
            "pruned": t["dense_bytes"] / t["pruned_bytes"],
            "quantised": t["dense_bytes"] / t["quantised_bytes"],
            "huffman": t["dense_bytes"] / t["huffman_bytes"],
            "file": t["dense_bytes"] / self.file_bytes,
        }

    def to_text(self) -> str:
        """The table printed by ``topoprune compress``."""
        head = (f"{'layer':<14} {'weights':>9} {'kept%':>6} {'w bits':>6} {'w+H':>5} "
                f"{'i bits':>6} {'i+H':>5} {'P+Q %':>7} {'P+Q+H %':>8}")  # fmt: skip
        lines = [head]
        for r in self.rows():
            lines.append(
                f"{r['layer']:<14} {r['weights']:>9} {r['kept_percent']:>6.1f} "
                f"{r['weight_bits']:>6.1f} {r['weight_bits_huffman']:>5.1f} "
                f"{r['index_bits']:>6.1f} {r['index_bits_huffman']:>5.1f} "
                f"{r['rate_quantised_percent']:>7.2f} {r['rate_huffman_percent']:>8.2f}"
            )
        t, q = self.total(), self.ratios()
        lines.append(
            f"bytes: dense {t['dense_bytes']:,.0f}, pruned {t['pruned_bytes']:,.0f} "
            f"({q['pruned']:.1f}x), quantised {t['quantised_bytes']:,.0f} ({q['quantised']:.1f}x), "
            f"Huffman {t['huffman_bytes']:,.0f} ({q['huffman']:.1f}x); file {self.path}: "
            f"{self.file_bytes:,} bytes ({q['file']:.1f}x; {self.tensor_bytes:,} of them "
            "biases and other tensors)"
        )
        return "\n".join(lines)


def _checkpoint_tensors(path: Path, layer_names: set[str]) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors of a checkpoint that are not weight layers (biases, normalisation), and a
    topoprune checkpoint's metadata."""
    from topoprune.io import detect_format, safetensors_file
    from topoprune.io.checkpoint import is_topoprune_checkpoint
    from topoprune.io.tensors import as_numpy
    from topoprune.io.torch_file import load_torch_object, state_dict_items

    fmt = detect_format(path)
    metadata: dict = {}
    if fmt == "compressed":
        model = read_compressed(path)
        return dict(model.tensors), dict(model.metadata)
    if fmt == "safetensors":
        items = [(name, array) for name, array, _ in safetensors_file.iter_tensors(path)]
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as archive:
            items = [(name, archive[name]) for name in archive.files]
    else:
        obj = load_torch_object(path)
        if is_topoprune_checkpoint(obj):
            metadata = dict(obj.get("metadata") or {})
            items = list((obj.get("extra") or {}).get("model_state", {}).items())
        else:
            items = state_dict_items(obj, path)
    tensors = {}
    for name, value in items:
        if name in layer_names or name.endswith(("_orig", "_mask")):
            continue  # weight layers (masked: weight_orig / weight_mask) are compressed
        tensors[name] = np.array(as_numpy(value))
    return tensors, metadata


def compress_checkpoint(
    path: str | Path,
    out: str | Path,
    *,
    conv_bits: int = 8,
    fc_bits: int = 5,
    layer_bits: Mapping[str, int] | None = None,
    index_bits: int = 5,
    use_huffman: bool = True,
    init: str = "linear",
    seed: int = 0,
) -> CompressionReport:
    """Compress a checkpoint's weight layers (weight sharing, relative index, Huffman coding)
    into ``out``; biases and other tensors are stored as they are.

    ``layer_bits`` maps layer names (``fc1.weight`` or ``fc1``) to weight bits, overriding
    ``conv_bits`` / ``fc_bits`` (Han et al. use 8 and 5 on AlexNet, 6 on LeNet-300-100).
    """
    from topoprune.io import load_network

    path = Path(path)
    network = load_network(path)
    layer_bits = dict(layer_bits or {})
    names = {layer.name for layer in network.layers}
    unknown = [n for n in layer_bits if n not in names and f"{n}.weight" not in names]
    if unknown:
        raise TopopruneError(f"no weight layer {', '.join(unknown)}; layers: {', '.join(names)}")
    bits, layers = {}, []
    for layer in network.layers:
        if layer.weight is None:
            raise TopopruneError(f"{path}: {layer.name} holds no weights to compress")
        default = fc_bits if layer.mask.ndim == 2 else conv_bits
        short = layer.name.removesuffix(".weight")
        bits[layer.name] = int(layer_bits.get(layer.name, layer_bits.get(short, default)))
        layers.append((layer.name, layer.weight, layer.mask))
    tensors, metadata = _checkpoint_tensors(path, names)
    metadata = {k: metadata[k] for k in ("model", "dataset", "method", "seed") if k in metadata}
    metadata["source"] = path.name
    stats = write_compressed(
        out, layers, bits=bits, index_bits=dict.fromkeys(bits, index_bits), tensors=tensors,
        chain=list(network.chain), metadata=metadata, use_huffman=use_huffman, init=init,
        seed=seed, groups={layer.name: layer.groups for layer in network.layers},
    )  # fmt: skip
    tensor_bytes = sum(int(t.nbytes) for t in tensors.values())
    return CompressionReport(stats, str(out), Path(out).stat().st_size, tensor_bytes)


def decompressed_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A compressed file as a plain state_dict: each weight layer dense (zeros where pruned)
    under its name, and the other tensors as stored."""
    model = read_compressed(path)
    state = {layer.name: layer.weight for layer in model.layers}
    state.update(model.tensors)
    return state
