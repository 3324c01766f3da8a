"""Sparse regression: the solvers behind channel selection (He et al. 2017) and the lecture's
"sparse regression" slides. Plain numpy; no intercept (centre the data first if you need one).

Objectives, with ``n`` rows (scikit-learn's scaling, so results compare directly):

- least squares: ``min ||y - X w||^2`` (the minimum-norm solution when X is rank deficient);
- ridge: ``min ||y - X w||^2 + alpha ||w||^2``;
- lasso: ``min 1/(2n) ||y - X w||^2 + alpha ||w||_1``, by cyclic coordinate descent with
  soft-thresholding, warm-started along a path of alphas;
- group lasso: ``min 1/(2n) ||y - X w||^2 + alpha sum_g sqrt(p_g) ||w_g||_2``, by block
  coordinate descent (a proximal gradient step per group until the groups stop moving);
- orthogonal matching pursuit, forward selection and backward elimination: greedy supports of
  a given size, each refit by least squares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from topoprune.errors import TopopruneError


def _check(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise TopopruneError(f"expected X (n, p) and y (n,), got {X.shape} and {y.shape}")
    if X.shape[0] == 0:
        raise TopopruneError("no rows to fit")
    return X, y


def least_squares(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin ||y - X w||^2`` (minimum norm).

    >>> least_squares(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([3.0, 4.0])).tolist()
    [3.0, 2.0]
    """
    X, y = _check(X, y)
    return np.linalg.lstsq(X, y, rcond=None)[0]


def ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """``argmin ||y - X w||^2 + alpha ||w||^2``: ``(X^T X + alpha I) w = X^T y``.

    >>> ridge(np.eye(2), np.array([2.0, 4.0]), alpha=1.0).tolist()
    [1.0, 2.0]
    """
    X, y = _check(X, y)
    if alpha < 0:
        raise TopopruneError(f"ridge alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return least_squares(X, y)  # X^T X may be singular (p > n): the minimum-norm solution
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)


