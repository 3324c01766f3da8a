"""Validation of degree-like data before any fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topoprune.stats.errors import FitError


@dataclass(frozen=True)
class PositiveData:
    """The positive values of a sample (sorted, float) and how many zeros were set aside."""

    values: np.ndarray
    n_zero: int

    @property
    def n(self) -> int:
        return int(self.values.size)


def positive_data(data: object, discrete: bool = True) -> PositiveData:
    """Check the data and set zeros aside (dead nodes: counted, never fitted).

    Raises
    ------
    FitError
        Empty data, NaN/inf, negative values, or non-integers for a discrete fit.

    Examples
    --------
    >>> positive_data([3, 0, 1, 0]).n_zero
    2
    """
    try:
        x = np.asarray(data, dtype=float).ravel()
    except (TypeError, ValueError):
        raise FitError("data must be numbers") from None
    if x.size == 0:
        raise FitError("no data to fit")
    bad = ~np.isfinite(x)
    if bad.any():
        raise FitError(f"data contain {int(bad.sum())} NaN or infinite values")
    if (x < 0).any():
        raise FitError(
            f"data contain {int((x < 0).sum())} negative values (e.g. {x[x < 0][0]:g});"
            " degrees are >= 0"
        )
    if discrete:
        fractional = x != np.round(x)
        if fractional.any():
            raise FitError(
                f"non-integer values (e.g. {x[fractional][0]:g}) for a discrete fit; "
                "use a continuous fit (--continuous) for real-valued data"
            )
    zero = x == 0
    return PositiveData(np.sort(x[~zero]), int(zero.sum()))
