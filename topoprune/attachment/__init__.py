"""Preferential attachment between two mask snapshots: created and removed connections, the
attachment rate against d_i(0) d_j(0), degree growth and degree distributions before and after."""

from topoprune.attachment.growth import DegreeGrowth, degree_growth, distribution_change
from topoprune.attachment.network import compare_snapshots
from topoprune.attachment.rates import (
    AttachmentError,
    AttachmentRate,
    attachment_rate,
    created_edges,
    removed_edges,
)

__all__ = [
    "AttachmentError",
    "AttachmentRate",
    "DegreeGrowth",
    "attachment_rate",
    "compare_snapshots",
    "created_edges",
    "degree_growth",
    "distribution_change",
    "removed_edges",
]
