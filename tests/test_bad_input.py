"""Bad input stops before any compute with one error naming the problem and the fix: the optimizer section
(checked with the config, before any data is read) and series files (checked as they are read)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ae_jax import data
from ae_jax.core.errors import ConfigError
from ae_jax.runner import loop
from ae_jax.runner.config import check_config, default_config
from ae_jax.training import optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
  "options, match",
  [
    (
      {"name": "adamx"},
      r"unknown config.optimizer.name 'adamx'; did you mean 'adam'\? choose adam, adamw or sgd$",
    ),
    ({"name": "sdg"}, "did you mean 'sgd'"),
    (
      {"schedule": "cosin"},
      r"schedule 'cosin'; did you mean 'cosine'\? choose constant, cosine, warmup_cosine or piecewise$",
    ),
    ({"schedule": "piecewise", "boundaries": (10,), "scales": (1.0,)}, "one entry more than boundaries"),
    ({"schedule": "piecewise", "boundaries": (10, 5), "scales": (1.0, 0.5, 0.1)}, "positive and increasing"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
  ],
)
def test_bad_optimizer_options_fail_the_config_check_before_the_data_is_read(tmp_path, options, match):
  config = default_config()
  config.optimizer.update(options)
  with pytest.raises(ConfigError, match=match):
    check_config(config, num_processes=1, local_devices=jax.local_device_count())
  with pytest.raises(ConfigError, match=match):
    optim.make_schedule(config.optimizer, 100)
  # a series file that does not exist would be a DataNotFoundError if it were read first
  config.data = data.data_config("series_file", path=str(tmp_path / "absent.csv"), window=8)
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_every_choice_builds_an_optimizer():
  for name in optim.OPTIMIZERS:
    for schedule in optim.SCHEDULES:
      config = default_config().optimizer
      config.update(name=name, schedule=schedule, warmup_steps=2)
      tx, sched = optim.make_optimizer(config, 10)
      assert float(sched(5)) > 0 and tx.init({"w": np.zeros(2, np.float32)}) is not None


@pytest.mark.slow
def test_a_binary_series_file_is_one_error_line_from_the_command_line(tmp_path):
  path = tmp_path / "series.csv"
  path.write_bytes(bytes(range(256)) * 4)
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=experiments/configs/lstm_anomaly.py:series",
      f"--config.data.path={path}",
      "--config.data.columns=1",
      f"--workdir={tmp_path / 'run'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 1 and len(lines) == 1, out.stderr
  assert lines[0] == (
    f"error: {path}: not a text CSV / whitespace-separated series (binary: a NUL byte at offset 0); give a "
    "UTF-8 text table with one row per time step, or a .npy array"
  )
