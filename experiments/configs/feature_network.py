r"""The feature network of a shipped image dataset (`ae_jax.feature_network`): a small classifier trained
by ae-jax whose penultimate layer is the space of the sample-quality metrics (`ae_jax.sample_quality`).

    python -m experiments.feature_network --config experiments/configs/feature_network.py:fashion_mnist
    python -m experiments.feature_network --config experiments/configs/feature_network.py:cifar10

The argument names the dataset: fashion_mnist or cifar10. The network always sees pixels in [0, 1], so
config.data.scale does not matter (one cached network serves every scale); every other data option and
every training setting is part of the cache key.
"""

import ml_collections

from ae_jax.data import data_config
from ae_jax.errors import ConfigError, did_you_mean

# Not an experiment (no model to inspect): tests/test_configs.py's sweep runs each ARGS entry through the
# autoencoder inspector, so this lists none; tests/test_feature_network.py checks these configs.
ARGS = ()

# dataset -> training settings. Fashion-MNIST: 4.3 epochs (see the README for its time and accuracy).
SETTINGS = {
  "fashion_mnist": dict(steps=2000, batch_size=128, learning_rate=1e-3, channels=(16, 32, 64), features=128),
  "cifar10": dict(steps=3000, batch_size=128, learning_rate=1e-3, channels=(32, 64, 128), features=128),
}


def get_config(arg: str = "fashion_mnist") -> ml_collections.ConfigDict:
  """config.data of dataset `arg` and the feature network's training settings (`feature_network.Settings`)."""
  if arg not in SETTINGS:
    raise ConfigError(
      f"feature_network.py:{arg}: unknown dataset; {did_you_mean(arg, SETTINGS)}"
      f"choose one of {sorted(SETTINGS)}"
    )
  config = ml_collections.ConfigDict({"data": data_config(arg), "seed": 0, **SETTINGS[arg]})
  config.channels = tuple(config.channels)
  return config
