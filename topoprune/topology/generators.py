"""Bipartite masks made by a random process: the null models a pruned layer is compared with.

A mask is a boolean ``(n_out, n_in)`` array (a linear layer's ``W`` shape; a convolution reads
as its im2col matrix). Each generator places an exact number of connections, never two on one
pair, and draws only from the ``numpy.random.Generator`` it is given.

- :func:`erdos_renyi_mask`: every set of ``n_edges`` pairs equally likely (a bipartite
  G(n, m)); a node's degree is hypergeometric, close to binomial when the mask is large.
- :func:`preferential_attachment_mask`: connections added one at a time, each to an unconnected
  pair ``(j, i)`` with probability proportional to ``(d_j + 1)(d_i + 1)``.
- :func:`rewired_mask`: the bipartite configuration model of an existing mask: the same in- and
  out-degree of every node, the pairs shuffled by double-edge swaps.
"""

from __future__ import annotations

import numpy as np

from topoprune.topology.layers import TopologyError


def _check(n_out: int, n_in: int, n_edges: int) -> None:
    if n_out < 1 or n_in < 1:
        raise TopologyError(f"a mask needs at least one node per side, got {n_out} x {n_in}")
    if not 0 <= n_edges <= n_out * n_in:
        raise TopologyError(f"{n_edges} connections do not fit in a {n_out} x {n_in} mask")


def erdos_renyi_mask(n_out: int, n_in: int, n_edges: int, rng: np.random.Generator) -> np.ndarray:
    """A mask with ``n_edges`` connections on pairs drawn uniformly without replacement.

    Examples
    --------
    >>> mask = erdos_renyi_mask(3, 4, 5, np.random.default_rng(0))
    >>> mask.shape, int(mask.sum())
    ((3, 4), 5)
    """
    _check(n_out, n_in, n_edges)
    mask = np.zeros(n_out * n_in, dtype=bool)
    mask[rng.choice(n_out * n_in, size=n_edges, replace=False)] = True
    return mask.reshape(n_out, n_in)


DIRECT_DRAW_LIMIT = 2 * 10**8  # pair weights read in the dense phase (about a second per 10^8)


