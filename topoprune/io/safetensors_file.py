"""A memory-mapped safetensors reader that yields one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header of
``name -> {dtype, shape, data_offsets}``, then the raw little-endian data. Tensors come back as
read-only ``numpy.memmap`` views: nothing is copied until a layer is reduced, and a file of any
size streams layer by layer.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from topoprune.io.errors import CheckpointError

DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
}
FLOAT_TYPES = {"F64", "F32", "F16", "BF16"}
MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> tuple[dict, dict, int]:
    """``(tensors, metadata, data_start)`` of a safetensors file, validated against its size."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: corrupt safetensors header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    for name, info in header.items():
        try:
            dtype = np.dtype(DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a corrupt header entry") from None
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or begin < 0:
            raise CheckpointError(f"{path}: tensor {name!r}: offsets do not match its shape")
        if start + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} ends at byte {start + end}, file has {size}"
            )
    return header, metadata, start


def iter_tensors(path: Path, *, raw_halves: bool = False) -> Iterator[tuple[str, object, str]]:
    """``(name, array, dtype_name)`` in header order; float16/bfloat16 are widened to float32,
    or with ``raw_halves`` given as their bit patterns (:class:`~topoprune.io.tensors.HalfBits`:
    a mask needs no widening)."""
    from topoprune.io.tensors import HalfBits

    header, _, start = read_header(path)
    if not header:
        return
    with path.open("rb") as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty data section cannot be mapped
            mapped = None
    try:
        for name, info in header.items():
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            dtype = np.dtype(DTYPES[info["dtype"]])
            if mapped is None or end == begin:
                array = np.zeros(shape, dtype)
            else:
                array = np.frombuffer(
                    mapped, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin
                ).reshape(shape)
            if info["dtype"] in ("BF16", "F16") and raw_halves:
                array = HalfBits(array.view(np.uint16), info["dtype"])
            elif info["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            elif info["dtype"] == "F16":
                array = array.astype(np.float32)
            yield name, array, info["dtype"]
            del array
            if mapped is not None and end > begin:
                _release(mapped, start + begin, start + end)
    finally:
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:
                pass  # a caller still holds a view; the map closes when it is released


def _release(mapped: mmap.mmap, begin: int, end: int) -> None:
    """Drop a consumed tensor's pages from this process (they are re-read if touched again),
    so that streaming a file keeps one layer resident, not the whole file."""
    page = mmap.PAGESIZE
    first = (begin + page - 1) // page * page
    last = end // page * page
    if last > first and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


def metadata(path: Path) -> dict:
    return read_header(path)[1]
