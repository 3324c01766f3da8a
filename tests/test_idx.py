import gzip
import struct

import numpy as np
import pytest

from topoprune.data.idx import idx_bytes, parse_idx, read_idx
from topoprune.errors import DataError


def test_round_trip_uint8_and_big_endian():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(images)), images)
    values = np.array([1.5, -2.0], dtype=np.float32)
    assert np.array_equal(parse_idx(idx_bytes(values)), values)


def test_header_layout_matches_mnist_magic_numbers():
    assert idx_bytes(np.zeros((5,), np.uint8))[:8] == struct.pack(">II", 2049, 5)
    assert idx_bytes(np.zeros((5, 2, 2), np.uint8))[:4] == struct.pack(">I", 2051)


def test_wrong_magic_number_is_named():
    raw = bytearray(idx_bytes(np.zeros((4, 2, 2), np.uint8)))
    raw[0] = 0x1F  # e.g. a gzip header read as raw
    with pytest.raises(DataError, match=r"labels\.idx: wrong magic number"):
        parse_idx(bytes(raw), "labels.idx")


def test_unknown_type_code_is_wrong_magic():
    raw = bytearray(idx_bytes(np.zeros(3, np.uint8)))
    raw[2] = 0x42
    with pytest.raises(DataError, match="wrong magic number"):
        parse_idx(bytes(raw))


def test_truncated_file_names_sizes():
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"f: truncated: shape \(10, 28, 28\) needs 7856 bytes"):
        parse_idx(raw[:-1], "f")


def test_truncated_header_and_tiny_file():
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DataError, match="truncated inside the header"):
        parse_idx(raw[:9])
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00")


def test_trailing_bytes_are_an_error():
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")


def test_wrong_dimension_count():
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        parse_idx(idx_bytes(np.zeros((1, 2, 2), np.uint8)), expected_ndim=1)


def test_gzip_and_corrupt_gzip(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = tmp_path / "a-idx2-ubyte.gz"
    good.write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(good), array)
    bad = tmp_path / "b-idx2-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(array))[:-12])
    with pytest.raises(DataError, match=r"b-idx2-ubyte\.gz: cannot be read"):
        read_idx(bad)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")
