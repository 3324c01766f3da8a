"""RigL: the cosine drop schedule, drop by magnitude and grow by dense gradient, constant
counts, grown weights at zero, the updates' mask history."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.io.torch_file import load_torch_object
from topoprune.prune.masks import add_masks
from topoprune.prune.rigl import RigLConfig, drop_and_grow, drop_fraction
from topoprune.train.run import prune_model


def test_drop_fraction_decays_by_cosine_to_zero_at_the_stop():
    assert drop_fraction(0.3, 0, 10) == 0.3
    assert abs(drop_fraction(0.3, 5, 10) - 0.15) < 1e-12
    assert drop_fraction(0.3, 10, 10) == drop_fraction(0.3, 12, 10) == 0.0


def test_drop_and_grow_by_magnitude_and_gradient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 9, generator=g)
    mask = torch.rand(8, 9, generator=g) < 0.4
    w = w * mask
    grad = torch.randn(8, 9, generator=g)
    new, grown = drop_and_grow(w, grad, mask, 0.25)
    k = int(0.25 * int(mask.sum()))
    dropped = mask & ~new
    assert int(new.sum()) == int(mask.sum())  # as many grown as dropped
    # dropped: among the k smallest |w| of the alive (some of those may be regrown at once)
    assert int(dropped.sum()) <= k
    assert w.abs()[dropped].max() <= w.abs()[mask].sort().values[k - 1]
    # grown: no position left out has a larger |g| than a grown one
    assert grad.abs()[grown].min() >= grad.abs()[~new].max()
    assert not (grown & mask).any()


def test_a_connection_dropped_and_grown_back_keeps_its_value():
    w = torch.tensor([0.01, 0.5, 0.0])
    grad = torch.tensor([5.0, 0.0, 0.1])  # the dropped weight has the largest gradient
    mask = torch.tensor([True, True, False])
    new, grown = drop_and_grow(w, grad, mask, 0.5)
    assert new.tolist() == [True, True, False] and not grown.any()


def loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 10, generator=g), torch.randint(0, 3, (120,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=10)


def test_a_run_keeps_its_counts_and_records_every_update(tmp_path):
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(10, 30), nn.ReLU(), nn.Linear(30, 3)))
    config = RigLConfig(sparsity=0.8, epochs=2, delta_t=4, lr=0.05)
    model, summary = prune_model(model, "rigl", config, train=loader(), out=tmp_path)
    history = load_torch_object(tmp_path / "checkpoint.pt")["extra"]["mask_history"]
    updates = sorted(int(k.removeprefix("rigl/step")) for k in history if k.startswith("rigl/"))
    # 24 steps, stop at 18: updates at steps 4, 8, 12, 16
    assert updates == [0, 4, 8, 12, 16] and summary["report"]["updates"] == 4
    counts = {k: int(history[k]["0"].sum()) for k in history if k.startswith("rigl/")}
    assert len(set(counts.values())) == 1
    assert any(not torch.equal(history["rigl/step0"]["0"], history[f"rigl/step{s}"]["0"])
               for s in updates[1:])  # fmt: skip
    total = sum(int(m.weight_mask.sum()) for m in (model[0], model[2]))
    assert abs(total - 0.2 * (300 + 90)) <= 2
