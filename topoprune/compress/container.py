"""The compressed model file (docs/compression.md): weight layers as codebook + relative index,
Huffman-coded or fixed-width, other tensors raw; a magic number, a version and a SHA-256.

Layout (little-endian)::

    magic     8 bytes   b"\\x89TPRZ\\r\\n\\x1a"
    version   uint32    1
    header    uint32 length, then UTF-8 JSON (layers, tensors, chain, metadata)
    payload   the sections the header points at (offsets relative to the payload's start)
    checksum  32 bytes  SHA-256 of everything before it

Plain numpy and json: nothing is unpickled. Every field of the header is validated before use,
so a damaged or hostile file is an error (:class:`CompressedFileError`), never a wrong model.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topoprune.compress import huffman
from topoprune.compress.bitstream import pack_fixed, unpack_fixed
from topoprune.compress.sparse_index import positions_from_relative, relative_index
from topoprune.compress.weight_sharing import share_weights
from topoprune.data.cache import write_bytes_atomic
from topoprune.errors import TopopruneError

MAGIC = b"\x89TPRZ\r\n\x1a"
VERSION = 1
SUFFIX = ".tprz"
MAX_LAYER_ELEMENTS = 2**31  # a declared shape larger than this is refused, not allocated
MAX_TOTAL_ELEMENTS = 2**32  # nor a file whose shapes add up to more (a tiny file, a huge model)
MAX_DIMENSIONS = 8
TENSOR_DTYPES = ("<f4", "<f2", "<f8", "<i8", "<i4", "|u1", "|b1")
_PREFIX = struct.Struct("<8sII")


class CompressedFileError(TopopruneError):
    """A compressed model file that is corrupt, truncated, hostile or of another version."""


@dataclass(frozen=True)
class LayerStats:
    """One weight layer's storage at each stage of the pipeline, in bits (Han et al.'s tables:
    pruned (32-bit weights + relative index), + quantised (codebook indices), + Huffman). The
    codebook (32 bits per entry) is counted from the quantised stage on, Huffman tables are not
    (they are in the file size)."""

    name: str
    weights: int
    kept: int
    entries: int  # kept + fillers
    weight_bits: int
    index_bits: int
    codebook_size: int
    huffman_weight_bits: int  # total bits of the Huffman-coded cluster indices
    huffman_index_bits: int  # total bits of the Huffman-coded gap fields

    @property
    def dense_bits(self) -> int:
        return 32 * self.weights

    @property
    def pruned_bits(self) -> int:
        return self.entries * (32 + self.index_bits)

    @property
    def quantised_bits(self) -> int:
        return self.entries * (self.weight_bits + self.index_bits) + 32 * self.codebook_size

    @property
    def huffman_bits(self) -> int:
        return self.huffman_weight_bits + self.huffman_index_bits + 32 * self.codebook_size

    def row(self) -> dict:
        """The paper's columns (Tables 2-3) and the bytes at each stage."""
        entries = max(self.entries, 1)
        return {
            "layer": self.name,
            "weights": self.weights,
            "kept": self.kept,
            "kept_percent": 100 * self.kept / self.weights,
            "fillers": self.entries - self.kept,
            "weight_bits": self.weight_bits,
            "weight_bits_huffman": self.huffman_weight_bits / entries,
            "index_bits": self.index_bits,
            "index_bits_huffman": self.huffman_index_bits / entries,
            "dense_bytes": self.dense_bits / 8,
            "pruned_bytes": self.pruned_bits / 8,
            "quantised_bytes": self.quantised_bits / 8,
            "huffman_bytes": self.huffman_bits / 8,
            "rate_quantised_percent": 100 * self.quantised_bits / self.dense_bits,
            "rate_huffman_percent": 100 * self.huffman_bits / self.dense_bits,
        }


@dataclass
class DecodedLayer:
    name: str
    weight: np.ndarray  # float32, zero where pruned
    mask: np.ndarray  # bool
    codebook: np.ndarray
    indices: np.ndarray  # one codebook index per kept weight, in flattened order
    groups: int = 1  # a grouped convolution's groups


@dataclass
class CompressedModel:
    """What a compressed file holds, decoded."""

    layers: list[DecodedLayer]
    tensors: dict[str, np.ndarray]
    chain: list[bool]
    metadata: dict = field(default_factory=dict)


