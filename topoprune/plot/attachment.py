"""Figures of preferential attachment, drawn from a :func:`compare_snapshots` result (or the same
structure read back from JSON): created connections against d1 d2, degree increase against
initial degree."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(fig, path: str | Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attachment_rates(result: dict, path: str | Path, title: str = "") -> Path:
    """Per linear layer: the rate of created connections per candidate pair against d_i d_j
    (log bins, log-log), with the fitted k^beta line through the rates' weighted centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["layers"] if "attachment" in r]
    fig, axes = plt.subplots(1, max(len(rows), 1), figsize=(3.8 * max(len(rows), 1), 3.4),
                             squeeze=False)  # fmt: skip
    for ax, row in zip(axes[0], rows, strict=False):
        a = row["attachment"]
        bins = a["bins"]
        cand, made = np.array(bins["candidates"], float), np.array(bins["created"], float)
        k = np.array(bins["mean_k"], float)
        shown = (cand > 0) & (made > 0)
        ax.loglog(k[shown], made[shown] / cand[shown], "o", color="C0", label="created / pairs")
        use = cand > 0
        if use.any() and np.isfinite(a["beta"]):
            # the Poisson model's scale given beta: expected created = observed created
            scale = made.sum() / np.sum(cand[use] * k[use] ** a["beta"])
            grid = np.geomspace(k[use].min(), k[use].max(), 50)
            low, high = a["beta_ci95"]
            ax.loglog(grid, scale * grid ** a["beta"], "-", color="C3",
                      label=f"beta = {a['beta']:.2f} [{low:.2f}, {high:.2f}]")  # fmt: skip
        empty = int(np.sum(use & (made == 0)))
        if empty:
            ax.text(0.97, 0.04, f"{empty} bins with none created (rate 0) not drawn",
                    transform=ax.transAxes, ha="right", fontsize=6)  # fmt: skip
        ax.set_xlabel("d_i(0) d_j(0)")
        ax.set_ylabel("attachment rate")
        ax.set_title(f"{row['layer']}: {row['created']} created", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path, title)


def plot_degree_growth(
    result: dict, degrees: list[tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Per node layer: d(1) - d(0) against d(0), with the least-squares line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = result["node_layers"]
    fig, axes = plt.subplots(1, len(entries), figsize=(3.4 * len(entries), 3.2), squeeze=False)
    for ax, entry, (d0, d1) in zip(axes[0], entries, degrees, strict=True):
        ax.plot(d0, d1 - d0, ".", ms=3, alpha=0.5, color="C0")
        growth = entry.get("growth")
        if growth:
            grid = np.linspace(d0.min(), d0.max(), 2)
            ax.plot(grid, growth["intercept"] + growth["slope"] * grid, "-", color="C3",
                    label=f"slope {growth['slope']:.3f}, R2 {growth['r_squared']:.2f}")  # fmt: skip
            ax.legend(fontsize=7)
        ax.set_xlabel("degree before")
        ax.set_ylabel("degree increase")
        ax.set_title(entry["node_layer"], fontsize=9)
    return _save(fig, path, title)


def plot_degree_distributions(
    result: dict, degrees: list[tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Per node layer: log-binned P(k) before and after, each with its bounded power-law fit over
    its range when ``result`` holds fits (``compare_snapshots(..., fit_options=...)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from topoprune.plot.panels import bounded_power_law_curve, log_binned_density

    entries = result["node_layers"]
    fig, axes = plt.subplots(1, len(entries), figsize=(3.4 * len(entries), 3.2), squeeze=False)
    for ax, entry, pair in zip(axes[0], entries, degrees, strict=True):
        fits = entry.get("fits", {})
        for when, d, color, marker in zip(("before", "after"), pair, ("C0", "C1"), "o^"):
            k, count = np.unique(np.asarray(d, np.int64), return_counts=True)
            x, y = log_binned_density(k, count)
            ax.loglog(x, y, marker, ms=4, color=color, label=when, alpha=0.8)
            fit = fits.get(when)
            if fit and fit.get("fittable") and k.size and k.max() > 0:
                curve_k, p = bounded_power_law_curve(fit, k.max(), int(count[k > 0].sum()))
                ax.loglog(curve_k, p, "-", color=color, lw=1.5,
                          label=f"alpha {when} {fit['alpha']:.2f}")  # fmt: skip
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
        ax.set_xlabel("degree k")
        ax.set_ylabel("P(k)")
        ax.set_title(entry["node_layer"], fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path, title)
