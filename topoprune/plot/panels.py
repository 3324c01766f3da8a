"""Study figures drawn from stored results alone: rows of per-node-layer degree distributions
with their fitted bounded power law (the slides' panels), and exponents per layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topoprune.stats.bounded_power_law import log_power_sum


def _save(fig, path: str | Path, title: str = "") -> Path:
    """Title, tighten, write at 110 dpi and close a figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_binned_density(k: Sequence[int], count: Sequence[int], n_bins: int = 20):
    """``(centres, density)`` of positive degrees in geometric bins (density per unit degree,
    normalised over the positive degrees), the readable form of a sparse heavy-tailed histogram.

    Examples
    --------
    >>> centres, density = log_binned_density([1, 2, 3, 4], [4, 2, 1, 1], n_bins=2)
    >>> round(float((density * np.diff([1, 2, 5])).sum()), 6)
    1.0
    """
    k, count = np.asarray(k, float), np.asarray(count, float)
    keep = k > 0
    k, count = k[keep], count[keep]
    if k.size == 0:
        return np.empty(0), np.empty(0)
    edges = np.unique(np.floor(np.geomspace(k.min(), k.max() + 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([k.min(), k.min() + 1])
    edges[-1] = max(edges[-1], k.max() + 1)
    totals, _ = np.histogram(k, bins=edges, weights=count)
    density = totals / np.diff(edges) / count.sum()
    centres = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
    shown = totals > 0
    return centres[shown], density[shown]


def bounded_power_law_curve(fit: dict, k_max: float, n_positive: int):
    """``(k, P(k))`` of a stored discrete fit over its range, scaled by the share in range."""
    xmin = float(fit["xmin"])
    xmax = math.inf if fit["xmax"] in ("inf", None) else float(fit["xmax"])
    top = min(xmax, k_max)
    k = np.unique(np.round(np.geomspace(xmin, max(top, xmin), 60)))
    log_z = float(log_power_sum(fit["alpha"], xmin, xmax))
    share = fit["n_tail"] / max(n_positive, 1)
    return k, share * np.exp(-fit["alpha"] * np.log(k) - log_z)


def degree_panels(
    layers: list[dict],
    baseline: list[dict] | None,
    path: str | Path,
    *,
    title: str = "",
    mode: str = "window",
    baseline_label: str = "random mask",
) -> Path:
    """One panel per node layer: log-binned P(k) of the pruned network, its fitted bounded power
    law over [xmin, xmax] (``mode``), and the random-mask baseline in grey.

    ``layers`` and ``baseline`` are a stored fit file's per-view lists (``histogram``, ``fits``;
    a layer's optional ``dead`` count goes into its panel's title).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(layers), figsize=(3.3 * len(layers), 3.2), squeeze=False)
    for index, (ax, layer) in enumerate(zip(axes[0], layers, strict=True)):
        hist = layer["histogram"]
        n_positive = int(sum(c for k, c in zip(hist["k"], hist["count"], strict=True) if k > 0))
        x, y = log_binned_density(hist["k"], hist["count"])
        ax.loglog(x, y, "o", ms=4, color="C0", label="pruned")
        if baseline is not None and index < len(baseline):
            bh = baseline[index]["histogram"]
            bx, by = log_binned_density(bh["k"], bh["count"])
            ax.loglog(bx, by, "s", ms=3, color="0.6", label=baseline_label)
        fit = layer["fits"].get(mode)
        if fit and fit["fittable"]:
            k, p = bounded_power_law_curve(fit, max(hist["k"]), n_positive)
            ax.loglog(k, p, "-", lw=2, color="C3", label=f"alpha={fit['alpha']:.2f}")
        elif fit:
            ax.text(0.05, 0.05, "not fitted", transform=ax.transAxes, fontsize=8)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
        dead = f", {layer['dead']} dead" if layer.get("dead") else ""
        ax.set_title(f"({chr(97 + index)}) {layer['node_layer']}{dead}", fontsize=9)
        ax.set_xlabel("degree k")
        if index == 0:
            ax.set_ylabel("P(k)")
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path, title)


def alpha_by_layer(rows: list[dict], path: str | Path, *, mode: str = "window") -> Path:
    """Fitted exponent per node layer (mean +- std over seeds), one panel per model, data set
    and view, one line per method; layers without a fit are left out of their line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["mode"] == mode]
    panels = sorted({(r["model"], r["dataset"], r["view"]) for r in rows})
    fig, axes = plt.subplots(
        1, max(len(panels), 1), figsize=(3.6 * max(len(panels), 1), 3.2), squeeze=False
    )
    for ax, (model, dataset, view) in zip(axes[0], panels, strict=False):
        mine = [r for r in rows if (r["model"], r["dataset"], r["view"]) == (model, dataset, view)]
        layers = list(dict.fromkeys(r["node_layer"] for r in mine))
        for j, method in enumerate(sorted({r["method"] for r in mine})):
            xs, means, sds = [], [], []
            for i, layer in enumerate(layers):
                alphas = [r["alpha"] for r in mine if r["method"] == method
                          and r["node_layer"] == layer and r["fittable"]]  # fmt: skip
                if alphas:
                    xs.append(i + 0.06 * j)
                    means.append(np.mean(alphas))
                    sds.append(np.std(alphas))
            style = "--" if method.startswith("random") else "-"
            ax.errorbar(xs, means, yerr=sds, fmt="o" + style, ms=4, capsize=3, label=method)
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{model}, {dataset}, {view}", fontsize=9)
        ax.set_ylabel(f"alpha ({mode})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def network_overview(layers: list[dict], node_layers: list[dict], path: str | Path, *,
                     title: str = "", mode: str = "window") -> Path:  # fmt: skip
    """One checkpoint at a glance: the kept share of each weight layer, and the fitted exponent
    of each node layer (``analyze --figures``). ``layers`` / ``node_layers`` are
    ``topoprune analyze --json``'s lists (node layers with their ``fit``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 0.5 * len(layers) + 4), 3.4))
    names = [r["layer"].removesuffix(".weight") for r in layers]
    left.bar(range(len(layers)), [100 * r["density"] for r in layers], color="C0")
    left.set_xticks(range(len(layers)), names, rotation=45, ha="right", fontsize=7)
    left.set(ylabel="kept %", title="kept per weight layer")
    fitted = [(i, r) for i, r in enumerate(node_layers) if (r.get("fit") or {}).get("fittable")]
    right.errorbar([i for i, _ in fitted], [r["fit"]["alpha"] for _, r in fitted],
                   yerr=[r["fit"].get("alpha_se") or 0 for _, r in fitted], fmt="o", capsize=3,
                   color="C3")  # fmt: skip
    right.set_xticks(range(len(node_layers)), [r["node_layer"] for r in node_layers],
                     rotation=45, ha="right", fontsize=7)  # fmt: skip
    right.set(ylabel=f"alpha ({mode})", title="fitted exponent per node layer")
    return _save(fig, path, title)
