"""Non-finite numbers in a config or a command's flags are refused before any compute."""

import subprocess
import sys

import pytest
from conftest import make_tiny_config

from ae_jax.core.errors import ConfigError
from ae_jax.runner.config import check_config


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_config_refuses_a_nonfinite_number_at_any_depth(value):
  config = make_tiny_config()
  config.optimizer.learning_rate = value
  with pytest.raises(ConfigError, match=r"config.optimizer.learning_rate=.*must be finite"):
    check_config(config)
  config = make_tiny_config()
  config.evals.test.every = 0
  config.trim.fraction = value
  with pytest.raises(ConfigError, match=r"config.trim.fraction"):
    check_config(config)


@pytest.mark.slow
@pytest.mark.parametrize(
  "args, named",
  [
    (
      [
        "-m",
        "experiments.main",
        "--config",
        "tests/tiny_experiment.py",
        "--config.optimizer.learning_rate=nan",
      ],
      "--config.optimizer.learning_rate=nan",
    ),
    (
      ["-m", "experiments.sample", "--workdir", "nowhere", "--num", "4", "--temperature", "nan"],
      "--temperature=nan",
    ),
  ],
)
def test_commands_refuse_nonfinite_options_in_one_line(tmp_path, args, named):
  args = [a if a != "nowhere" else str(tmp_path / "none") for a in args]
  if "experiments.main" in args:
    args += ["--workdir", str(tmp_path / "run")]
  p = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
  assert p.returncode == 1
  lines = [line for line in p.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], p.stderr
  assert "must be finite" in lines[0]
  assert not (tmp_path / "run").exists()  # nothing written
