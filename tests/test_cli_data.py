import json
import subprocess
import sys

from topoprune.cli import main


def test_data_list_json(capsys):
    assert main(["data", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in listing["datasets"]}
    assert set(rows) == {"mnist", "fashion-mnist", "cifar10"}
    assert rows["mnist"]["present"] and rows["mnist"]["verified"]


def test_data_show_permuted(capsys):
    assert main(["data", "show", "permuted-mnist", "--square", "8", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "permuted-mnist(square=8,seed=3): train 55000, val 5000, test 10000" in out
    assert "test  class counts [980, 1135," in out


def test_user_error_exits_2_without_traceback(cache_root):
    done = subprocess.run(
        [sys.executable, "-m", "topoprune.cli", "data", "fetch", "cifar10"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("topoprune: error: CIFAR-10 not found")
    assert "Traceback" not in done.stderr


def test_missing_data_dir_is_a_user_error(tmp_path, capsys):
    assert main(["data", "fetch", "mnist", "--force", "--data-dir", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
