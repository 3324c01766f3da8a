"""Pruning: masks on live models, shared allocation rules, and the method registry."""

from topoprune.prune.masks import add_masks, apply_masks, compression, current_masks
from topoprune.prune.methods import METHODS

__all__ = ["METHODS", "add_masks", "apply_masks", "compression", "current_masks"]
