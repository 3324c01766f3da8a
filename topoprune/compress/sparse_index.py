"""Relative sparse indices (Han et al. 2016, section 2; their released decoder's convention).

A layer's kept positions (in the flattened weight) are stored as gaps in fixed-width fields of
``bits`` bits: a field value ``d`` advances the position by ``d + 1``. The largest value,
``2**bits - 1``, is the filler: it advances by ``2**bits - 1`` and places no weight, so a gap
too wide for one field costs one filler entry per ``2**bits - 1`` positions skipped. (The
paper's filler is a zero-valued weight at the field's maximum gap; ours reserves the maximum
field value instead, so no codebook entry has to stand for zero. Each costs one entry.)
"""

from __future__ import annotations

import numpy as np

from topoprune.errors import TopopruneError


def relative_index(positions: np.ndarray, bits: int) -> np.ndarray:
    """The gap fields (fillers included) that encode sorted, distinct ``positions``.

    Examples
    --------
    With 2-bit fields a real entry advances 1 to 3 positions and the filler (3) advances 3:

    >>> relative_index(np.array([0, 3, 10]), bits=2).tolist()
    [0, 2, 3, 3, 0]
    """
    positions = np.asarray(positions, dtype=np.int64)
    if not 1 <= bits <= 16:
        raise TopopruneError(f"index bits must be in [1, 16], got {bits}")
    if positions.size and (positions[0] < 0 or (np.diff(positions) <= 0).any()):
        raise TopopruneError("positions must be sorted, distinct and non-negative")
    filler = 2**bits - 1
    gaps = np.diff(positions, prepend=-1)  # >= 1
    # fillers before each entry so that the rest fits a real field (advance 1 .. 2**bits - 1)
    fillers = (gaps - 1) // filler
    last = gaps - 1 - fillers * filler  # the real entry's field, in [0, 2**bits - 2]
    counts = fillers + 1
    fields = np.full(int(counts.sum()), filler, dtype=np.int64)
    fields[np.cumsum(counts) - 1] = last
    return fields


def positions_from_relative(fields: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode gap fields: the kept positions, and which fields were real entries (not fillers).

    >>> positions, real = positions_from_relative(np.array([0, 2, 3, 3, 0]), bits=2)
    >>> positions.tolist(), real.tolist()
    ([0, 3, 10], [True, True, False, False, True])
    """
    fields = np.asarray(fields, dtype=np.int64)
    filler = 2**bits - 1
    if fields.size and (fields.min() < 0 or fields.max() > filler):
        raise TopopruneError(f"corrupt sparse index: a field outside [0, {filler}]")
    real = fields != filler
    advance = np.where(real, fields + 1, filler)
    return (np.cumsum(advance) - 1)[real], real