def soft_threshold(z: np.ndarray | float, t: float) -> np.ndarray:
    """``sign(z) max(|z| - t, 0)``: the proximal operator of ``t |.|``.

    >>> soft_threshold(np.array([-3.0, 0.5, 2.0]), 1.0).tolist()
    [-2.0, 0.0, 1.0]
    """
    z = np.asarray(z, dtype=np.float64)
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def lasso_one_variable(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """The single-variable lasso in closed form: ``S(x^T y / n, alpha) / (x^T x / n)``.

    >>> lasso_one_variable(np.array([1.0, 1.0]), np.array([3.0, 1.0]), alpha=0.5)
    1.5
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.size
    return float(soft_threshold(x @ y / n, alpha) / (x @ x / n))


@dataclass(frozen=True)
class LassoResult:
    coef: np.ndarray
    n_iter: int  # full passes over the coordinates
    converged: bool


def lasso(
    X: np.ndarray,
    y: np.ndarray,
    alpha: float,
    *,
    coef_init: np.ndarray | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-12,
) -> LassoResult:
    """Cyclic coordinate descent for ``1/(2n) ||y - X w||^2 + alpha ||w||_1``.

    Each coordinate moves to its one-variable optimum given the others,
    ``w_j = S(x_j^T r_j / n, alpha) / (x_j^T x_j / n)`` with ``r_j`` the residual without ``j``;
    passes stop when no coordinate moved by more than ``tol`` times the largest coefficient.

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> lasso(X, np.array([1.0, 0.0, 1.0]), alpha=0.1).coef.round(4).tolist()
    [0.85, 0.0]
    """
    X, y = _check(X, y)
    if alpha < 0:
        raise TopopruneError(f"lasso alpha must be >= 0, got {alpha}")
    n, p = X.shape
    w = np.zeros(p) if coef_init is None else np.array(coef_init, dtype=np.float64)
    norms = (X * X).sum(axis=0) / n
    residual = y - X @ w
    for sweep in range(1, max_iter + 1):
        largest_step = 0.0
        for j in range(p):
            if norms[j] == 0.0:
                continue  # an all-zero column stays at zero
            old = w[j]
            rho = X[:, j] @ residual / n + norms[j] * old
            new = float(soft_threshold(rho, alpha)) / norms[j]
            if new != old:
                residual += X[:, j] * (old - new)
                w[j] = new
                largest_step = max(largest_step, abs(new - old))
        if largest_step <= tol * max(np.abs(w).max(), 1e-300):
            return LassoResult(w, sweep, True)
    return LassoResult(w, max_iter, False)


def lasso_path(X: np.ndarray, y: np.ndarray, alphas: Sequence[float], **options) -> np.ndarray:
    """Lasso solutions for each alpha (``(len(alphas), p)``), each warm-started from the
    previous one: give alphas from large to small, as the sparsest solutions are the cheapest."""
    X, y = _check(X, y)
    coefs, w = [], None
    for alpha in alphas:
        w = lasso(X, y, alpha, coef_init=w, **options).coef
        coefs.append(w.copy())
    return np.array(coefs)


def group_lasso(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[int],
    alpha: float,
    *,
    max_iter: int = 10_000,
    tol: float = 1e-12,
) -> LassoResult:
    """Block coordinate descent for ``1/(2n) ||y - X w||^2 + alpha sum_g sqrt(p_g) ||w_g||``.

    ``groups[j]`` is column j's group label. Each block takes proximal gradient steps of size
    ``1 / L_g`` (``L_g`` the largest eigenvalue of ``X_g^T X_g / n``) with group
    soft-thresholding ``w_g <- max(0, 1 - t / ||v||) v`` until it stops moving, then the next
    block; a group whose gradient norm stays below its threshold is exactly zero.

    Examples
    --------
    Singleton groups are the lasso:

    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> group_lasso(X, np.array([1.0, 0.0, 1.0]), [0, 1], alpha=0.1).coef.round(4).tolist()
    [0.85, 0.0]
    """
    X, y = _check(X, y)
    labels = np.asarray(groups)
    if labels.shape != (X.shape[1],):
        raise TopopruneError(
            f"groups needs one label per column ({X.shape[1]}), got {labels.shape}"
        )
    n = X.shape[0]
    blocks = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]
    steps = [1.0 / max(np.linalg.eigvalsh(X[:, b].T @ X[:, b] / n).max(), 1e-300) for b in blocks]
    w = np.zeros(X.shape[1])
    residual = y.copy()
    for sweep in range(1, max_iter + 1):
        largest_step = 0.0
        for block, step in zip(blocks, steps, strict=True):
            threshold = alpha * np.sqrt(block.size) * step
            for _ in range(1000):  # the block's own proximal iterations
                old = w[block].copy()
                v = old + step * (X[:, block].T @ residual) / n
                norm = np.linalg.norm(v)
                new = np.zeros_like(v) if norm <= threshold else (1 - threshold / norm) * v
                moved = np.abs(new - old).max()
                if moved == 0.0:
                    break
                residual += X[:, block] @ (old - new)
                w[block] = new
                largest_step = max(largest_step, moved)
                if moved <= tol * max(np.abs(w).max(), 1e-300):
                    break
        if largest_step <= tol * max(np.abs(w).max(), 1e-300):
            return LassoResult(w, sweep, True)
    return LassoResult(w, max_iter, False)


def orthogonal_matching_pursuit(X: np.ndarray, y: np.ndarray, n_nonzero: int) -> np.ndarray:
    """Greedy support of ``n_nonzero`` columns: each step adds the column most correlated with
    the residual (columns normalised), then refits the support by least squares.

    >>> orthogonal_matching_pursuit(np.eye(3), np.array([0.0, 5.0, 1.0]), 1).tolist()
    [0.0, 5.0, 0.0]
    """
    X, y = _check(X, y)
    _check_size(n_nonzero, X.shape[1])
    norms = np.linalg.norm(X, axis=0)
    norms[norms == 0] = np.inf  # a zero column is never chosen
    support: list[int] = []
    w = np.zeros(X.shape[1])
    residual = y.copy()
    for _ in range(n_nonzero):
        scores = np.abs(X.T @ residual) / norms
        scores[support] = -1.0
        support.append(int(np.argmax(scores)))
        w = np.zeros(X.shape[1])
        w[support] = least_squares(X[:, support], y)
        residual = y - X @ w
    return w


def _check_size(k: int, p: int) -> None:
    if not 1 <= k <= p:
        raise TopopruneError(f"the support size must be in [1, {p}], got {k}")


def _rss(X: np.ndarray, y: np.ndarray, columns: list[int]) -> float:
    if not columns:
        return float(y @ y)
    fitted = X[:, columns] @ least_squares(X[:, columns], y)
    return float(((y - fitted) ** 2).sum())


def forward_selection(X: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """Greedy forward selection: ``k`` columns, each the one whose addition leaves the least
    residual sum of squares (least-squares refits). Ties go to the lower column index."""
    X, y = _check(X, y)
    _check_size(k, X.shape[1])
    chosen: list[int] = []
    for _ in range(k):
        rest = [j for j in range(X.shape[1]) if j not in chosen]
        chosen.append(min(rest, key=lambda j: (_rss(X, y, [*chosen, j]), j)))
    return sorted(chosen)


def backward_elimination(X: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """Greedy backward elimination: from all columns, drop the one whose removal leaves the least
    residual sum of squares, until ``k`` remain. Ties go to the lower column index."""
    X, y = _check(X, y)
    _check_size(k, X.shape[1])
    kept = list(range(X.shape[1]))
    while len(kept) > k:
        drop = min(kept, key=lambda j: (_rss(X, y, [i for i in kept if i != j]), j))
        kept.remove(drop)
    return kept
