"""Canonical Huffman codes (Huffman 1952; canonical form as in DEFLATE, RFC 1951 section 3.2.2).

A code is fully described by its code lengths (one per symbol, 0 for symbols that do not occur),
which is what a compressed file stores: codes are assigned in order of (length, symbol).
"""

from __future__ import annotations

import heapq
from fractions import Fraction

import numpy as np

from topoprune.compress.bitstream import pack_codes, unpack_bits
from topoprune.errors import TopopruneError

MAX_CODE_LENGTH = 60  # codes are held in uint64; unreachable below ~1e12 symbols
TABLE_BITS = 20  # decode by table lookup when the longest code is at most this long


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal prefix-code lengths for symbol frequencies ``counts`` (Huffman's algorithm).

    A symbol that never occurs gets length 0; a lone symbol gets length 1 (a code needs a bit).
    Ties are broken by symbol order, so equal counts give the same code on every machine.

    Examples
    --------
    >>> code_lengths(np.array([5, 1, 1, 2, 0])).tolist()
    [1, 3, 3, 2, 0]
    >>> code_lengths(np.array([0, 7])).tolist()
    [0, 1]
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise TopopruneError("symbol counts must be a 1-D array of non-negative integers")
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 1:
        lengths[used] = 1
    if used.size <= 1:
        return lengths
    # heap of (weight, tie-break, node); leaves are the used symbols, merges append parents
    parent = [-1] * used.size
    heap = [(int(counts[s]), i, i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        node = len(parent)
        parent.append(-1)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (w1 + w2, node, node))
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[: used.size]
    if lengths.max() > MAX_CODE_LENGTH:
        raise TopopruneError(f"Huffman code longer than {MAX_CODE_LENGTH} bits")
    return lengths


def check_lengths(lengths: np.ndarray) -> np.ndarray:
    """Validate code lengths read from a file: a prefix code must satisfy Kraft's inequality
    (sum of 2**-length <= 1), else the table is corrupt."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > MAX_CODE_LENGTH).any():
        raise TopopruneError("corrupt Huffman table: code lengths out of range")
    if sum(Fraction(1, 2 ** int(n)) for n in lengths if n) > 1:
        raise TopopruneError("corrupt Huffman table: the lengths violate Kraft's inequality")
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol: shorter codes first, then by symbol.

    >>> [format(int(c), f"0{n}b") for c, n in zip(canonical_codes(np.array([2, 1, 3, 3])),
    ...                                            [2, 1, 3, 3])]
    ['10', '0', '110', '111']
    """
    lengths = check_lengths(lengths)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """The bit stream of ``symbols`` under the canonical code with ``lengths``; (bytes, bits).

    >>> encode(np.array([0, 1, 1, 2]), np.array([1, 2, 2]))
    (b'V', 7)
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= lengths.size):
        raise TopopruneError("symbol outside the code's alphabet")
    if symbols.size and (np.asarray(lengths)[symbols] == 0).any():
        raise TopopruneError("symbol without a code (its count was 0)")
    return pack_codes(canonical_codes(lengths)[symbols], np.asarray(lengths)[symbols])


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols from a canonical-Huffman bit stream of ``nbits`` bits.

    A stream that ends early, holds a bit pattern that is no code, or has bits left over is an
    error (a corrupt file must not decode to wrong values).

    >>> decode(b'V', 7, np.array([1, 2, 2]), 4).tolist()
    [0, 1, 1, 2]
    """
    lengths = check_lengths(lengths)
    if count > nbits:  # every code has at least one bit
        raise TopopruneError("corrupt Huffman stream: fewer bits than symbols")
    bits = unpack_bits(data, nbits)
    if count == 0:
        if nbits:
            raise TopopruneError("corrupt Huffman stream: bits left over")
        return np.zeros(0, dtype=np.int64)
    longest = int(lengths.max()) if lengths.size else 0
    if longest == 0:
        raise TopopruneError("corrupt Huffman stream: symbols without a code table")
    codes = canonical_codes(lengths)
    out = _decode_by_table(bits, codes, lengths, longest, count) if longest <= TABLE_BITS else (
        _decode_bitwise(bits, codes, lengths, count))  # fmt: skip
    return out


def _decode_by_table(bits, codes, lengths, longest: int, count: int) -> np.ndarray:
    # table[window] = (symbol, length) for every `longest`-bit window starting with a code
    size = 1 << longest
    table_symbol = np.full(size, -1, dtype=np.int64)
    table_length = np.zeros(size, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        n = int(lengths[symbol])
        first = int(codes[symbol]) << (longest - n)
        table_symbol[first : first + (1 << (longest - n))] = symbol
        table_length[first : first + (1 << (longest - n))] = n
    padded = np.concatenate([bits, np.zeros(longest, dtype=np.uint8)]).astype(np.int64)
    # the `longest`-bit window at every bit position, built by shifts (vectorised)
    windows = np.zeros(bits.size, dtype=np.int64)
    for j in range(longest):
        windows = (windows << 1) | padded[j : j + bits.size]
    symbols, steps = table_symbol[windows].tolist(), table_length[windows].tolist()
    out = np.empty(count, dtype=np.int64)
    position, nbits = 0, bits.size
    for i in range(count):
        if position >= nbits or symbols[position] < 0 or position + steps[position] > nbits:
            raise TopopruneError("corrupt Huffman stream: it ends early or holds no valid code")
        out[i] = symbols[position]
        position += steps[position]
    if position != nbits:
        raise TopopruneError("corrupt Huffman stream: bits left over")
    return out


def _decode_bitwise(bits, codes, lengths, count: int) -> np.ndarray:
    lookup = {(int(lengths[s]), int(codes[s])): int(s) for s in np.flatnonzero(lengths)}
    out = np.empty(count, dtype=np.int64)
    code = length = i = 0
    for bit in bits.tolist():
        code, length = (code << 1) | bit, length + 1
        symbol = lookup.get((length, code))
        if symbol is not None:
            if i == count:
                raise TopopruneError("corrupt Huffman stream: bits left over")
            out[i], code, length, i = symbol, 0, 0, i + 1
        elif length > MAX_CODE_LENGTH:
            raise TopopruneError("corrupt Huffman stream: no valid code")
    if i != count or length:
        raise TopopruneError("corrupt Huffman stream: it ends early or holds no valid code")
    return out
