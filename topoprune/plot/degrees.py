"""Log-log degree distributions of node layers: histogram and complementary CDF."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topoprune.topology.network import NodeLayer


def degree_histogram(degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P(k))`` over the positive degrees present (dead nodes excluded).

    Examples
    --------
    >>> k, p = degree_histogram(np.array([0, 1, 1, 2]))
    >>> k.tolist(), p.round(3).tolist()
    ([1, 2], [0.667, 0.333])
    """
    positive = degrees[degrees > 0]
    k, counts = np.unique(positive, return_counts=True)
    return k, counts / max(positive.size, 1)


def degree_ccdf(degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P(K >= k))`` at each positive degree present.

    Examples
    --------
    >>> k, p = degree_ccdf(np.array([1, 1, 2, 4]))
    >>> k.tolist(), p.tolist()
    ([1, 2, 4], [1.0, 0.5, 0.25])
    """
    positive = np.sort(degrees[degrees > 0])
    k, first = np.unique(positive, return_index=True)
    return k, 1.0 - first / max(positive.size, 1)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_degree_distributions(
    node_layers: Sequence[NodeLayer],
    folder: str | Path,
    *,
    kind: str = "total",
    title: str = "",
) -> list[Path]:
    """One PNG per node layer: log-log degree histogram and CCDF. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, node_layer in enumerate(node_layers):
        degrees = node_layer.degrees(kind)
        dead = int(np.count_nonzero(degrees == 0))
        fig, (ax_pdf, ax_ccdf) = plt.subplots(1, 2, figsize=(9, 3.6))
        k, p = degree_histogram(degrees)
        ax_pdf.loglog(k, p, "o", ms=3, alpha=0.8)
        ax_pdf.set_xlabel(f"{kind} degree k")
        ax_pdf.set_ylabel("P(k)")
        k, c = degree_ccdf(degrees)
        ax_ccdf.loglog(k, c, ".-", ms=3)
        ax_ccdf.set_xlabel(f"{kind} degree k")
        ax_ccdf.set_ylabel("P(K >= k)")
        for ax in (ax_pdf, ax_ccdf):
            ax.grid(True, which="both", alpha=0.3)
        label = f"{title}: " if title else ""
        fig.suptitle(
            f"{label}{node_layer.name} ({node_layer.size} nodes; {dead} dead, not drawn)",
            fontsize=10,
        )
        fig.tight_layout()
        path = folder / f"{index:02d}_{_safe(node_layer.name)}_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
