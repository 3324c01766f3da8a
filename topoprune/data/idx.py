"""Reader for the IDX format of the MNIST family (raw or gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from topoprune.errors import DataError

# type code -> big-endian dtype
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx_bytes(path: str | Path) -> bytes:
    """Return the uncompressed bytes of an IDX file; ``.gz`` files are decompressed.

    Raises :class:`DataError` naming the file when it cannot be read or decompressed.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); delete it and fetch it again") from None


def parse_idx(
    data: bytes, name: str = "<bytes>", *, expected_ndim: int | None = None
) -> np.ndarray:
    """Parse IDX bytes into an array, checking the magic number and the exact length.

    Parameters
    ----------
    data : bytes
        The whole (uncompressed) file.
    name : str
        The file's name, used in error messages.
    expected_ndim : int, optional
        The number of dimensions the caller requires (1 for labels, 3 for images).

    Returns
    -------
    numpy.ndarray
        A read-only view of ``data`` in native byte order for single-byte types.

    Examples
    --------
    >>> import struct
    >>> raw = struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([1, 2, 3])
    >>> parse_idx(raw).tolist()
    [1, 2, 3]
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{name}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08x}; "
            "not an IDX file (delete it and fetch it again)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"{name}: IDX file has {ndim} dimensions, expected {expected_ndim} "
            "(images and labels swapped?)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated inside the header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: {kind}: shape {shape} needs {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read and validate an IDX file (raw or ``.gz``); see :func:`parse_idx`."""
    return parse_idx(read_idx_bytes(path), str(path), expected_ndim=expected_ndim)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of :func:`parse_idx`).

    Examples
    --------
    >>> parse_idx(idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))).shape
    (2, 3)
    """
    codes = {np.dtype(v).newbyteorder(">") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in IDX_DTYPES.items()}  # fmt: skip
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