def preferential_attachment_mask(n_out: int, n_in: int, n_edges: int,
                                 rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """A mask grown one connection at a time, each joining an unconnected pair ``(j, i)`` with
    probability proportional to ``(d_j + 1)(d_i + 1)`` (the degrees so far).

    Sampling ``j`` proportional to ``d_j + 1`` and ``i`` proportional to ``d_i + 1``
    independently (an urn holding every node once plus once per connection it has) and
    redrawing pairs already connected gives exactly that law over the unconnected pairs.
    Without the redraws each side would be a Polya urn: its degrees Dirichlet-multinomial, so a
    node's degree is beta-binomial(``n_edges``, 1, n - 1), geometric-like rather than a power
    law. Broad, not scale-free: fit it before calling it one.

    Examples
    --------
    >>> mask = preferential_attachment_mask(3, 4, 5, np.random.default_rng(0))
    >>> mask.shape, int(mask.sum())
    ((3, 4), 5)
    """
    _check(n_out, n_in, n_edges)
    size = n_out * n_in
    # redraws while at most half the pairs are taken (they slow down earlier when the taken pairs
    # hold much of the weight); past half, each connection is drawn from the weights of every
    # unconnected pair, affordable for small layers only
    by_redraws = min(n_edges, size // 2)
    if (n_edges - by_redraws) * size > DIRECT_DRAW_LIMIT:
        raise TopologyError(
            f"preferential attachment: {n_edges} connections in a {n_out} x {n_in} mask is over "
            "half of it, too many to draw pair by pair (use a sparser mask)"
        )
    mask = np.zeros((n_out, n_in), dtype=bool)
    # each urn: every node once, then once more per connection it gains
    outs, ins = list(range(n_out)), list(range(n_in))
    placed = 0
    while placed < by_redraws:
        # uniform numbers in blocks (numpy calls are the cost), each read against the urns as they
        # are when it is used, so every pair is a fresh draw from the current law
        block = min(65536, 2 * (n_edges - placed) + 16)
        for u, v in zip(rng.random(block).tolist(), rng.random(block).tolist()):
            j, i = outs[int(u * len(outs))], ins[int(v * len(ins))]
            if mask[j, i]:
                continue
            mask[j, i] = True
            outs.append(j)
            ins.append(i)
            placed += 1
            if placed == by_redraws:
                break
    out_degree, in_degree = mask.sum(axis=1), mask.sum(axis=0)
    for _ in range(n_edges - placed):
        weights = np.outer(out_degree + 1.0, in_degree + 1.0)
        weights[mask] = 0.0
        flat = weights.ravel()
        j, i = divmod(int(rng.choice(size, p=flat / flat.sum())), n_in)
        mask[j, i] = True
        out_degree[j] += 1
        in_degree[i] += 1
    return mask


def rewired_mask(mask: np.ndarray, rng: np.random.Generator, swaps_per_edge: float = 10.0
                 ) -> np.ndarray:  # fmt: skip
    """``mask`` with its connections shuffled, every node's in- and out-degree kept.

    Double-edge swaps: two connections ``(a, b)`` and ``(c, d)`` become ``(a, d)`` and
    ``(c, b)`` unless either exists already; ``swaps_per_edge`` times the number of connections
    swaps are tried (10 mixes the chain well for sparse masks). A mask with a single realisation
    of its degrees (complete or empty rows and columns) comes back unchanged.

    Examples
    --------
    >>> mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    >>> shuffled = rewired_mask(mask, np.random.default_rng(0))
    >>> shuffled.sum(axis=1).tolist(), shuffled.sum(axis=0).tolist()
    ([2, 1, 1], [2, 1, 1])
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise TopologyError(f"rewiring takes a 2-D (out, in) mask, got shape {mask.shape}")
    if swaps_per_edge < 0:
        raise TopologyError(f"swaps_per_edge must be >= 0, got {swaps_per_edge}")
    out = mask.astype(bool).copy()
    rows, cols = (a.tolist() for a in np.nonzero(out))
    n = len(rows)
    if n < 2:
        return out
    tries = round(swaps_per_edge * n)
    done = 0
    while done < tries:
        block = min(4096, tries - done)
        firsts, seconds = rng.integers(0, n, block), rng.integers(0, n, block)
        for e, f in zip(firsts.tolist(), seconds.tolist()):
            a, b, c, d = rows[e], cols[e], rows[f], cols[f]
            if a == c or b == d or out[a, d] or out[c, b]:
                continue  # a rejected swap keeps the chain's stationary law uniform
            out[a, b] = out[c, d] = False
            out[a, d] = out[c, b] = True
            cols[e], cols[f] = d, b
        done += block
    return out


GENERATORS = ("er", "pa", "rewired")


def generated_mask(kind: str, like: np.ndarray, rng: np.random.Generator, *,
                   n_edges: int | None = None,
                   swaps_per_edge: float = 10.0) -> np.ndarray:  # fmt: skip
    """A mask of ``like``'s shape from the generator ``kind`` (``er``, ``pa`` or ``rewired``):
    ``er`` and ``pa`` place ``n_edges`` connections (default: as many as ``like`` has),
    ``rewired`` shuffles ``like``'s own. Masks of more than two dimensions (convolutions) are
    generated on their ``(out, in x kernel)`` im2col matrix and reshaped back.

    >>> like = np.eye(4, dtype=bool)
    >>> [int(generated_mask(k, like, np.random.default_rng(1)).sum()) for k in GENERATORS]
    [4, 4, 4]
    """
    like = np.asarray(like).astype(bool)
    if like.ndim < 2:
        raise TopologyError(f"a mask has at least 2 dimensions, got shape {like.shape}")
    flat = like.reshape(like.shape[0], -1)
    edges = int(flat.sum()) if n_edges is None else n_edges
    if kind == "er":
        made = erdos_renyi_mask(*flat.shape, edges, rng)
    elif kind == "pa":
        made = preferential_attachment_mask(*flat.shape, edges, rng)
    elif kind == "rewired":
        made = rewired_mask(flat, rng, swaps_per_edge)
    else:
        raise TopologyError(f"generator must be one of {', '.join(GENERATORS)}, got {kind!r}")
    return made.reshape(like.shape)
