"""Deep Compression's storage: Huffman codes (against brute-force optimal lengths), bit streams,
relative indices with fillers, k-means weight sharing, and the compressed file (round trips,
corruption, hostile headers)."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct

import numpy as np
import pytest

from topoprune.compress import huffman
from topoprune.compress.bitstream import pack_fixed, unpack_fixed
from topoprune.compress.container import (
    MAGIC,
    CompressedFileError,
    read_compressed,
    write_compressed,
)
from topoprune.compress.sparse_index import positions_from_relative, relative_index
from topoprune.compress.weight_sharing import (
    assign,
    initial_centroids,
    kmeans_1d,
    share_weights,
)
from topoprune.errors import TopopruneError

# ---- Huffman --------------------------------------------------------------------------------


def brute_force_optimal_cost(counts: list[int]) -> int:
    """The least sum(count x length) over all length vectors of a prefix code (Kraft's
    inequality), by enumeration: the optimum a Huffman code must reach."""
    used = [c for c in counts if c]
    if len(used) == 1:
        return used[0]
    best = None
    for lengths in itertools.product(range(1, len(used)), repeat=len(used)):
        if sum(2.0**-n for n in lengths) <= 1:
            cost = sum(c * n for c, n in zip(used, lengths, strict=True))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_huffman_lengths_are_optimal_on_small_alphabets(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=int(rng.integers(2, 7)))
    if counts.sum() == 0:
        counts[0] = 1
    lengths = huffman.code_lengths(counts)
    assert int((counts * lengths).sum()) == brute_force_optimal_cost(counts.tolist())
    assert ((lengths == 0) == (counts == 0)).all()


def test_canonical_codes_are_prefix_free():
    lengths = huffman.code_lengths(np.array([40, 30, 10, 10, 5, 3, 1, 1]))
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{n}b") for c, n in zip(codes, lengths, strict=True)]
    for a, b in itertools.permutations(words, 2):
        assert not b.startswith(a)


@pytest.mark.parametrize("alphabet", [1, 2, 7, 64])
def test_huffman_round_trip(alphabet):
    rng = np.random.default_rng(alphabet)
    symbols = rng.geometric(0.3, size=5000) % alphabet
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    data, nbits = huffman.encode(symbols, lengths)
    assert nbits == int((np.bincount(symbols, minlength=alphabet) * lengths).sum())
    assert np.array_equal(huffman.decode(data, nbits, lengths, symbols.size), symbols)


def test_the_bitwise_decoder_agrees_with_the_table_decoder(monkeypatch):
    symbols = np.arange(300) % 9
    lengths = huffman.code_lengths(np.bincount(symbols) * np.arange(1, 10))
    data, nbits = huffman.encode(symbols, lengths)
    monkeypatch.setattr(huffman, "TABLE_BITS", 0)
    assert np.array_equal(huffman.decode(data, nbits, lengths, symbols.size), symbols)


def test_huffman_streams_that_do_not_decode_are_errors():
    lengths = np.array([1, 2, 2])
    data, nbits = huffman.encode(np.array([0, 1, 2, 2]), lengths)
    with pytest.raises(TopopruneError, match=r"ends early|truncated"):
        huffman.decode(data, nbits - 1, lengths, 4)
    with pytest.raises(TopopruneError, match="left over"):
        huffman.decode(data, nbits, lengths, 3)
    # an incomplete code: the pattern 11 is no code
    with pytest.raises(TopopruneError, match=r"no valid code"):
        huffman.decode(b"\xc0", 2, np.array([1, 2, 0]), 1)
    with pytest.raises(TopopruneError, match="Kraft"):
        huffman.decode(data, nbits, np.array([1, 1, 1]), 4)


# ---- bit streams and relative indices ---------------------------------------------------------


@pytest.mark.parametrize("width", [1, 3, 5, 8, 13])
def test_fixed_width_round_trip(width):
    values = np.random.default_rng(width).integers(0, 2**width, size=101)
    data, nbits = pack_fixed(values, width)
    assert nbits == 101 * width and len(data) == -(-nbits // 8)
    assert np.array_equal(unpack_fixed(data, width, 101), values)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_relative_index_round_trip_and_filler_count(bits):
    rng = np.random.default_rng(bits)
    for _ in range(50):
        size = int(rng.integers(1, 3000))
        positions = np.sort(rng.choice(size, size=int(rng.integers(1, min(size, 200) + 1)),
                                       replace=False))  # fmt: skip
        fields = relative_index(positions, bits)
        decoded, real = positions_from_relative(fields, bits)
        assert np.array_equal(decoded, positions)
        gaps = np.diff(positions, prepend=-1)
        # a filler covers 2**bits - 1 positions, a real entry up to 2**bits - 1
        assert (~real).sum() == ((gaps - 1) // (2**bits - 1)).sum()


# ---- weight sharing -----------------------------------------------------------------------------


def test_kmeans_reaches_a_lloyd_fixed_point():
    values = np.random.default_rng(0).standard_t(3, size=4000)
    shared = kmeans_1d(values, 16)
    assert np.array_equal(shared.indices, assign(values, shared.codebook.astype(np.float64)))
    for k in np.unique(shared.indices):
        mean = values[shared.indices == k].mean()
        assert shared.codebook[k] == pytest.approx(mean, rel=1e-6, abs=1e-7)
    assert (np.diff(shared.codebook) > 0).all()


def test_linear_init_starts_centroids_on_the_large_weights():
    # the paper's argument for linear initialisation: density and random starts put few
    # centroids where the (few, important) large weights are
    values = np.concatenate([np.random.default_rng(1).normal(0, 0.01, 2000), [-1.0, 1.0]])
    linear = initial_centroids(values, 8, "linear")
    assert linear[0] == -1.0 and linear[-1] == 1.0
    assert np.abs(initial_centroids(values, 8, "density")).max() < 0.05
    assert np.abs(initial_centroids(values, 8, "random", seed=0)).max() < 0.05


def test_values_that_fit_the_codebook_are_kept_exactly():
    values = np.random.default_rng(2).choice(np.float32([-0.3, 0.01, 0.7]), size=500)
    shared = share_weights(values, 2)
    assert shared.iterations == 0 and np.array_equal(shared.values(), values)


# ---- the compressed file ----------------------------------------------------------------------


def _layers(seed: int = 0):
    rng = np.random.default_rng(seed)
    fc = rng.normal(size=(30, 50)).astype(np.float32)
    fc_mask = rng.random(fc.shape) < 0.08
    conv = rng.normal(size=(6, 3, 5, 5)).astype(np.float32)
    conv_mask = rng.random(conv.shape) < 0.6
    conv[0, 0, 0, 0], conv_mask[0, 0, 0, 0] = 0.0, True  # a kept weight that is exactly zero
    return [("conv.weight", conv, conv_mask), ("fc.weight", fc, fc_mask)]


def _write(path, use_huffman=True, tensors=None):
    return write_compressed(path, _layers(), bits={"conv.weight": 8, "fc.weight": 3},
                     index_bits={"conv.weight": 5, "fc.weight": 4},
                     tensors=tensors if tensors is not None else {"fc.bias": np.arange(30.0)},
                     chain=[True], metadata={"model": "tiny"},
                     use_huffman=use_huffman)  # fmt: skip


@pytest.mark.parametrize("use_huffman", [True, False])
def test_file_round_trip(tmp_path, use_huffman):
    path = tmp_path / "m.tprz"
    layers = _layers()
    stats = _write(path, use_huffman)
    decoded = read_compressed(path)
    assert decoded.chain == [True] and decoded.metadata == {"model": "tiny"}
    assert np.array_equal(decoded.tensors["fc.bias"], np.arange(30.0))
    for (name, weight, mask), layer in zip(layers, decoded.layers, strict=True):
        assert layer.name == name and np.array_equal(layer.mask, mask)
        shared = share_weights(weight[mask], 8 if name.startswith("conv") else 3)
        assert np.array_equal(layer.weight[mask], shared.values())
        assert (layer.weight[~mask] == 0).all()
    # a second compression of the decoded weights is lossless, bit for bit
    again = tmp_path / "again.tprz"
    write_compressed(again, [(lay.name, lay.weight, lay.mask) for lay in decoded.layers],
                     bits={"conv.weight": 8, "fc.weight": 3},
                     index_bits={"conv.weight": 5, "fc.weight": 4})  # fmt: skip
    for first, second in zip(decoded.layers, read_compressed(again).layers, strict=True):
        assert np.array_equal(first.weight, second.weight)
        assert np.array_equal(first.mask, second.mask)
    assert stats[0].kept == int(layers[0][2].sum())


def test_storage_statistics_by_hand(tmp_path):
    weight = np.zeros((1, 40), dtype=np.float32)
    mask = np.zeros((1, 40), dtype=bool)
    weight[0, [0, 35]], mask[0, [0, 35]] = [0.5, -0.5], True
    # 5-bit gaps: position 0 is field 0; the gap of 35 needs one filler (31) and field 3
    (stats,) = write_compressed(tmp_path / "h.tprz", [("w", weight, mask)], bits={"w": 2},
                                index_bits={"w": 5})  # fmt: skip
    assert (stats.kept, stats.entries) == (2, 3)
    assert stats.dense_bits == 32 * 40
    assert stats.pruned_bits == 3 * (32 + 5)
    assert stats.quantised_bits == 3 * (2 + 5) + 32 * 2  # codebook of the 2 distinct values
    # Huffman: weight symbols (0 for the filler, then 1, 0) and fields (0, 31, 3)
    assert stats.huffman_weight_bits == 1 + 1 + 1
    assert stats.huffman_index_bits == 1 + 2 + 2


def test_every_truncation_and_bit_flip_is_an_error(tmp_path):
    path = tmp_path / "m.tprz"
    _write(path)
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    for cut in sorted(set(rng.integers(0, len(data), 60).tolist()) | {0, 8, len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(CompressedFileError):
            read_compressed(path)
    for position in rng.integers(0, len(data), 60):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(CompressedFileError):
            read_compressed(path)


def _forge(path, edit) -> None:
    """Rewrite the file's header with ``edit`` and a valid checksum: a hostile file."""
    data = path.read_bytes()[:-32]
    magic, version, size = struct.unpack_from("<8sII", data)
    header = json.loads(data[16 : 16 + size])
    payload = data[16 + size :]
    version = edit(header) or version
    text = json.dumps(header).encode()
    body = struct.pack("<8sII", magic, version, len(text)) + text + payload
    path.write_bytes(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h["layers"][0].update(shape=[10**6, 10**6]), "larger than"),
        (lambda h: h["layers"][0].update(shape=[2, 2]), "kept|shape"),
        (lambda h: h["layers"][1]["weights"].update(offset=10**9), "outside the file"),
        (lambda h: h["layers"][1]["index"].update(coding="lzma"), "coding"),
        (lambda h: h["layers"][1].update(kept=True), "kept"),
        (lambda h: h["layers"][1].update(weight_bits=1), "codebook|Huffman|no valid code"),
        (lambda h: h["layers"][1]["index"].update(code_lengths=[1] * 16), r"Kraft|Huffman"),
        (lambda h: h["tensors"][0].update(dtype="|O"), "dtype"),
        (lambda h: h["tensors"][0].update(shape=[31]), "size does not match"),
        (lambda h: h.update(chain=[]), "chain"),
        (lambda h: h.pop("layers") and None, "missing 'layers'"),
        (lambda h: h["layers"][1]["weights"].update(code_lengths=[2**70] * 8), "Huffman"),
        (lambda h: h["layers"][0].update(shape=[1] * 70), "shape"),
        (lambda h: h["layers"][0].update(shape=[0, 10**30]), "shape"),
        (
            lambda h: h["tensors"].extend(
                [
                    {"name": f"t{i}", "shape": [2**31], "dtype": "<f4", "offset": 0, "nbytes": 0}
                    for i in range(3)
                ]
            ),
            "declares",
        ),
        (lambda h: 2, "version 2"),
    ],
)
def test_hostile_headers_are_errors(tmp_path, edit, message):
    path = tmp_path / "m.tprz"
    _write(path)
    _forge(path, edit)
    with pytest.raises(CompressedFileError, match=message):
        read_compressed(path)


