"""Benchmark: the training step of SET and RigL against the dense step, averaged over a run.

    python -m benchmarks.sparse_training_step [--models lenet300,mlp3x1000] [--epochs 3]
        [--steps-per-epoch 200] [--repeats 3] [--quick]
        [--out results/benchmarks/sparse_training_step.json]

Each method trains the same model on the same batches (random images, batch 128) through the
engine (``prune_model``), for ``--epochs`` epochs of ``--steps-per-epoch`` steps, with no
validation or checkpoints:

- ``dense``: the dense model (the baseline; it carries all-ones masks, so the masking machinery's
  own cost is in the baseline too: ``benchmarks/masked_step.py`` measures that cost);
- ``random``: static random masks of SET's densities (the masked step alone);
- ``set``: epsilon 20, zeta 0.3: after every epoch but the last, drop and regrow (in the epoch's
  time);
- ``rigl``: ERK at the same densities, ``--delta-t`` steps between updates, each reading the dense
  gradient of its step and dropping and growing, until 75% of the steps.

A method's time per step is the sum of its epochs' times (``history[*].seconds``: training and
the epoch-end hook) over its steps. Rounds interleave the methods; the overhead of a method is the
median over rounds of its time over dense's in the same round, minus 1 (the ``*_ms`` fields are
each method's best round). Target (issue 16): RigL
and SET at most +25% per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from topoprune.models import MODELS, build_model
from topoprune.provenance import provenance
from topoprune.prune.masks import add_masks, weight_modules
from topoprune.prune.methods import METHODS
from topoprune.prune.sparse_evolution import erdos_renyi_densities
from topoprune.train.run import prune_model

METHOD_NAMES = ("dense", "random", "set", "rigl")
EPSILON = 20.0


def method_config(method: str, model: str, epochs: int, delta_t: int):
    d = tuple(erdos_renyi_densities(build_model(model), EPSILON).values())
    sizes = [m.weight.numel() for _, m in weight_modules(build_model(model))]
    kept = sum(a * b for a, b in zip(d, sizes, strict=True)) / sum(sizes)
    common = {"lr": 0.01, "epochs": epochs}
    return {
        "dense": lambda: METHODS["dense"].Config(**common),
        "random": lambda: METHODS["random"].Config(kept=d, dense_epochs=0, **common),
        "set": lambda: METHODS["set"].Config(epsilon=EPSILON, zeta=0.3, **common),
        "rigl": lambda: METHODS["rigl"].Config(sparsity=1 - kept, delta_t=delta_t, **common),
    }[method]()


def seconds_per_step(method: str, model: str, batches: DataLoader, epochs: int,
                     delta_t: int) -> float:  # fmt: skip
    torch.manual_seed(0)
    net = add_masks(build_model(model))
    config = method_config(method, model, epochs, delta_t)
    _, summary = prune_model(net, method, config, train=batches, seed=0)
    seconds = sum(h["seconds"] for h in summary["history"] if "seconds" in h)
    return seconds / summary["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300,mlp3x1000")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--delta-t", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="lenet300, tiny run: for the tests")
    parser.add_argument("--out", type=Path,
                        default=Path("results/benchmarks/sparse_training_step.json"))  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.models, args.epochs, args.steps_per_epoch = "lenet300", 2, 20
        args.delta_t, args.repeats = 10, 1
    rows = {}
    for model in args.models.split(","):
        generator = torch.Generator().manual_seed(0)
        n = args.steps_per_epoch * args.batch_size
        images = torch.rand(n, *MODELS[model].input_shape, generator=generator)
        labels = torch.randint(0, 10, (n,), generator=generator)
        batches = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size)
        times: dict[str, list[float]] = {m: [] for m in METHOD_NAMES}
        for _ in range(args.repeats):
            for method in METHOD_NAMES:
                times[method].append(seconds_per_step(method, model, batches, args.epochs,
                                                      args.delta_t))  # fmt: skip
        row = {f"{m}_ms": 1e3 * min(t) for m, t in times.items()}
        for m in METHOD_NAMES[1:]:
            row[f"{m}_overhead"] = statistics.median(
                a / b - 1 for a, b in zip(times[m], times["dense"], strict=True)
            )
        row["target_met"] = all(row[f"{m}_overhead"] <= 0.25 for m in ("set", "rigl"))
        rows[model] = row
        overheads = ", ".join(f"{m} {100 * row[f'{m}_overhead']:+.1f}%" for m in METHOD_NAMES[1:])
        print(f"{model}: dense {row['dense_ms']:.2f} ms/step; {overheads}")
    result = {
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "delta_t": args.delta_t,
        "repeats": args.repeats,
        "epsilon": EPSILON,
        "models": rows,
        "threads": torch.get_num_threads(),
        "provenance": provenance(("topoprune", "torch")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
