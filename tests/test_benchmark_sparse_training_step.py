"""The sparse-training step benchmark's quick mode, end to end in a subprocess (as `make bench`
runs it): every method timed, overheads against dense, the JSON laid out as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_times_every_method_against_dense(tmp_path):
    out = tmp_path / "sparse_training_step.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sparse_training_step", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    row = result["models"]["lenet300"]
    for method in ("dense", "random", "set", "rigl"):
        assert row[f"{method}_ms"] > 0
    for method in ("random", "set", "rigl"):
        assert row[f"{method}_overhead"] > -1
    assert isinstance(row["target_met"], bool)
    assert "git_revision" in result["provenance"]
