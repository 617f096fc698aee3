r"""The feature network of a shipped image dataset (`ae_jax.metrics.feature_network`): a small classifier
trained
by ae-jax whose penultimate layer is the space of the sample-quality metrics
(`ae_jax.metrics.sample_quality`).

    python -m experiments.feature_network --config experiments/configs/feature_network.py:fashion_mnist
    python -m experiments.feature_network --config experiments/configs/feature_network.py:cifar10

The argument names the dataset: fashion_mnist or cifar10. The network always sees pixels in [0, 1], so
config.data.scale does not matter (one cached network serves every scale); every other data option and
every training setting is part of the cache key.
"""

import dataclasses

import ml_collections

from ae_jax.core.errors import ConfigError, did_you_mean
from ae_jax.data import data_config
from ae_jax.metrics.feature_network import DATASET_SETTINGS

# Not an experiment (no model to inspect): tests/test_configs.py's sweep runs each ARGS entry through the
# autoencoder inspector, so this lists none; tests/test_feature_network.py checks these configs.
ARGS = ()


def get_config(arg: str = "fashion_mnist") -> ml_collections.ConfigDict:
  """config.data of dataset `arg` and the feature network's training settings (`feature_network.Settings`)."""
  if arg not in DATASET_SETTINGS:
    raise ConfigError(
      f"feature_network.py:{arg}: unknown dataset; {did_you_mean(arg, DATASET_SETTINGS)}"
      f"choose one of {sorted(DATASET_SETTINGS)}"
    )
  settings = dataclasses.asdict(DATASET_SETTINGS[arg])
  return ml_collections.ConfigDict({"data": data_config(arg), **settings})
