"""Mask generators (topoprune.topology.generators): exact degrees under rewiring, the laws of
Erdos-Renyi and preferential-attachment masks on cases with closed-form answers, and the
`generated` method training them."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from topoprune.topology.generators import (
    erdos_renyi_mask,
    generated_mask,
    preferential_attachment_mask,
    rewired_mask,
)
from topoprune.topology.layers import TopologyError


def test_rewiring_keeps_every_degree_and_moves_connections():
    rng = np.random.default_rng(0)
    mask = preferential_attachment_mask(60, 80, 400, rng)
    shuffled = rewired_mask(mask, np.random.default_rng(1))
    assert shuffled.dtype == bool and shuffled.sum() == mask.sum()
    np.testing.assert_array_equal(shuffled.sum(axis=1), mask.sum(axis=1))
    np.testing.assert_array_equal(shuffled.sum(axis=0), mask.sum(axis=0))
    np.testing.assert_array_equal(rewired_mask(mask, np.random.default_rng(1)), shuffled)
    # well mixed: an Erdos-Renyi mask keeps about as many pairs as a fresh one shares with it
    uniform = erdos_renyi_mask(60, 80, 400, rng)
    kept = (rewired_mask(uniform, np.random.default_rng(2)) & uniform).sum()
    assert kept < 2 * 400 * 400 / (60 * 80)


def test_a_degree_sequence_with_one_realisation_comes_back_unchanged():
    mask = np.zeros((4, 5), dtype=bool)
    mask[:2] = True  # two full rows: the only mask with these degrees
    np.testing.assert_array_equal(rewired_mask(mask, np.random.default_rng(0)), mask)


def test_rewiring_is_uniform_over_the_masks_with_the_same_degrees():
    # rows (2, 1, 1), columns (2, 1, 1): brute force finds every such 3 x 3 mask
    start = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    masks = (np.array(bits, dtype=bool).reshape(3, 3)
             for bits in itertools.product([0, 1], repeat=9))  # fmt: skip
    degrees = [2, 1, 1]
    realisations = [m for m in masks if m.sum(1).tolist() == m.sum(0).tolist() == degrees]
    assert len(realisations) == 5
    draws = Counter(rewired_mask(start, np.random.default_rng(seed)).tobytes()
                    for seed in range(2000))  # fmt: skip
    assert set(draws) == {m.tobytes() for m in realisations}
    counts = [draws[m.tobytes()] for m in realisations]
    assert stats.chisquare(counts).pvalue > 0.001


def test_erdos_renyi_degrees_are_binomial():
    n_out, n_in, p = 400, 500, 0.05
    mask = erdos_renyi_mask(n_out, n_in, round(p * n_out * n_in), np.random.default_rng(0))
    assert mask.sum() == round(p * n_out * n_in)
    degrees = mask.sum(axis=1)  # each out-node's in-degree: hypergeometric ~ Binomial(500, p)
    binomial = stats.binom(n_in, p)
    assert degrees.mean() == pytest.approx(binomial.mean(), rel=1e-9)
    assert degrees.var() == pytest.approx(binomial.var(), rel=0.2)
    edges = [0, 17, 21, 25, 29, 34, n_in + 1]  # bins of about equal binomial mass
    expected = np.diff(binomial.cdf(np.array(edges) - 1)) * n_out
    observed = np.histogram(degrees, bins=edges)[0]
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 0.001


def test_preferential_attachment_first_steps_have_the_closed_form_law():
    # 2 x 2, two connections: the first is uniform over the 4 pairs; after (j, i) the pairs
    # sharing a node with it weigh 2 and the opposite pair 1, so each comes with 2/5, 2/5, 1/5
    draws = Counter()
    for seed in range(4000):
        mask = preferential_attachment_mask(2, 2, 2, np.random.default_rng(seed))
        draws["diagonal" if mask[0, 0] == mask[1, 1] and mask[0, 0] else
              "anti-diagonal" if mask[0, 1] and mask[1, 0] else "shared node"] += 1  # fmt: skip
    # the two-edge masks: a diagonal (opposite pairs, prob 1/5) or one sharing a node (4/5)
    assert draws["diagonal"] + draws["anti-diagonal"] == pytest.approx(0.2 * 4000, abs=4 * 25.3)
    assert draws["shared node"] == pytest.approx(0.8 * 4000, abs=4 * 25.3)


def _attachment_law(n_out: int, n_in: int, n_edges: int) -> dict[bytes, float]:
    """Brute force: the probability of each final mask, every connection joining an unconnected
    pair with probability proportional to (d_out + 1)(d_in + 1)."""
    law: dict[bytes, float] = {}

    def grow(mask: np.ndarray, p: float) -> None:
        if mask.sum() == n_edges:
            law[mask.tobytes()] = law.get(mask.tobytes(), 0.0) + p
            return
        weights = np.outer(mask.sum(1) + 1.0, mask.sum(0) + 1.0) * ~mask
        for j, i in zip(*np.nonzero(weights)):
            grown = mask.copy()
            grown[j, i] = True
            grow(grown, p * weights[j, i] / weights.sum())

    grow(np.zeros((n_out, n_in), dtype=bool), 1.0)
    return law


def test_preferential_attachment_past_half_keeps_the_law():
    # 2 x 3 with 4 connections: 3 by redraws, the last from the remaining pairs' weights
    law = _attachment_law(2, 3, 4)
    counts = Counter(
        preferential_attachment_mask(2, 3, 4, np.random.default_rng(seed)).tobytes()
        for seed in range(3000)
    )
    observed = np.array([counts[k] for k in law])
    assert sum(counts.values()) == observed.sum()  # no mask outside the law's support
    assert stats.chisquare(observed, 3000 * np.array(list(law.values()))).pvalue > 0.001


def test_preferential_attachment_degrees_are_broader_than_erdos_renyi():
    shape, edges = (300, 784), 11_760  # LeNet-300-100's first layer at 95% sparsity
    pa = preferential_attachment_mask(*shape, edges, np.random.default_rng(0)).sum(axis=0)
    er = erdos_renyi_mask(*shape, edges, np.random.default_rng(0)).sum(axis=0)
    assert pa.mean() == er.mean()
    assert pa.var() > 5 * er.var() and pa.max() > 1.5 * er.max()
    # without the no-duplicate rule one side would be a Polya urn, its degrees
    # beta-binomial(edges, 1, n - 1); refusing taken pairs only spreads connections out
    assert pa.var() < stats.betabinom(edges, 1, shape[1] - 1).var()


@pytest.mark.parametrize("kind", ["er", "pa", "rewired"])
def test_generated_mask_shapes_and_counts(kind):
    like = erdos_renyi_mask(6, 3 * 3 * 4, 30, np.random.default_rng(0)).reshape(6, 4, 3, 3)
    made = generated_mask(kind, like, np.random.default_rng(1))
    assert made.shape == like.shape and made.sum() == 30
    if kind == "rewired":
        np.testing.assert_array_equal(made.reshape(6, -1).sum(1), like.reshape(6, -1).sum(1))
        np.testing.assert_array_equal(made.reshape(6, -1).sum(0), like.reshape(6, -1).sum(0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: erdos_renyi_mask(2, 2, 5, np.random.default_rng(0)), "do not fit"),
        (lambda: erdos_renyi_mask(0, 2, 0, np.random.default_rng(0)), "at least one node"),
        (
            lambda: preferential_attachment_mask(300, 784, 200_000, np.random.default_rng(0)),
            "over half",
        ),
        (lambda: rewired_mask(np.ones(3, dtype=bool), np.random.default_rng(0)), "2-D"),
        (
            lambda: generated_mask("ba", np.ones((2, 2)), np.random.default_rng(0)),
            "one of er, pa, rewired",
        ),
    ],
)
def test_bad_requests_are_clear_errors(call, message):
    with pytest.raises(TopologyError, match=message):
        call()


def test_generated_method_trains_masks_of_each_kind(tmp_path):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from topoprune.errors import TopopruneError
    from topoprune.prune.methods import METHODS
    from topoprune.train.run import prune_model

    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    data = DataLoader(TensorDataset(x, y), batch_size=16)

    def net():
        return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 3))

    config = METHODS["generated"].Config
    first, _ = prune_model(net(), "generated", config(generator="pa", kept=(0.2,), epochs=1),
                           train=data, out=tmp_path / "pa", seed=3)  # fmt: skip
    source = first[0].weight_mask.bool()
    assert int(source.sum()) == 120 and int(first[2].weight_mask.sum()) == 18
    rewired, summary = prune_model(
        net(), "generated",
        config(generator="rewired", like=str(tmp_path / "pa" / "checkpoint.pt"), epochs=1),
        train=data, seed=4,
    )  # fmt: skip
    mask = rewired[0].weight_mask.bool()
    assert torch.equal(mask.sum(0), source.sum(0)) and torch.equal(mask.sum(1), source.sum(1))
    assert not torch.equal(mask, source)
    assert summary["kept_percent"] == pytest.approx({"0": 20.0, "2": 20.0})
    assert (rewired[0].weight[~mask] == 0).all()  # pruned weights stay zero through training
    with pytest.raises(TopopruneError, match="rewired needs like"):
        prune_model(net(), "generated", config(generator="rewired"), train=data)
