"""Every shipped config (with every argument it lists in ARGS) passes the config check, builds its model
and goes through the bottleneck inspector (shapes only: nothing is initialised or compiled), whose report
keeps every line within 110 characters, so a config that cannot run is caught here. Configs that read your
own data get a small generated stand-in."""

import importlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from ae_jax import data
from ae_jax.core.errors import ConfigError, DataNotFoundError
from ae_jax.runner.bottleneck import format_report, inspect_config
from ae_jax.runner.config import parse_arg

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
  too_long = [line for line in text.splitlines() if len(line) > 110]  # the project's line length
  assert not too_long, "\n".join(too_long)
  spec = data.example_spec(config.data)
  assert report.input_shape == spec.shape


# ----------------------------------------------------------------------------- config arguments


def test_config_arguments_take_the_types_of_their_defaults():
  defaults = dict(dataset="power_demand", k=1, rate=0.5, full=False, levels=(8, 5), name=None)
  assert parse_arg(None, **defaults).to_dict() == defaults
  args = parse_arg("ecg5000,k=50,rate=1e-3,full,levels=8:5:5:5,name=3", **defaults)
  assert args.to_dict() == dict(dataset="ecg5000", k=50, rate=1e-3, full=True, levels=(8, 5, 5, 5), name=3)
  assert type(args.k) is int and type(args.rate) is float and type(args.levels[0]) is int
  assert parse_arg("full=no,name=abc", **defaults).to_dict() == {**defaults, "name": "abc"}
  assert parse_arg("k=2", k=1, dataset="x").to_dict() == {"k": 2, "dataset": "x"}


@pytest.mark.parametrize(
  "arg, message",
  [
    (
      "modle=x",
      "config argument 'modle=x': unknown option 'modle'; did you mean 'model'? options: ['k', 'model']",
    ),
    ("k=two", "config argument 'k=two': k must be int, got 'two'"),
    ("k=1,k=2", "config argument 'k=1,k=2': 'k' is given twice"),
    ("model=a,k", "config argument 'model=a,k': 'k' needs a value (k=VALUE)"),
  ],
)
def test_a_bad_config_argument_is_one_config_error(arg, message):
  with pytest.raises(ConfigError) as e:
    parse_arg(arg, model="lstm_encdec_ad", k=1)
  assert str(e.value) == message


def test_shipped_configs_parse_their_arguments_with_parse_arg():
  """A misspelled option of a shipped config's argument names the option it meant (the configs used to
  ignore some of them or fail with a bare ValueError)."""
  from experiments.configs import images, iwae_mnist, lstm_anomaly, vae_mlp_fashion_mnist, vqvae_cifar10

  for module, arg, hint in [
    (lstm_anomaly, "ecg5000,modl=lstm_ae_seq", "did you mean 'model'"),
    (images, "tfds,sizes=64", "did you mean 'size'?"),
    (iwae_mnist, "kk=5", "did you mean 'k'?"),
    (vae_mlp_fashion_mnist, "objectve=beta", "did you mean 'objective'?"),
    (vqvae_cifar10, "quantizer=vq,num_code=8", "did you mean 'num_codes'?"),
  ]:
    with pytest.raises(ConfigError, match=hint):
      module.get_config(arg)
  assert lstm_anomaly.get_config("ecg5000,model=lstm_ae_seq").model.name == "lstm_ae_seq"
  with pytest.raises(ConfigError, match="mode=prefix is for your own series"):
    lstm_anomaly.get_config("power_demand,mode=prefix")  # a preset keeps its protocol: not ignored
  prefix = lstm_anomaly.get_config("series,mode=prefix")
  assert prefix.data.window == 0 and "test" not in prefix.evals and prefix.keep_best == "validation/loss"
  assert iwae_mnist.get_config("k=5").model.num_samples == 5
  rvq = vqvae_cifar10.get_config("rvq,num_codes=8,quantizer_dropout=false")  # the argument beats the preset
  q = rvq.model.quantizer
  assert (q.name, q.num_codes, q.quantizer_dropout) == ("rvq", 8, False)
  assert vqvae_cifar10.get_config("rvq").model.quantizer.num_codes == 6
