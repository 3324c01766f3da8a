"""A resumed study reports the wall time of every invocation and their total."""

import json

from topoprune_studies._summary import write_study_summary


def _record(seconds: float, revision: str) -> dict:
    return {"wall_seconds": seconds, "device": "cpu",
            "provenance": {"git_revision": revision, "date": "d", "torch_threads": 1}}  # fmt: skip


def test_invocations_accumulate(tmp_path):
    path = tmp_path / "summary.json"
    write_study_summary(path, _record(100.0, "a"))
    written = write_study_summary(path, _record(20.5, "b"))
    assert [i["wall_seconds"] for i in written["invocations"]] == [100.0, 20.5]
    assert [i["git_revision"] for i in written["invocations"]] == ["a", "b"]
    assert written["total_wall_seconds"] == 120.5
    assert json.loads(path.read_text()) == written


def test_a_summary_from_before_invocations_counts_once(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(_record(3000.0, "old")))
    written = write_study_summary(path, _record(60.0, "new"))
    assert written["total_wall_seconds"] == 3060.0


def test_an_unreadable_summary_starts_afresh(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{not json")
    assert write_study_summary(path, _record(5.0, "x"))["total_wall_seconds"] == 5.0
    path.write_text("[1, 2]")
    assert write_study_summary(path, _record(5.0, "x"))["invocations"][0]["wall_seconds"] == 5.0
