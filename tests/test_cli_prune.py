"""``topoprune prune``, ``methods`` and ``attach --*-snapshot`` through the real command line:
method flags typed from the config, bad values as exit 2, every flag passed on."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from topoprune.cli import add_config_flags, config_from_args, main
from topoprune.prune.method import TrainConfig, hp
from topoprune.prune.methods import METHODS

pytestmark = pytest.mark.usefixtures("mnist")  # the commands read the cached MNIST


def prune(tmp_path, name, *flags):
    return main(
        [
            "prune",
            "--model",
            "lenet300",
            "--dataset",
            "mnist",
            "--out",
            str(tmp_path / name),
            "--quiet",
            *flags,
        ]
    )


def untrained_magnitude(tmp_path, name, *flags):
    """Magnitude pruning with 0 epochs: fast, and only the masks matter to these tests."""
    return prune(tmp_path, name, "--method", "magnitude", "--dense-epochs", "0",
                 "--retrain-epochs", "0", *flags)  # fmt: skip


def test_regrow_is_passed_on(tmp_path):
    assert untrained_magnitude(tmp_path, "a", "--sparsity", "0.5") == 0
    init = str(tmp_path / "a" / "checkpoint.pt")
    assert (
        prune(
            tmp_path, "b", "--method", "dense", "--epochs", "0", "--init", init, "--regrow", "zero"
        )
        == 0
    )
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["regrow"] == "zero" and summary["regrown"] == round(266200 * 0.5)
    assert summary["compression"] == 1.0


@dataclass(frozen=True)
class Flags(TrainConfig):
    bias: bool = hp("a switch", True)
    counts: tuple[int, ...] = hp("integers", (1, 2))


def test_bool_and_typed_tuple_flags_parse_their_values():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Flags, "test")
    config = config_from_args(Flags, parser.parse_args(["--no-bias", "--counts", "3,4"]))
    assert config.bias is False and config.counts == (3, 4)
    assert config_from_args(Flags, parser.parse_args([])).bias is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--counts", "1.5"])


def test_a_field_named_like_a_common_flag_is_reported_by_name():
    @dataclass(frozen=True)
    class Clash(TrainConfig):
        seed: int = hp("a seed of its own", 0)

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed")
    with pytest.raises(ValueError, match="hyper-parameter 'seed' collides with the common flag"):
        add_config_flags(parser, Clash, "method clash")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--method", "magnitude", "--allocation", "global", "--sparsity", "0.9,0.5"],
            "allocation global takes one sparsity for the whole network, got 2 values",
        ),
        (["--method", "dns", "--dense-epochs", "-1"], r"dense-epochs must be in \[0, inf\)"),
        (["--method", "magnitude", "--layers", "fc9"], "no weight layer matches 'fc9'"),
        (["--method", "magnitude", "--dense-layers", "9"], "no weight layer matches '9'"),
        (["--method", "magnitude", "--sparsity", "1"], r"sparsity must be in \[0, 1\)"),
        (["--method", "random", "--kept", "1.5"], r"kept must be in \(0, 1\]"),
    ],
)
def test_bad_values_exit_2_with_a_message(tmp_path, capsys, flags, message):
    assert prune(tmp_path, "bad", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("topoprune: error: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_bad_values_exit_2_without_a_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "topoprune.cli",
            "prune",
            "--model",
            "lenet300",
            "--dataset",
            "mnist",
            "--method",
            "dns",
            "--epochs",
            "-3",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "epochs must be in [0, inf)" in done.stderr


def test_methods_lists_every_method_with_its_paper(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert f"\n{name} " in f"\n{out}"
    assert "Han et al. 2015" in out and "Guo et al. 2016" in out


def test_method_help_shows_its_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--method", "dns", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "dns hyper-parameters" in out and "--gamma" in out and "--optimizer" in out


def test_attach_compares_two_snapshots_of_one_run(tmp_path, capsys):
    assert untrained_magnitude(tmp_path, "r", "--iterations", "2", "--sparsity", "0.75") == 0
    path = str(tmp_path / "r" / "checkpoint.pt")
    capsys.readouterr()
    assert (
        main(
            [
                "attach",
                path,
                "--before-snapshot",
                "prune1",
                "--after-snapshot",
                "prune2",
                "--boot",
                "0",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    # between the rounds connections are only removed: 50% -> 25% kept
    assert [row["created"] for row in result["layers"]] == [0, 0, 0]
    assert result["layers"][0]["removed"] == round(235200 * 0.5) - round(235200 * 0.25)
    assert main(["attach", path, "--after-snapshot", "nope", "--boot", "0"]) == 2
    assert "no mask snapshot 'nope'; snapshots: dense, prune1, prune2" in capsys.readouterr().err
