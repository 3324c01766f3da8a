"""Reading degree data from files, and rendering fits for the terminal."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from topoprune.stats.errors import FitError
from topoprune.stats.fit import PowerLawFit


def read_values(source: str) -> np.ndarray:
    """Numbers from a file (or ``-`` for stdin): one per line, or a JSON array."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except FileNotFoundError:
        raise FitError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FitError(f"{source}: cannot be read ({exc})") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise FitError(f"{source}: invalid JSON array ({exc})") from None
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise FitError(f"{source}: the JSON array must hold numbers only")
        return np.asarray(values, dtype=float)
    numbers = []
    for line_no, line in enumerate(stripped.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            numbers.append(float(line))
        except ValueError:
            raise FitError(f"{source}:{line_no}: not a number: {line[:40]!r}") from None
    return np.asarray(numbers, dtype=float)


def _g(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def render_fit(fit: PowerLawFit) -> str:
    """A few lines: numbers, comparisons, verdict."""
    lines = []
    kind = "discrete" if fit.discrete else "continuous"
    lines.append(
        f"{fit.mode} {kind} fit of {fit.n} positive values"
        + (f" ({fit.n_zero} zeros set aside)" if fit.n_zero else "")
    )
    if fit.fittable:
        p = (
            "-"
            if fit.p_value is None
            else f"{fit.p_value:.3f} ({fit.n_boot} replicates, seed {fit.seed})"
        )
        lines.append(
            f"  alpha = {fit.alpha:.6g} +- {fit.alpha_se:.2g}   range [{_g(fit.xmin)}, "
            f"{_g(fit.xmax)}]   n in range {fit.n_tail} (below {fit.n_below}, above "
            f"{fit.n_above})"
        )
        lines.append(
            f"  KS = {fit.ks:.4g} ({fit.ks_convention})   log-likelihood = "
            f"{fit.loglik:.6g}   bootstrap p = {p}"
        )
        for row in fit.comparisons:
            sign = "power law" if row["loglik_ratio"] > 0 else row["alternative"]
            lines.append(
                f"  vs {row['alternative']:<22} {row['test']:<5} LR = "
                f"{row['loglik_ratio']:+.4g}  p = {row['p']:.3g}  (sign favours {sign})"
            )
    lines.append(f"verdict: {fit.verdict}")
    return "\n".join(lines)
