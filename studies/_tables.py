"""Table helpers shared by the studies: tidy CSV and mean +- std cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np


def rows_to_csv(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """CSV text of dict rows; ``columns`` defaults to the first row's keys ("" for no rows)."""
    if columns is None:
        if not rows:
            return ""
        columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def mean_sd(values: Sequence[float | None], digits: int = 2) -> str:
    """``mean +- std`` of the finite values (one value alone; ``-`` for none)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{np.mean(finite):.{digits}f} +- {np.std(finite):.{digits}f}"


def rows_to_markdown(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of dict rows (the columns default to the first row's keys).

    >>> print(rows_to_markdown([{"method": "l1", "error": 1.5}]), end="")
    | method | error |
    |---|---|
    | l1 | 1.5 |
    """
    if not rows:
        return ""
    columns = list(rows[0]) if columns is None else list(columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def degree_histogram(degrees: np.ndarray) -> dict:
    """Each distinct degree and how many nodes have it, as JSON-ready lists.

    >>> degree_histogram(np.array([2, 0, 2, 5]))
    {'k': [0, 2, 5], 'count': [1, 2, 1]}
    """
    k, counts = np.unique(np.asarray(degrees, np.int64), return_counts=True)
    return {"k": k.tolist(), "count": counts.tolist()}


def columns_of(rows: list[dict]) -> list[str]:
    """Every key of ``rows`` in first-seen order (rows with different fields in one CSV).

    >>> columns_of([{"a": 1}, {"b": 2, "a": 3}])
    ['a', 'b']
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)
