"""The LLM-scale degrees benchmark's quick path: a tiny LLaMA-shaped sharded bf16 checkpoint
read by `topoprune degrees` equals the naive full-load computation."""

import json

from benchmarks import llm_degrees


def test_tiny_checkpoint_matches_the_naive_computation(tmp_path):
    out = tmp_path / "llm.json"
    work = str(tmp_path / "work")
    command = ["--models", "tiny", "--patterns", "row50,2:4", "--workdir", work, "--out", str(out)]
    assert llm_degrees.main(command) == 0
    (row,) = json.loads(out.read_text())["rows"]  # the 2:4 variant is for the 7B shape only
    assert row["same_degrees_as_naive"] is True
    assert row["degree_sum"] == row["kept"] == row["weights_read"] // 2
    assert row["layers"] == 2 * 7 + 1  # 7 projections per block, lm_head