def test_a_deeply_nested_header_is_an_error(tmp_path):
    text = b"[" * 100_000 + b"]" * 100_000
    body = struct.pack("<8sII", MAGIC, 1, len(text)) + text
    path = tmp_path / "deep.tprz"
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(CompressedFileError, match="JSON"):
        read_compressed(path)


def test_emptied_layers_and_signed_zeros_round_trip(tmp_path):
    empty = np.zeros((4, 5), dtype=np.float32)
    weight = np.array([[0.0, -0.0, 1.5, 0.0]], dtype=np.float32)
    mask = np.array([[True, True, True, False]])
    path = tmp_path / "e.tprz"
    write_compressed(path, [("empty", empty, np.zeros((4, 5), dtype=bool)), ("w", weight, mask)],
                     bits={"empty": 2, "w": 2}, index_bits={"empty": 3, "w": 3})  # fmt: skip
    decoded = read_compressed(path)
    assert not decoded.layers[0].mask.any() and decoded.layers[0].codebook.size == 0
    # kept zeros keep their sign bit: the values come back exactly
    assert np.array_equal(decoded.layers[1].weight.view(np.uint32), weight.view(np.uint32))


def test_file_starts_with_the_magic_number(tmp_path):
    path = tmp_path / "m.tprz"
    _write(path)
    assert path.read_bytes().startswith(MAGIC)
