"""Epsilon-ResNet (Yu et al. 2018) and its residual CNN: the sparsifier S is zero exactly for the
examples whose every response is below epsilon; epsilon 0 is a plain ResNet; dropping blocks
computes what the masked model computes; a short run drops a weak block and the depth groups of
SSL (Wen et al. 2016) remove one."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from topoprune.errors import TopopruneError
from topoprune.models import MODELS, build_model
from topoprune.models.residual import ResidualCNN, drop_blocks, sparsify
from topoprune.prune.masks import add_masks, apply_masks
from topoprune.prune.methods import METHODS
from topoprune.prune.structure import channel_groups
from topoprune.train.run import prune_model


def batches(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(16, 1, 28, 28, generator=generator),
             torch.randint(0, 10, (16,), generator=generator)) for _ in range(n)]  # fmt: skip


def scrambled(model: ResidualCNN, seed: int = 0) -> ResidualCNN:
    """Nonzero BatchNorm statistics and affine terms everywhere (so that a dropped block's
    BatchNorm would show if it leaked), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
    return model.eval()


def test_sparsify_is_zero_exactly_for_the_examples_below_epsilon():
    response = torch.tensor([
        [[[0.9, -0.9], [0.0, 0.5]]],    # every |F| < 1: zero
        [[[0.1, 0.2], [1.2, -0.3]]],    # one response above 1: unchanged
        [[[0.1, -1.01], [0.0, 0.0]]],   # one below -1: unchanged
        [[[-0.999, 0.3], [0.2, 0.1]]],  # just inside: zero
    ], requires_grad=True)  # fmt: skip
    out = sparsify(response, 1.0)
    assert torch.equal(out[[0, 3]], torch.zeros(2, 1, 2, 2))
    assert torch.equal(out[[1, 2]], response[[1, 2]].detach())
    out.sum().backward()  # the gradient reaches F where S passes it, nowhere else
    assert torch.equal(response.grad[[0, 3]], torch.zeros(2, 1, 2, 2))
    assert torch.equal(response.grad[[1, 2]], torch.ones(2, 1, 2, 2))
    # per example, on any shape: a vector example above epsilon, one below
    flat = torch.tensor([[0.25, -3.0, 0.5], [2.9, -2.9, 0.0]])
    assert torch.equal(sparsify(flat, 2.95), torch.tensor([[0.25, -3.0, 0.5], [0.0, 0.0, 0.0]]))


def plain_resnet(model: ResidualCNN, x: torch.Tensor) -> torch.Tensor:
    """The plain ResNet computation written out with functional calls (eval mode)."""

    def bn(norm, h):
        return F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                            training=False, eps=norm.eps)  # fmt: skip

    h = F.max_pool2d(F.relu(bn(model.stem_bn, F.conv2d(x, model.stem.weight, padding=1))), 2)
    for block in model.blocks:
        f = F.relu(bn(block.bn1, F.conv2d(h, block.conv1.weight, padding=1)))
        f = bn(block.bn2, F.conv2d(f, block.conv2.weight, padding=1))
        h = F.relu(h + f)
    return F.linear(h.mean(dim=(2, 3)), model.fc.weight, model.fc.bias)


def test_epsilon_zero_is_a_plain_resnet():
    torch.manual_seed(0)
    model = scrambled(ResidualCNN(channels=4, blocks=3))
    with torch.no_grad():  # block 1 responds below 1/L: even S at epsilon 0 would zero it
        model.blocks[1].bn2.weight.mul_(1e-8)
        model.blocks[1].bn2.bias.mul_(1e-8)
        model.blocks[1].bn2.running_mean.zero_()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), plain_resnet(model, x), atol=1e-6, rtol=0)
        assert model.block_activity(x).all()  # epsilon 0: S is the identity, not sparsify(F, 0)
        h = model.pool(torch.relu(model.stem_bn(model.stem(x))))
        h = model.blocks[0](h)
        assert not sparsify(model.blocks[1].branch(h), 0.0).any()
        model.set_epsilon(0.5)
        assert not model.block_activity(x)[:, 1].any()


@pytest.mark.parametrize("training", [False, True])
def test_drop_blocks_computes_the_masked_model_exactly(training):
    torch.manual_seed(1)
    x = torch.rand(6, 1, 28, 28)
    for dropped in itertools.chain.from_iterable(
        itertools.combinations(range(3), k) for k in range(4)
    ):  # every subset of the three blocks
        model = add_masks(scrambled(ResidualCNN(channels=4, blocks=3, epsilon=0.3)))
        apply_masks(model, {f"blocks.{i}.{conv}": torch.zeros_like(model.blocks[i].conv1.weight)
                            for i in dropped for conv in ("conv1", "conv2")})  # fmt: skip
        model.set_dropped(dropped)
        model.train(training)
        small = drop_blocks(model, dropped)
        assert len(small.blocks) == 3 - len(dropped)
        assert small.training == training
        assert not any(hasattr(m, "weight_mask") for m in small.modules())
        with torch.no_grad():
            assert torch.equal(small(x), model(x)), dropped
        before = sum(p.numel() for p in model.parameters())
        per_block = sum(p.numel() for p in model.blocks[0].parameters())
        assert sum(p.numel() for p in small.parameters()) == before - len(dropped) * per_block


