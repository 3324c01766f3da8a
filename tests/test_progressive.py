"""Progressive networks: the lateral samplers (exact fractions, source frequencies proportional
to degree), the forward pass, and frozen columns that training on task B leaves unchanged."""

import numpy as np
import pytest
import torch

from topoprune.errors import TopopruneError
from topoprune.models.progressive import (
    LATERAL_SAMPLERS,
    ProgressiveMLP,
    lateral_masks,
    mlp_column,
    sample_pairs,
    source_degrees,
)
from topoprune.prune.masks import add_masks, enforce_masks
from topoprune.topology.module import network_from_module


@pytest.mark.parametrize("sampler", ["random", "preferential", "anti-preferential"])
@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_exact_fraction_of_lateral_connections(sampler, fraction):
    degree = np.arange(1, 301)
    mask = LATERAL_SAMPLERS[sampler](degree, 100, fraction, np.random.default_rng(0))
    assert mask.shape == (100, 300) and mask.sum() == round(fraction * 30_000)


def test_dense_none_and_dead_sources():
    degree = np.array([0, 3, 5, 0, 2])
    assert LATERAL_SAMPLERS["dense"](degree, 4, 0.3, None).all()
    assert not LATERAL_SAMPLERS["none"](degree, 4, 0.3, None).any()
    mask = LATERAL_SAMPLERS["preferential"](degree, 50, 0.5, np.random.default_rng(1))
    assert not mask[:, [0, 3]].any()  # degree-0 sources are never drawn
    with pytest.raises(TopopruneError, match="only 150 pairs have a source"):
        LATERAL_SAMPLERS["preferential"](degree, 50, 0.7, np.random.default_rng(1))
    with pytest.raises(TopopruneError, match=r"must be in \[0, 1\]"):
        sample_pairs(np.ones(3), 2, 1.5, np.random.default_rng(0))


def test_preferential_source_frequencies_proportional_to_degree():
    degree = np.arange(1, 41, dtype=float)
    mask = LATERAL_SAMPLERS["preferential"](degree, 50_000, 0.005, np.random.default_rng(2))
    counts = mask.sum(axis=0)
    expected = degree / degree.sum() * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 80  # 39 degrees of freedom: p ~ 1e-4 at 80
    assert np.corrcoef(counts, degree)[0, 1] > 0.99
    anti = LATERAL_SAMPLERS["anti-preferential"](degree, 50_000, 0.005, np.random.default_rng(2))
    assert np.corrcoef(anti.sum(axis=0), 1 / degree)[0, 1] > 0.99
    uniform = LATERAL_SAMPLERS["random"](degree, 50_000, 0.005, np.random.default_rng(2))
    assert abs(np.corrcoef(uniform.sum(axis=0), degree)[0, 1]) < 0.5


def pruned_column():
    torch.manual_seed(0)
    column = add_masks(mlp_column([784, 30, 20, 10]))
    with torch.no_grad():
        for module in column:
            if hasattr(module, "weight_mask"):
                module.weight_mask.copy_((torch.rand_like(module.weight_mask) < 0.2).float())
    enforce_masks(column)
    return column


def test_progressive_forward_and_frozen_column_during_training():
    first = pruned_column()
    degrees = source_degrees(network_from_module(first))
    assert [d.size for d in degrees] == [784, 30, 20]
    widths = [784, 16, 12, 10]
    masks = lateral_masks(degrees, widths, "preferential", 0.05, seed=0)
    assert {k: m.shape for k, m in masks.items()} == {(1, 1, 0): (12, 30), (1, 2, 0): (10, 20)}
    model = ProgressiveMLP([first, mlp_column(widths)], masks)
    frozen = {k: v.clone() for k, v in model.columns[0].state_dict().items()}
    lateral = model.lateral_network()
    assert lateral.nnz == sum(int(m.sum()) for m in masks.values())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        enforce_masks(model)
    assert not model.columns[0].training
    assert all(torch.equal(frozen[k], v) for k, v in model.columns[0].state_dict().items())
    for name, adapter in model.adapters.items():
        assert torch.equal(adapter.weight_mask.bool(), torch.as_tensor(masks[(1, int(name[4]), 0)]))
        assert bool((adapter.weight_orig[adapter.weight_mask == 0] == 0).all())
    # no laterals: column 2 computes alone
    separate = ProgressiveMLP([first, model.columns[1]], {})
    assert torch.allclose(separate(x), model.columns[1](x))
    with pytest.raises(TopopruneError, match="mask of shape"):
        ProgressiveMLP([first, mlp_column(widths)], {(1, 1, 0): np.ones((3, 3), bool)})
