"""Errors of the statistics layer."""

from topoprune.errors import TopopruneError


class FitError(TopopruneError):
    """Data that cannot be fitted at all: empty, NaN, negative, or non-integer when discrete."""
