"""The command line's output end: a reader that goes away early is not an error trace."""

import os
import sys

import numpy as np

from topoprune.cli import main


def test_a_closed_pipe_is_not_a_traceback(tmp_path, monkeypatch):

    # `topoprune degrees ... | head`: the reader has gone when topoprune writes
    path = tmp_path / "w.npz"
    np.savez(path, w=np.ones((50, 8), dtype=np.float32))
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["degrees", str(path)]) == 1
