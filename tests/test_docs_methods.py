"""The worked example of docs/methods.md runs: the method registers, prunes a model to its target
with gradual movement scores, and its config goes through the generated CLI flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"

CHECK = """
import argparse
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from topoprune import prune_model
from topoprune.cli import add_config_flags, config_from_args, config_to_argv

torch.manual_seed(0)
x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
config = MovementConfig(dense_epochs=1, retrain_epochs=2, sparsity=(0.75,), prune_every=2)
model, summary = prune_model(model, "movement-example", config,
                             train=DataLoader(TensorDataset(x, y), batch_size=32))
assert summary["kept_percent"] == {"0": 25.0, "2": 25.0}, summary["kept_percent"]
assert "movement-example" in METHODS.names()
parser = argparse.ArgumentParser()
add_config_flags(parser, MovementConfig, "movement-example")
assert config_from_args(MovementConfig, parser.parse_args(config_to_argv(config))) == config
print("ok")
"""


def test_the_worked_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    script = tmp_path / "example.py"
    script.write_text(blocks[0] + CHECK)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
