"""The fit figure: empirical CCDF on log-log axes, the fitted (bounded) power law over its range,
and the alternatives dashed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from topoprune.plot.degrees import degree_ccdf


def _ccdf_curve(log_pmf: np.ndarray, k: np.ndarray, scale: float):
    pmf = np.exp(log_pmf - np.max(log_pmf))
    pmf /= pmf.sum()
    survival = np.cumsum(pmf[::-1])[::-1]  # P(K >= k) within the range
    return k, survival * scale


def plot_fit(values, model, path: str | Path, ax=None, title: str = ""):
    """Draw ``model`` (a fitted :class:`~topoprune.stats.BoundedPowerLaw`) over ``values``.

    The curves are scaled to the empirical CCDF at xmin, so they overlay the data's tail.
    Returns the matplotlib axes; writes ``path`` when given (and ``ax`` is None).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from topoprune.stats.alternatives import ALTERNATIVES, support

    values = np.asarray(values, float)
    fit = model.fit_
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 4))
    k, c = degree_ccdf(values)
    ax.loglog(k, c, "o", ms=3, color="0.35", label="data")
    if fit.fittable:
        scale = float(np.mean(values[values > 0] >= fit.xmin))
        grid = support(values[values > 0], fit.xmin, fit.xmax)
        grid = grid[grid <= values.max()] if not np.isfinite(fit.xmax) else grid
        pl = -fit.alpha * np.log(grid)
        name = "power law" if not np.isfinite(fit.xmax) else "bounded power law"
        ax.loglog(
            *_ccdf_curve(pl, grid, scale),
            "-",
            lw=2,
            color="C3",
            label=f"{name}, alpha={fit.alpha:.2f}",
        )
        styles = iter(["C0", "C1", "C2", "C4", "C5", "C6"])
        for row in fit.comparisons:
            if row["alternative"] not in ALTERNATIVES or not row["params"]:
                continue
            alt = ALTERNATIVES[row["alternative"]]
            with np.errstate(all="ignore"):
                kernel = alt.log_kernel(np.array(row["params"]), grid, np.log(grid))
            ax.loglog(
                *_ccdf_curve(kernel, grid, scale),
                "--",
                lw=1,
                color=next(styles),
                label=row["alternative"].replace("_", " "),
            )
        ax.axvline(fit.xmin, color="0.6", lw=0.8, ls=":")
        if np.isfinite(fit.xmax):
            ax.axvline(fit.xmax, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(max(c.min() / 5, 1e-12), 1.5)  # the alternatives may fall far below the data
    ax.set_xlabel("degree k")
    ax.set_ylabel("P(K >= k)")
    ax.set_title(title or textwrap.fill(fit.verdict, 70), fontsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, which="both", alpha=0.25)
    if own and path:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return ax