def test_drop_blocks_is_exact_when_a_block_outputs_zero_by_itself():
    torch.manual_seed(2)
    model = scrambled(ResidualCNN(channels=4, blocks=3))
    with torch.no_grad():  # block 2's branch ends in a BatchNorm that outputs zero: S(F) = 0
        model.blocks[2].bn2.weight.zero_()
        model.blocks[2].bn2.bias.zero_()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert not model.block_activity(x)[:, 2].any() and model.block_activity(x)[:, :2].all()
        assert torch.equal(drop_blocks(model, [2])(x), model(x))
    with pytest.raises(TopopruneError, match="3 blocks"):
        drop_blocks(model, [3])


def test_epsilon_and_dropped_travel_in_the_state_dict():
    model = ResidualCNN(channels=4, blocks=3, epsilon=1.5)
    model.set_dropped([2])
    fresh = ResidualCNN(channels=4, blocks=3)
    fresh.load_state_dict(model.state_dict())
    assert fresh.epsilon == 1.5 and fresh.dropped == [2]


def test_the_zoo_model_traces_with_its_residual_channels_coupled():
    spec = MODELS["resnet_mnist"]
    model = build_model("resnet_mnist")
    assert isinstance(model, ResidualCNN) and spec.input_shape == (1, 28, 28)
    assert (len(model.blocks), model.channels) == (6, 16)
    groups = channel_groups(model, torch.rand(2, 1, 28, 28))
    joined = next(g for g in groups if "stem" in g.producers)
    assert joined.producers == ["stem"] + [f"blocks.{i}.conv2" for i in range(6)]
    assert not joined.frozen
    assert [n for n, _ in joined.consumers] == [f"blocks.{i}.conv1" for i in range(6)] + ["fc"]


def test_a_short_run_drops_the_weak_block_exactly(tmp_path):
    from topoprune.io import load_network

    torch.manual_seed(3)
    model = ResidualCNN(channels=4, blocks=3)
    with torch.no_grad():  # block 1 responds a thousand times weaker than the others
        model.blocks[1].bn2.weight.mul_(1e-3)
    config = METHODS["epsilon-resnet"].Config(epsilon=0.5, epochs=1, finetune_epochs=1,
                                              check_examples=32, lr=0.01)  # fmt: skip
    model, summary = prune_model(model, "epsilon-resnet", config, train=batches(),
                                 out=tmp_path / "run")  # fmt: skip
    report = summary["report"]
    assert report["blocks"] == 3 and report["blocks_dropped"] == [1]
    assert report["params_compact"] < report["params"]
    assert report["max_abs_difference"] < 1e-5
    assert report["zero_share_at_drop"][1] == 1.0
    assert model.dropped == [1] and model.epsilon == 0.5
    assert not model.blocks[1].conv1.weight_mask.any() and model.blocks[0].conv1.weight_mask.all()
    assert summary["compression"] > 1
    # the checkpoint lists its weight layers: a block's two convolutions chain, additions don't
    network = load_network(tmp_path / "run" / "checkpoint.pt")
    assert network.names[:3] == ["stem.weight", "blocks.0.conv1.weight", "blocks.0.conv2.weight"]
    assert network.chain[:2] == (False, True)


def test_ssl_depth_groups_remove_a_block():
    torch.manual_seed(4)
    model = ResidualCNN(channels=4, blocks=2)
    with torch.no_grad():  # block 0's weights are weak: its group reaches zero first
        model.blocks[0].conv1.weight.mul_(0.01)
        model.blocks[0].conv2.weight.mul_(0.01)
    # without momentum: a convolution before a BatchNorm gets large gradients near zero weights
    # (the normalisation divides by a vanishing spread), which momentum would keep applying
    config = METHODS["ssl"].Config(groups=("depth",), penalty=0.2, lr=0.05, momentum=0.0,
                                   epochs=1, finetune_epochs=1)  # fmt: skip
    model, summary = prune_model(model, "ssl", config, train=batches())
    depth = summary["report"]["depth"]
    assert depth["blocks_dropped"] == [0] and model.dropped == [0]
    assert not model.blocks[0].conv2.weight_mask.any() and model.blocks[1].conv2.weight_mask.all()
    assert depth["params_compact"] < depth["params"]
    assert depth["max_abs_difference"] < 1e-5


@pytest.mark.parametrize("method", ["epsilon-resnet", "ssl"])
def test_residual_methods_refuse_a_model_without_residual_blocks(method):
    config = METHODS[method].Config(epochs=1, finetune_epochs=1)
    if method == "ssl":
        config = METHODS[method].Config(groups=("depth",), epochs=1, finetune_epochs=1)
    with pytest.raises(TopopruneError, match="ResidualCNN"):
        prune_model(build_model("lenet5"), method, config, train=batches(1))
