"""Sparse Evolutionary Training: Erdos-Renyi densities, the drop-and-grow update, constant
connection counts, the mask history for attachment."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.prune.masks import add_masks
from topoprune.prune.sparse_evolution import SETConfig, erdos_renyi_density, evolve
from topoprune.train.run import prune_model


def test_erdos_renyi_density_of_the_set_mlp():
    # SET's Fashion-MNIST MLP, epsilon 20: 784-1000 keeps 4.55%, 1000-1000 4%
    assert round(erdos_renyi_density(torch.Size([1000, 784]), 20), 6) == round(
        20 * 1784 / 784000, 6
    )
    assert erdos_renyi_density(torch.Size([1000, 1000]), 20) == 0.04
    assert erdos_renyi_density(torch.Size([16, 3, 3, 3]), 1) == (27 + 16) / (27 * 16)


def test_evolve_drops_the_weights_closest_to_zero_of_each_sign_and_grows_as_many():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=g)
    mask = torch.rand(20, 30, generator=g) < 0.3
    w = w * mask
    new, grown = evolve(w, mask, 0.3, torch.Generator().manual_seed(1))
    positive, negative = mask & (w > 0), mask & (w < 0)
    dropped = mask & (~new | grown)  # a dropped position may be drawn again, with a new weight
    assert int(dropped.sum()) == round(0.3 * int(positive.sum())) + round(0.3 * int(negative.sum()))
    # the dropped positives are the smallest positives, the dropped negatives the largest
    survivors = new & ~grown
    assert w[dropped & positive].max() <= w[positive & survivors].min()
    assert w[dropped & negative].min() >= w[negative & survivors].max()
    assert int(new.sum()) == int(mask.sum()) and int(grown.sum()) == int(dropped.sum())


def test_evolve_keeps_a_dense_layers_size():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    full = torch.ones(10, 10, dtype=torch.bool)
    new, grown = evolve(w, full, 0.3, torch.Generator().manual_seed(1))
    assert bool(new.all()) and int(grown.sum()) > 0  # every dropped connection regrown anew


def loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 12, generator=g), torch.randint(0, 3, (80,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=20)


def test_a_run_keeps_its_connection_counts_and_every_epochs_masks():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 3)))
    config = SETConfig(epsilon=3.0, zeta=0.3, epochs=3, lr=0.05)
    model, summary = prune_model(model, "set", config, train=loader())
    density = erdos_renyi_density(torch.Size([40, 12]), 3.0)
    assert int(model[0].weight_mask.sum()) == round(480 * density)
    grown = summary["report"]["grown"]
    assert len(grown) == 2 and all(g["0"] > 0 for g in grown)  # no update after the last epoch
    # 40 -> 3 at epsilon 3 has density 1: left dense, never rewired
    assert bool(model[2].weight_mask.bool().all()) and all("2" not in g for g in grown)


def test_a_regrown_connection_starts_with_zero_momentum():
    from topoprune.prune.sparse_evolution import _reset_state

    weight = nn.Parameter(torch.ones(2, 3))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    weight.grad = torch.ones(2, 3)
    optimizer.step()
    positions = torch.tensor([[True, False, False], [False, False, True]])
    _reset_state(optimizer, weight, positions)
    buffer = optimizer.state[weight]["momentum_buffer"]
    assert (buffer[positions] == 0).all() and (buffer[~positions] == 1).all()


def test_snapshots_are_kept_for_attachment(tmp_path):
    from topoprune.io.torch_file import load_torch_object

    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 3)))
    config = SETConfig(epsilon=3.0, zeta=0.3, epochs=3, lr=0.05)
    prune_model(model, "set", config, train=loader(), out=tmp_path)
    history = load_torch_object(tmp_path / "checkpoint.pt")["extra"]["mask_history"]
    assert {"set/epoch0", "set/epoch1", "set/epoch2"} <= set(history)
    a, b = history["set/epoch0"]["0"], history["set/epoch1"]["0"]
    assert int(a.sum()) == int(b.sum()) and not torch.equal(a, b)
