"""Integration: a few training steps on the real Fashion-MNIST (skipped, with the reason, when absent)."""

import os

import pytest

from ae_jax.data import fashion_mnist
from ae_jax.runner import loop

pytestmark = pytest.mark.integration

IDX_DIR = fashion_mnist.DEBIAN_IDX_DIR


@pytest.mark.skipif(
  not fashion_mnist.has_idx_files(IDX_DIR),
  reason=f"Fashion-MNIST idx files not in {IDX_DIR}: apt-get install dataset-fashion-mnist "
  "(make test does this where apt is usable)",
)
def test_conv_ae_learns_on_real_fashion_mnist(tmp_path_factory):
  """150 steps of the seed conv autoencoder beat predicting the mean image on the full test set."""
  from experiments.configs import conv_ae_fashion_mnist

  config = conv_ae_fashion_mnist.get_config()
  config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))  # prepares from the idx files, no network
  config.data.idx_dir = IDX_DIR
  config.total_steps = 150
  config.batch_size = 64
  config.log_every = 50
  config.evals.test.every = 0
  config.async_checkpoints = False
  workdir = tmp_path_factory.mktemp("run")
  summary = loop.train_and_evaluate(config, str(workdir))
  assert len(summary["dataset"].split("test")) == 10_000
  # Predicting the training mean image scores 0.3466 in [-1, 1] pixel space (see the README).
  assert summary["metrics"]["test/mse"] < 0.25
  assert os.path.exists(workdir / "metrics.jsonl")
