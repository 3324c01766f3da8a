"""Benchmark: a study's wall time one run at a time against 2 local workers and a 2-CPU Ray.

    python -m benchmarks.study_executors [--study pruning-table:quick] [--study progressive]
        [--out results/benchmarks/study_executors.json]

Each ``--study NAME[:quick]`` runs ``topoprune study run NAME [--quick]`` from scratch in a new
process (imports, Ray's start and shutdown included) three times into fresh folders: ``--jobs 1``
(the baseline), ``--jobs 2`` and ``--executor ray --jobs 2`` (a local Ray with 2 CPUs), all at 1
torch thread per run, at this revision. Prints each wall time and its speedup over ``--jobs 1``,
and checks the three give the same results: every run's ``summary.json`` equal apart from wall
times and the results folder, every checkpoint's tensors bit-identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from topoprune.provenance import provenance

MODES = {
    "jobs1": ["--jobs", "1"],
    "jobs2": ["--jobs", "2"],
    "ray2": ["--executor", "ray", "--jobs", "2"],
}
TIMING = ("seconds", "wall", "date", "invocations", "executor")


def comparable(value, root: str):
    """A run's record without wall times, with its results folder's path as ``ROOT``."""
    if isinstance(value, dict):
        return {k: comparable(v, root) for k, v in value.items()
                if not any(word in k for word in TIMING)}  # fmt: skip
    if isinstance(value, list):
        return [comparable(v, root) for v in value]
    return value.replace(root, "ROOT") if isinstance(value, str) else value


def same_results(ours: Path, reference: Path) -> tuple[bool, str]:
    """Whether two results folders of one study hold the same runs; the first difference."""
    runs = {}
    for folder in (ours, reference):
        runs[folder] = {p.parent.name: comparable(json.loads(p.read_text()),
                                                   str(folder.resolve()))
                        for p in sorted((folder / "runs").glob("*/summary.json"))}  # fmt: skip
    if runs[ours].keys() != runs[reference].keys():
        return False, "different run keys"
    for key, summary in runs[ours].items():
        if summary != runs[reference][key]:
            return False, f"{key}: summary.json differs"
        checkpoint = ours / "runs" / key / "checkpoint.pt"
        if checkpoint.exists():
            mine = torch.load(checkpoint, weights_only=True)["extra"]["model_state"]
            theirs = torch.load(reference / "runs" / key / "checkpoint.pt",
                                weights_only=True)["extra"]["model_state"]  # fmt: skip
            if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k])
                                                       for k in mine):  # fmt: skip
                return False, f"{key}: checkpoint tensors differ"
    return True, f"{len(runs[ours])} runs equal"


def time_study(name: str, quick: bool, scratch: Path) -> dict:
    topoprune = str(Path(sys.executable).with_name("topoprune"))
    base = [topoprune, "study", "run", name, "--quiet", "--device", "cpu",
            *(["--quick"] if quick else [])]  # fmt: skip
    record: dict = {"study": name, "quick": quick, "modes": {}}
    folders: dict[str, Path] = {}
    for mode, flags in MODES.items():
        out = scratch / f"{name}-{'quick' if quick else 'full'}-{mode}"
        command = [*base, *flags, "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        record["modes"][mode] = {"command": " ".join(command[1:]), "wall_seconds": wall}
        folders[mode] = out
        print(f"{name}{' --quick' if quick else ''} {mode}: {wall:.1f} s", flush=True)
    for mode, entry in record["modes"].items():
        entry["speedup_over_jobs1"] = (
            record["modes"]["jobs1"]["wall_seconds"] / entry["wall_seconds"]
        )
        same, detail = same_results(folders[mode], folders["jobs1"])
        entry["same_results_as_jobs1"], entry["comparison"] = same, detail
        print(f"  {mode}: {entry['speedup_over_jobs1']:.2f}x, {detail}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study",
        action="append",
        help="NAME or NAME:quick (default: pruning-table:quick, progressive)",
    )
    parser.add_argument("--out", default="results/benchmarks/study_executors.json")
    parser.add_argument("--keep", help="keep the results folders here (default: a temporary "
                                       "folder, removed)")  # fmt: skip
    args = parser.parse_args(argv)
    studies = args.study or ["pruning-table:quick", "progressive"]
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="tp-executors-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        records = [time_study(s.split(":")[0], s.endswith(":quick"), scratch) for s in studies]
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "command": "python -m benchmarks.study_executors "
                   + " ".join(f"--study {s}" for s in studies),
        "target": "at least 1.7x with 2 workers against 1 (issue #20)",
        "studies": records,
        "provenance": provenance(("topoprune", "torch", "numpy", "ray")),
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
