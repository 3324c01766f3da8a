"""Statistics of degree data: bounded power-law fits, bootstrap goodness of fit, alternatives,
the random null, and verdicts."""

from topoprune.stats.alternatives import ALTERNATIVES
from topoprune.stats.bootstrap import DEFAULT_BOOT
from topoprune.stats.bounded_power_law import power_sum, solve_alpha
from topoprune.stats.errors import FitError
from topoprune.stats.estimator import (
    BoundedPowerLaw,
    beats_random_null,
    scale_free_supported,
    verdict,
)
from topoprune.stats.fit import MODES, PowerLawFit, fit_power_law
from topoprune.stats.null import binomial_mixture_pmf, node_layer_null
from topoprune.stats.scan import KS_CONVENTIONS

__all__ = [
    "ALTERNATIVES",
    "DEFAULT_BOOT",
    "KS_CONVENTIONS",
    "MODES",
    "BoundedPowerLaw",
    "FitError",
    "PowerLawFit",
    "beats_random_null",
    "binomial_mixture_pmf",
    "fit_power_law",
    "node_layer_null",
    "power_sum",
    "scale_free_supported",
    "solve_alpha",
    "verdict",
]
