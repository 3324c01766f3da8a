"""Errors of checkpoint reading."""

from topoprune.errors import TopopruneError


class CheckpointError(TopopruneError):
    """A checkpoint that cannot be read: missing, corrupt, hostile or of an unknown format."""
