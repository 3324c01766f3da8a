"""The second-order benchmark's quick mode, end to end in a subprocess (as `make bench` runs it):
every method measured in its child process, with positive times and memory, and the JSON laid
out as documented; and the WoodFisher memory prediction's terms."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    """The benchmark module, from its file (benchmarks/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location(
        "_second_order_benchmark", ROOT / "benchmarks" / "second_order.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_mode_measures_every_method(tmp_path):
    out = tmp_path / "second_order.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.second_order", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    settings = {(r["method"], r["setting"]) for r in rows}
    assert {m for m, _ in settings} == {"magnitude", "obd", "obs", "woodfisher"}
    assert len(rows) == 6  # magnitude, obd x2, obs, woodfisher B = 16 and 100 with m = 32
    assert {r.get("hessian") for r in rows if r["method"] == "obd"} == {
        "gauss-newton",
        "hutchinson",
    }
    for row in rows:
        assert set(row) >= {"method", "setting", "seconds", "ratio_to_magnitude", "peak_mb"}
        assert row["skipped"] is False, row
        assert row["seconds"] > 0 and row["peak_mb"] >= 0, row
        assert row["ratio_to_magnitude"] > 0, row
        if row["method"] != "obs":  # the quick mode's OBS prunes one row per layer
            assert all(abs(k - 0.1) < 1e-6 for k in row["kept_fraction"].values()), row
    assert rows[0]["method"] == "magnitude" and rows[0]["ratio_to_magnitude"] == 1.0
    for row in rows[4:]:
        assert set(row["phases"]) == {"gradients_s", "inverse_s", "update_s"}
        assert row["predicted_mb"] > 0
    assert result["settings"]["quick"] is True
    assert "git_revision" in result["provenance"]


def test_woodfisher_memory_prediction():
    bench = _benchmark()
    padded_size, woodfisher_memory = bench.padded_size, bench.woodfisher_memory
    assert padded_size(100) == 266_200
    assert padded_size(2000) == 236_000 + 30_000 + 2_000
    size = padded_size(16)
    # the gradients dominate when many: twice 4 m P (concatenated) plus one batch's copies
    assert woodfisher_memory(16, 8000, 128, False) == 2 * 4 * 8000 * size + 12 * 128 * size
    # the inverse with the held gradients when blocks are large
    size = padded_size(2000)
    assert woodfisher_memory(2000, 100, 128, False) == 8 * size * 2000 + 4 * 2**28
    # an autograd graph through the inverse costs about 32 m P bytes more
    assert woodfisher_memory(16, 100, 128, True) > woodfisher_memory(16, 100, 128, False)
