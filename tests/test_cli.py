"""experiments.main's command line: bad input fails before any training with one line naming the fix."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/configs/conv_ae_fashion_mnist.py"


def _main(*args, workdir):
  return subprocess.run(
    [sys.executable, "-m", "experiments.main", *args, f"--workdir={workdir}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.parametrize(
  "args, expected",
  [
    (
      (f"--config={CONFIG}", "--config.batchsize=3"),
      "unknown config key 'batchsize'; did you mean 'batch_size'?",
    ),
    ((f"--config={CONFIG}", "--config.model.code_dims=3"), "did you mean 'code_dim'?"),
    (("--config=experiments/configs/no_such_config.py",), "no_such_config.py"),
    ((f"--config={CONFIG}", "--config.batch_size=not_a_number"), "batch_size"),
  ],
)
def test_bad_command_line_is_one_error_line(tmp_path, args, expected):
  out = _main(*args, workdir=tmp_path)
  lines = [line for line in out.stderr.splitlines() if not line.startswith(("I1", "W1"))]
  assert out.returncode != 0
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr
  assert "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)  # nothing was written


def test_model_options_not_in_the_file_can_still_be_overridden():
  """Configs list every option of their model (models.model_config), so any can be set from the CLI."""
  from experiments.configs import conv_ae_fashion_mnist

  config = conv_ae_fashion_mnist.get_config()
  assert {"act", "output_act", "channels", "dense", "code_dim"} <= set(config.model)
