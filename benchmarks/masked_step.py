"""Benchmark: cost of a masked training step against the same dense model's, in one run.

    python -m benchmarks.masked_step [--steps 200] [--out results/benchmarks/masked_step.json]

Target (issue 5): a masked step costs at most 15% more than the dense one. Both models get the
same batches; each is timed over ``--steps`` SGD steps after a warm-up, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from topoprune.models import MODELS, build_model
from topoprune.provenance import provenance
from topoprune.prune.masks import add_masks, enforce_masks


def _round(model: nn.Module, optimizer, images, labels, steps: int) -> float:
    masked = hasattr(model, "masked")
    start = time.perf_counter()
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images[i]), labels[i]).backward()
        optimizer.step()
        if masked:
            enforce_masks(model)  # as the training engine does after every step
    return (time.perf_counter() - start) / steps


def time_pair(
    dense: nn.Module, masked: nn.Module, images, labels, steps: int, repeats: int
) -> tuple[float, float]:
    """Best seconds per step of each model, rounds interleaved so drift hits both alike."""
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for m in (dense, masked)
    ]
    best = [float("inf"), float("inf")]
    for round_index in range(repeats + 1):  # round 0 warms up
        for k, (model, optimizer) in enumerate(zip((dense, masked), optimizers)):
            seconds = _round(model, optimizer, images, labels, steps)
            if round_index:
                best[k] = min(best[k], seconds)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300,lenet5,mlp1024,cnn_mnist")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/masked_step.json"))
    args = parser.parse_args()
    rows = {}
    for name in args.models.split(","):
        shape = MODELS[name].input_shape
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(args.steps, args.batch_size, *shape, generator=generator)
        labels = torch.randint(0, 10, (args.steps, args.batch_size), generator=generator)
        torch.manual_seed(0)
        dense = build_model(name)
        torch.manual_seed(0)
        masked = add_masks(build_model(name))
        masked.masked = True
        dense_s, masked_s = time_pair(dense, masked, images, labels, args.steps, args.repeats)
        rows[name] = {
            "dense_ms": dense_s * 1e3,
            "masked_ms": masked_s * 1e3,
            "overhead": masked_s / dense_s - 1,
        }
        print(
            f"{name}: dense {dense_s * 1e3:.2f} ms/step, masked {masked_s * 1e3:.2f} ms/step: "
            f"{100 * (masked_s / dense_s - 1):+.1f}%"
        )
    result = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "models": rows,
        "threads": torch.get_num_threads(),
        "provenance": provenance(("topoprune", "torch")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
