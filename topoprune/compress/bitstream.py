"""Bit streams: fixed-width fields and variable-length codes packed big-endian into bytes."""

from __future__ import annotations

import numpy as np

from topoprune.errors import TopopruneError


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate ``codes[i]``'s low ``lengths[i]`` bits, most significant bit first; returns the
    bytes (zero-padded to a whole byte) and the number of bits.

    >>> pack_codes(np.array([1, 2, 3]), np.array([1, 2, 3]))
    (b'\\xcc', 6)
    """
    codes = np.asarray(codes, dtype=np.uint64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return b"", 0
    owner = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    shift = (lengths[owner] - 1 - (np.arange(total) - starts[owner])).astype(np.uint64)
    bits = ((codes[owner] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def pack_fixed(values: np.ndarray, width: int) -> tuple[bytes, int]:
    """Each value in ``width`` bits (values must fit).

    >>> pack_fixed(np.array([5, 0, 7]), 3)
    (b'\\xa3\\x80', 9)
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= 2**width):
        raise TopopruneError(f"values do not fit in {width} bits")
    return pack_codes(values, np.full(values.size, width))


def unpack_bits(data: bytes, nbits: int) -> np.ndarray:
    """The first ``nbits`` bits of ``data`` as a uint8 array of 0/1."""
    if nbits > 8 * len(data):
        raise TopopruneError(f"bit stream truncated: {nbits} bits expected, {8 * len(data)} found")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=nbits)


def unpack_fixed(data: bytes, width: int, count: int) -> np.ndarray:
    """``count`` values of ``width`` bits each (the inverse of :func:`pack_fixed`).

    >>> unpack_fixed(b'\\xa3\\x80', 3, 3).tolist()
    [5, 0, 7]
    """
    bits = unpack_bits(data, width * count).reshape(count, width).astype(np.int64)
    return bits @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