def _encode_layer(
    name: str,
    weight: np.ndarray,
    mask: np.ndarray,
    bits: int,
    index_bits: int,
    use_huffman: bool,
    init: str,
    seed: int,
) -> tuple[dict, list[bytes], LayerStats]:
    weight = np.asarray(weight, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if weight.shape != mask.shape:
        raise TopopruneError(f"{name}: weight {weight.shape} and mask {mask.shape} differ")
    positions = np.flatnonzero(mask.ravel())
    if positions.size:
        shared = share_weights(weight.ravel()[positions], bits, init=init, seed=seed)
        codebook, indices = shared.codebook, shared.indices
    else:  # an emptied layer: no codebook, no entries
        codebook, indices = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    fields = relative_index(positions, index_bits)
    real = fields != 2**index_bits - 1
    k = codebook.size
    # a filler's weight slot is ignored; the most frequent index there costs the fewest bits
    filler_symbol = int(np.bincount(indices, minlength=max(k, 1)).argmax())
    symbols = np.full(fields.size, filler_symbol, dtype=np.int64)
    symbols[real] = indices
    weight_lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    index_lengths = huffman.code_lengths(np.bincount(fields, minlength=2**index_bits))
    if use_huffman:
        weight_stream = (*huffman.encode(symbols, weight_lengths), weight_lengths.tolist())
        index_stream = (*huffman.encode(fields, index_lengths), index_lengths.tolist())
    else:
        weight_stream = (*pack_fixed(symbols, bits), None)
        index_stream = (*pack_fixed(fields, index_bits), None)
    stats = LayerStats(
        name, int(mask.size), int(positions.size), int(fields.size), bits, index_bits, k,
        int((np.bincount(symbols, minlength=k) * weight_lengths).sum()),
        int((np.bincount(fields, minlength=2**index_bits) * index_lengths).sum()),
    )  # fmt: skip
    header = {"name": name, "shape": list(weight.shape), "kept": int(positions.size),
              "entries": int(fields.size), "weight_bits": bits,
              "index_bits": index_bits}  # fmt: skip
    sections = [codebook.astype("<f4").tobytes()]
    for key, (data, nbits, lengths) in (("weights", weight_stream), ("index", index_stream)):
        header[key] = {"coding": "huffman" if use_huffman else "fixed", "nbits": nbits}
        if lengths is not None:
            header[key]["code_lengths"] = lengths
        sections.append(data)
    return header, sections, stats


def write_compressed(
    path: str | Path,
    layers: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    bits: Mapping[str, int],
    index_bits: Mapping[str, int],
    tensors: Mapping[str, np.ndarray] | None = None,
    chain: Sequence[bool] = (),
    metadata: Mapping | None = None,
    use_huffman: bool = True,
    init: str = "linear",
    seed: int = 0,
    groups: Mapping[str, int] | None = None,
) -> list[LayerStats]:
    """Compress ``(name, weight, mask)`` layers (and raw ``tensors`` such as biases) into
    ``path``, written atomically; returns each layer's storage statistics.

    ``bits[name]`` is the layer's weight bits (codebook of ``2**bits`` entries), ``index_bits``
    its gap field width. Kept weights that take at most ``2**bits`` distinct values (a model after
    trained quantisation) are stored exactly; otherwise they are shared by k-means (``init``).
    """
    if len(chain) not in (0, max(len(layers) - 1, 0)):
        raise TopopruneError("chain needs one flag per consecutive pair of layers")
    payload: list[bytes] = []
    offset = 0

    def place(data: bytes) -> dict:
        nonlocal offset
        payload.append(data)
        where = {"offset": offset, "nbytes": len(data)}
        offset += len(data)
        return where

    layer_headers, stats = [], []
    for name, weight, mask in layers:
        header, sections, layer_stats = _encode_layer(
            name, weight, mask, bits[name], index_bits[name], use_huffman, init, seed
        )
        if (groups or {}).get(name, 1) > 1:
            header["groups"] = int(groups[name])
        header["codebook"] = place(sections[0])
        header["weights"].update(place(sections[1]))
        header["index"].update(place(sections[2]))
        layer_headers.append(header)
        stats.append(layer_stats)
    tensor_headers = []
    for name, array in (tensors or {}).items():
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.str not in TENSOR_DTYPES:
            array, dtype = array.astype("<f4"), np.dtype("<f4")
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        tensor_headers.append({"name": name, "shape": list(array.shape), "dtype": dtype.str,
                               **place(data)})  # fmt: skip
    header = json.dumps({
        "layers": layer_headers, "tensors": tensor_headers,
        "chain": [bool(c) for c in chain] or [False] * max(len(layers) - 1, 0),
        "metadata": dict(metadata or {}),
    }, separators=(",", ":")).encode()  # fmt: skip
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(payload)
    write_bytes_atomic(path, body + hashlib.sha256(body).digest())
    return stats


def is_compressed_file(head: bytes) -> bool:
    """Whether a file's first bytes are this format's magic number."""
    return head[: len(MAGIC)] == MAGIC


def read_compressed(path: str | Path) -> CompressedModel:
    """Decode a compressed file into weights (zero where pruned), masks, tensors and the chain."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CompressedFileError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return _decode(data)
    except CompressedFileError as exc:
        raise CompressedFileError(f"{path}: {exc}") from None
    except TopopruneError as exc:  # a stream that does not decode
        raise CompressedFileError(f"{path}: corrupt compressed file: {exc}") from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:
        # a header that passed every check and still does not decode: never a traceback
        raise CompressedFileError(
            f"{path}: corrupt compressed file ({type(exc).__name__}: {exc})"
        ) from None


def _decode(data: bytes) -> CompressedModel:
    if len(data) < _PREFIX.size + 32 or not is_compressed_file(data):
        raise CompressedFileError("not a topoprune compressed file, or truncated")
    body, checksum = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != checksum:
        raise CompressedFileError("checksum mismatch: the file is corrupt or truncated")
    _, version, header_size = _PREFIX.unpack_from(body)
    if version != VERSION:
        raise CompressedFileError(f"format version {version}; this topoprune reads {VERSION}")
    start = _PREFIX.size
    if start + header_size > len(body):
        raise CompressedFileError("corrupt header length")
    try:
        header = json.loads(body[start : start + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CompressedFileError("corrupt header (not JSON)") from None
    payload = memoryview(body)[start + header_size :]
    spec = _Spec(header)
    declared = 0
    for entry in [*spec.list("layers"), *spec.list("tensors")]:
        declared += math.prod(_Spec(spec.dict(entry, "layer or tensor")).shape())
    if declared > MAX_TOTAL_ELEMENTS:
        raise CompressedFileError(f"the file declares {declared} elements; topoprune reads "
                                  f"at most {MAX_TOTAL_ELEMENTS}")  # fmt: skip
    layers = [_decode_layer(spec.dict(entry, "layer"), payload) for entry in spec.list("layers")]
    tensors = {}
    for entry in spec.list("tensors"):
        entry = _Spec(spec.dict(entry, "tensor"))
        dtype = entry.choice("dtype", TENSOR_DTYPES)
        shape = entry.shape()
        raw = entry.section(payload)
        if len(raw) != math.prod(shape) * np.dtype(dtype).itemsize:
            raise CompressedFileError(f"tensor {entry.str('name')}: size does not match its shape")
        tensors[entry.str("name")] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    chain = [bool(c) for c in spec.list("chain")]
    if len(chain) != max(len(layers) - 1, 0):
        raise CompressedFileError("corrupt header: chain length does not match the layers")
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CompressedFileError("corrupt header: metadata")
    return CompressedModel(layers, tensors, chain, metadata)


class _Spec:
    """Typed access to one header object; any missing or mistyped field is a corrupt file."""

    def __init__(self, obj: object) -> None:
        if not isinstance(obj, dict):
            raise CompressedFileError("corrupt header: expected an object")
        self.obj = obj

    def _get(self, key: str):
        if key not in self.obj:
            raise CompressedFileError(f"corrupt header: missing {key!r}")
        return self.obj[key]

    def int(self, key: str, low: int = 0, high: int | None = None) -> int:
        value = self._get(key)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            raise CompressedFileError(f"corrupt header: {key!r} = {value!r}")
        return value

    def str(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise CompressedFileError(f"corrupt header: {key!r} is not a string")
        return value

    def list(self, key: str) -> list:
        value = self._get(key)
        if not isinstance(value, list):
            raise CompressedFileError(f"corrupt header: {key!r} is not a list")
        return value

    def dict(self, value: object, what: str) -> dict:
        if not isinstance(value, dict):
            raise CompressedFileError(f"corrupt header: a {what} entry is not an object")
        return value

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.str(key)
        if value not in choices:
            raise CompressedFileError(f"corrupt header: {key!r} = {value!r}")
        return value

    def shape(self) -> tuple[int, ...]:
        shape = self.list("shape")
        if len(shape) > MAX_DIMENSIONS or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_LAYER_ELEMENTS
            for d in shape
        ):
            raise CompressedFileError(f"corrupt header: shape {shape}")
        if math.prod(shape) > MAX_LAYER_ELEMENTS:
            raise CompressedFileError(f"a tensor of shape {shape} is larger than topoprune reads")
        return tuple(shape)

    def section(self, payload: memoryview) -> bytes:
        offset, nbytes = self.int("offset"), self.int("nbytes")
        if offset + nbytes > len(payload):
            raise CompressedFileError("corrupt header: a section lies outside the file")
        return bytes(payload[offset : offset + nbytes])


def _decode_stream(spec: _Spec, payload: memoryview, width: int, count: int) -> np.ndarray:
    data, nbits = spec.section(payload), spec.int("nbits")
    if nbits > 8 * len(data) or 8 * len(data) - nbits >= 8:
        raise CompressedFileError("corrupt header: a stream's bit count does not match its bytes")
    if spec.choice("coding", ("huffman", "fixed")) == "fixed":
        if nbits != width * count:
            raise CompressedFileError("corrupt header: a fixed-width stream's size")
        return unpack_fixed(data, width, count)
    lengths = spec.list("code_lengths")
    if len(lengths) > 2**width or not all(
        isinstance(n, int) and 0 <= n <= huffman.MAX_CODE_LENGTH for n in lengths
    ):
        raise CompressedFileError("corrupt Huffman table")
    return huffman.decode(data, nbits, np.array(lengths, dtype=np.int64), count)


def _decode_layer(obj: dict, payload: memoryview) -> DecodedLayer:
    spec = _Spec(obj)
    name, shape = spec.str("name"), spec.shape()
    size = math.prod(shape)
    bits, index_bits = spec.int("weight_bits", 1, 16), spec.int("index_bits", 1, 16)
    kept = spec.int("kept", 0, size)
    # each filler advances at least one position, so a layer has at most `size` entries
    entries = spec.int("entries", kept, size)
    codebook_raw = _Spec(spec._get("codebook")).section(payload)
    if len(codebook_raw) % 4 or not min(kept, 1) <= len(codebook_raw) // 4 <= 2**bits:
        raise CompressedFileError(f"{name}: corrupt codebook")
    codebook = np.frombuffer(codebook_raw, dtype="<f4").astype(np.float32)
    symbols = _decode_stream(_Spec(spec._get("weights")), payload, bits, entries)
    fields = _decode_stream(_Spec(spec._get("index")), payload, index_bits, entries)
    positions, real = positions_from_relative(fields, index_bits)
    indices = symbols[real]
    if positions.size != kept or (kept and positions[-1] >= size):
        raise CompressedFileError(f"{name}: the sparse index does not match the layer's shape")
    if (symbols.size and symbols.max() >= max(codebook.size, 1)) or (
        indices.size and indices.max() >= codebook.size
    ):
        raise CompressedFileError(f"{name}: a weight index outside the codebook")
    weight = np.zeros(size, dtype=np.float32)
    mask = np.zeros(size, dtype=bool)
    weight[positions] = codebook[indices]
    mask[positions] = True
    groups = spec.int("groups", 1, max(shape[0], 1)) if "groups" in obj else 1
    if (len(shape) < 3 and groups > 1) or (shape and shape[0] % groups):
        raise CompressedFileError(f"{name}: corrupt groups {groups} for shape {list(shape)}")
    return DecodedLayer(name, weight.reshape(shape), mask.reshape(shape), codebook, indices,
                        groups)  # fmt: skip
