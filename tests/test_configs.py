"""Every shipped config (with every argument it lists in ARGS) passes the config check, builds its model
and goes through the bottleneck inspector (shapes only: nothing is initialised or compiled), so a config
that cannot run is caught here. Configs that read your own data get a small generated stand-in."""

import importlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from ae_jax import data
from ae_jax.errors import DataNotFoundError
from ae_jax.inspect import format_report, inspect_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _variants():
  for path in sorted(CONFIGS.glob("*.py")):
    if path.name == "__init__.py":
      continue
    module = importlib.import_module(f"experiments.configs.{path.stem}")
    for arg in getattr(module, "ARGS", (None,)):
      yield pytest.param(module, arg, id=path.stem + (f":{arg}" if arg else ""))


def _stand_in_data(config, tmp_path):
  """Points configs of user data (an empty path) at a small generated file or folder."""
  if config.data.name == "series_file" and not config.data.path:
    np.savetxt(tmp_path / "series.txt", np.sin(np.arange(500) / 9.0)[:, None])
    config.data.path = str(tmp_path / "series.txt")
  if config.data.name == "image_folder" and not config.data.path:
    for split in ("train", "test"):
      (tmp_path / "images" / split).mkdir(parents=True)
      Image.fromarray(np.zeros((70, 90, 3), np.uint8)).save(tmp_path / "images" / split / "a.png")
    config.data.path = str(tmp_path / "images")
  if config.data.name == "tfds" and not config.data.tfds_name:
    config.data.tfds_name = "cifar10"  # shapes come from tfds' declared features; nothing is read


@pytest.mark.parametrize("module, arg", list(_variants()))
def test_shipped_config_checks_builds_and_inspects(module, arg, tmp_path):
  config = module.get_config() if arg is None else module.get_config(arg)
  _stand_in_data(config, tmp_path)
  try:
    report = inspect_config(config)
  except DataNotFoundError as e:  # the offline copy this config reads is not on this machine
    pytest.skip(f"data not available: {e}")
  assert report.total_params > 0 and report.code_size
  text = format_report(report)
  assert "compression ratio" in text and "total parameters" in text
  spec = data.example_spec(config.data)
  assert report.input_shape == spec.shape
