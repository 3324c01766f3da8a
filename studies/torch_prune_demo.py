"""Demo until topoprune's own pruning engine lands: a LeNet-300-100 trained on MNIST, pruned by
magnitude with torch.nn.utils.prune (90% of each layer), retrained with its masks, and saved as a
torch.nn.utils.prune state_dict for ``topoprune analyze``.

    python -m studies.torch_prune_demo --out runs/demo [--seed 0] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from topoprune.data import load_mnist


def lenet300() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )  # fmt: skip


def train(model: nn.Module, images, labels, *, epochs: int, lr: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()


@torch.no_grad()
def test_error(model: nn.Module, images, labels) -> float:
    model.eval()
    return float((model(images).argmax(1) != labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--amount", type=float, default=0.9, help="fraction pruned per layer")
    args = parser.parse_args()

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    mnist = load_mnist()
    model = lenet300()
    train(model, mnist.train.images, mnist.train.labels, epochs=args.epochs, lr=1e-3,
          seed=args.seed)  # fmt: skip
    dense_error = test_error(model, mnist.test.images, mnist.test.labels)
    for module in model:
        if isinstance(module, nn.Linear):
            prune.l1_unstructured(module, "weight", amount=args.amount)
    pruned_error = test_error(model, mnist.test.images, mnist.test.labels)
    train(model, mnist.train.images, mnist.train.labels, epochs=2, lr=1e-3, seed=args.seed + 1)
    retrained_error = test_error(model, mnist.test.images, mnist.test.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "lenet300_pruned.pt")
    summary = {
        "model": "lenet300", "dataset": "mnist", "seed": args.seed, "epochs": args.epochs,
        "pruned_per_layer": args.amount, "test_error_dense": dense_error,
        "test_error_pruned": pruned_error, "test_error_retrained": retrained_error,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"LeNet-300-100 on MNIST: test error dense {dense_error:.2%}, after pruning "
          f"{args.amount:.0%} of each layer {pruned_error:.2%}, retrained {retrained_error:.2%} "
          f"({summary['seconds']:.0f} s); saved {args.out / 'lenet300_pruned.pt'}")  # fmt: skip


if __name__ == "__main__":
    main()
