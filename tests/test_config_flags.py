"""Plug-ins named by flag (`ae_jax.runner.command_line.parse_flags_or_exit`): `--config.loss.MODULE:TERM=W`
and `--config.model.name=MODULE:MODEL` parse as written, and a model switched by flag starts from its own
defaults, not the config file's model's options."""

import textwrap

import pytest
from absl import flags

from ae_jax.runner import command_line
from experiments import main

CONFIG = "experiments/configs/conv_ae_fashion_mnist.py"

PLUGIN = '''
"""A loss term and a model of one's own, for the flag tests."""

import flax.linen as nn
import jax.numpy as jnp

from ae_jax import losses, models


@losses.register("abs_recon")
def abs_recon(outputs, batch):
  """Mean |recon| per example."""
  r = outputs["recon"]
  return jnp.abs(r).reshape(r.shape[0], -1).mean(axis=1)


@models.register("tiny_linear")
class TinyLinear(nn.Module):
  """A linear autoencoder."""

  input_shape: tuple = (28, 28, 1)
  code_dim: int = 2
  width: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    code = nn.Dense(self.code_dim)(x.reshape(x.shape[0], -1))
    return {"code": code, "recon": nn.Dense(x[0].size)(code).reshape(x.shape)}
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
  """`flagplug_mod.py` (and `flagplug_pkg/terms.py`, a dotted module) on sys.path."""
  import sys

  folder = tmp_path_factory.mktemp("plugins")
  (folder / "flagplug_mod.py").write_text(textwrap.dedent(PLUGIN))
  (folder / "flagplug_pkg").mkdir()
  (folder / "flagplug_pkg" / "__init__.py").write_text("")
  (folder / "flagplug_pkg" / "terms.py").write_text(
    "import jax.numpy as jnp\nfrom ae_jax import losses\n\n\n@losses.register('smooth')\n"
    "def smooth(outputs, batch):\n  return jnp.zeros(outputs['recon'].shape[0])\n"
  )
  sys.path.insert(0, str(folder))
  yield folder
  sys.path.remove(str(folder))


def parse(*overrides: str):
  """The config `experiments.main` would train with, from its own command-line parser."""
  argv = ["main", "--config", CONFIG, "--workdir", "/nonexistent/unused", *overrides]
  flag_values = flags.FlagValues()
  main.define_flags(flag_values, argv)
  main.parse_command_line(argv, flag_values)
  return flag_values.config


def test_plugin_flags_quotes_keys_with_a_colon_and_leaves_the_rest():
  assert command_line.plugin_flags(["--config.loss.m:t=0.01"]) == ['--config.loss["m:t"]=0.01']
  assert command_line.plugin_flags(["--config.loss.pkg.mod:t=1"]) == ['--config.loss["pkg.mod:t"]=1']
  assert command_line.plugin_flags(["--config.loss_schedules.m:t=500"]) == [
    '--config.loss_schedules["m:t"]=500'
  ]
  unchanged = [
    "--config.model.name=m:model",  # a colon in the value only
    '--config.loss["m:t"]=0.5',  # already quoted
    "--config=experiments/configs/prior_ar.py:runs/vq",
    "--config.total_steps=10",
    "--workdir=a:b",
  ]
  assert command_line.plugin_flags(unchanged) == unchanged


def test_a_loss_term_of_ones_own_by_flag(plugin):
  config = parse("--config.loss.flagplug_mod:abs_recon=0.01")
  assert dict(config.loss) == {"mse": 1.0, "flagplug_mod:abs_recon": 0.01}
  config = parse("--config.loss_schedules.flagplug_mod:abs_recon=9", "--config.loss.flagplug_mod:abs_recon=2")
  assert config.loss["flagplug_mod:abs_recon"] == 2.0
  assert dict(config.loss_schedules) == {"flagplug_mod:abs_recon": 9}


def test_a_loss_term_of_a_dotted_module_is_refused_by_name(plugin):
  """config.loss keys take no dots (ConfigDict): the error names the key; docs/extending.md says so."""
  with pytest.raises(SystemExit) as e:
    parse("--config.loss.flagplug_pkg.terms:smooth=0.5")
  assert "flagplug_pkg.terms:smooth" in str(e.value) and "dots" in str(e.value)


def test_a_model_of_ones_own_by_flag_starts_from_its_own_defaults(plugin):
  config = parse("--config.model.name=flagplug_mod:tiny_linear")
  assert config.model.to_dict() == {"name": "flagplug_mod:tiny_linear", "code_dim": 2, "width": 4}
  # the model's own options by flag, before or after the name
  for order in (
    ("--config.model.code_dim=5", "--config.model.name=flagplug_mod:tiny_linear"),
    ("--config.model.name=flagplug_mod:tiny_linear", "--config.model.code_dim=5"),
  ):
    assert parse(*order).model.to_dict() == {"name": "flagplug_mod:tiny_linear", "code_dim": 5, "width": 4}


def test_an_option_the_switched_model_lacks_is_one_error(plugin):
  with pytest.raises(SystemExit) as e:
    parse("--config.model.name=flagplug_mod:tiny_linear", "--config.model.act=relu")
  assert "act is not an option of model 'flagplug_mod:tiny_linear'" in str(e.value)
  assert "code_dim" in str(e.value)


def test_the_same_model_by_flag_keeps_the_files_options():
  config = parse("--config.model.name=conv_ae", "--config.model.code_dim=8")
  assert config.model.name == "conv_ae" and config.model.code_dim == 8
  assert tuple(config.model.channels) == (8, 16, 32, 64)  # the file's, not the default's


def test_a_registered_model_by_flag_drops_the_files_options():
  config = parse("--config.model.name=mlp_ae")
  assert config.model.name == "mlp_ae" and "channels" not in config.model


def test_an_unknown_plugin_module_is_one_error(plugin, capsys):
  with pytest.raises(SystemExit):
    parse("--config.loss.no_such_module_here:term=1")
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and "cannot import plug-in module 'no_such_module_here'" in err
  assert "Traceback" not in err
