"""Errors that topoprune raises for user mistakes and bad input.

Every error a user can cause derives from :class:`TopopruneError`; the CLI prints its message
without a traceback and exits with status 2.
"""

from __future__ import annotations


class TopopruneError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class DataError(TopopruneError):
    """A data set is missing, corrupt or cannot be fetched."""


class UnknownNameError(TopopruneError, KeyError):
    """A name that is not in a registry; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
