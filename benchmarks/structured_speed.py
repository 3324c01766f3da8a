"""Benchmark: what structured and unstructured pruning buy at inference, on this machine.

    python -m benchmarks.structured_speed [--results results/structured] [--rounds 9]
        [--repeats 20] [--out results/benchmarks/structured_speed.json]

Reads the structured study's runs (``topoprune study run structured`` trains them; their
checkpoints stay in ``runs/<key>-<hash>/``, found through the study's ``summary.json``) and,
per (model, data set, seed), times the dense model, every structured result compacted into a
smaller dense model, and the unstructured (magnitude) model at filter-l1's parameter count, both
as its dense layers and through CSR products, in interleaved rounds at batch 1 and 128 (median
of ``--repeats`` passes per round; the speedup is the median over rounds of the dense model's
time over the model's time in the same round). Also parameters, multiply-accumulates and bytes
stored (dense state dict; CSR for the sparse form). Prints the mean speedups per method and
writes every row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from topoprune.provenance import provenance
from topoprune_studies.structured import run_key, speed_part


def runs_of(results: Path) -> list[dict]:
    """The main part's runs of a structured study's results folder (``runs.csv``), those whose
    checkpoints are still there: each run's folder from the study's ``summary.json``
    (``run_folders``, by run key), its checkpoint from the run's own ``summary.json``."""
    table, summary = results / "runs.csv", results / "summary.json"
    if not table.exists() or not summary.exists():
        return []
    folders = json.loads(summary.read_text()).get("run_folders", {})
    rows = []
    for row in csv.DictReader(io.StringIO(table.read_text())):
        seed = int(row["seed"])
        key = run_key(row["model"], row["dataset"], row["method"], seed)
        record = results / folders[key] / "summary.json" if key in folders else None
        if record is None or not record.exists():
            continue
        # the checkpoint's name in the run's folder, wherever the results folder is now
        checkpoint = record.parent / Path(json.loads(record.read_text())["checkpoint"]).name
        if checkpoint.exists():
            rows.append({"model": row["model"], "dataset": row["dataset"],
                         "method": row["method"], "seed": seed,
                         "checkpoint": str(checkpoint)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/structured")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="results/benchmarks/structured_speed.json")
    args = parser.parse_args(argv)
    runs = runs_of(Path(args.results))
    if not runs:
        parser.error(f"no finished runs with checkpoints under {args.results}/runs: run "
                     "`topoprune study run structured` first")  # fmt: skip
    rows = speed_part(runs, args.rounds, args.repeats)
    print(f"{'model':14} {'dataset':14} {'method':16} {'params':>8} {'MACs x':>7} {'bytes':>9} "
          f"{'b1 x':>6} {'b128 x':>7}")  # fmt: skip
    for key in dict.fromkeys((r["model"], r["dataset"], r["method"]) for r in rows):
        group = [r for r in rows if (r["model"], r["dataset"], r["method"]) == key]
        columns = ("params", "flops_ratio", "file_bytes", "speedup_b1", "speedup_b128")
        m = {c: float(np.mean([r[c] for r in group])) for c in columns}
        print(
            f"{key[0]:14} {key[1]:14} {key[2]:16} {m['params']:8.0f} {m['flops_ratio']:7.2f} "
            f"{m['file_bytes']:9.0f} {m['speedup_b1']:6.2f} {m['speedup_b128']:7.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    record = {"command": "python -m benchmarks.structured_speed " + " ".join(given),
              "rounds": args.rounds, "repeats": args.repeats, "rows": rows,
              "provenance": provenance(("topoprune", "torch", "numpy"))}  # fmt: skip
    out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
