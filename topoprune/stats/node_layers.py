"""Fits of every node layer of a network, each tested against its own random null."""

from __future__ import annotations

from topoprune.stats.estimator import BoundedPowerLaw, scale_free_supported
from topoprune.stats.fit import PowerLawFit
from topoprune.stats.null import node_layer_null
from topoprune.topology.network import SparseNetwork


def fit_node_layers(
    network: SparseNetwork,
    view: str = "channel",
    kind: str = "total",
    **options: object,
) -> list[PowerLawFit]:
    """A :class:`BoundedPowerLaw` fit of each node layer's ``kind`` degrees (dead nodes are set
    aside and counted), with the random-mask null of the same shapes and densities.

    ``options`` go to :class:`BoundedPowerLaw` (``mode``, ``n_boot``, ``seed``, ...).
    """
    nulls = node_layer_null(network, view, kind)
    fits = []
    for node_layer, null in zip(network.node_layers(view), nulls):
        model = BoundedPowerLaw(null_pmf=null, **options).fit(node_layer.degrees(kind))
        fit = model.fit_
        fit.scale_free = scale_free_supported(fit)  # type: ignore[attr-defined]
        fits.append(fit)
    return fits


def fit_columns(fit: PowerLawFit) -> dict:
    """The columns ``topoprune analyze`` shows per node layer."""
    return {
        "alpha": fit.alpha,
        "alpha_se": fit.alpha_se,
        "xmin": fit.xmin,
        "xmax": fit.xmax,
        "n_in_range": fit.n_tail,
        "ks": fit.ks,
        "p": fit.p_value,
        "scale_free": getattr(fit, "scale_free", False),
        "verdict": fit.verdict,
    }
