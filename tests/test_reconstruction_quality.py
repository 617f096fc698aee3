"""The `rfd` evaluator: its reconstruction Fréchet distance and floor equal `frechet_distance` of the
features computed directly (the padding of a last partial batch left out, 8 devices as 1), an autoencoder
that returns its input scores 0, a cached feature network is trained once into the cache folder named, and
non-image data is refused before training.

The feature network is an untrained FeatureCNN (a fixed function of the images: enough to compare two
computations of one distance) injected in place of the dataset's trained one, except in the cache test."""

import jax
import numpy as np
import pytest

from ae_jax import data, evaluators
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data.dataset import stack_examples
from ae_jax.evaluators import batches, reconstruction_quality
from ae_jax.metrics import feature_network
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance
from ae_jax.runner import experiment
from ae_jax.runner.config import check_config
from ae_jax.training import outputs

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def setup():
  """A tiny MLP autoencoder (untrained) on 8x8 synthetic images: 40 test images in batches of 16 (the last
  one padded) over 8 devices."""
  from conftest import make_tiny_config

  config = make_tiny_config()
  config.data = data.data_config("synthetic", shape=SHAPE, num_train=96, num_test=40)
  exp = experiment.setup(config)
  return exp, exp.context()


@pytest.fixture
def net(setup, monkeypatch):
  exp, _ = setup
  module = feature_network.FeatureCNN(10, channels=(4, 8), features=16)
  injected = feature_network.FeatureNetwork(
    module,
    feature_network.init_params(module, 0, SHAPE),
    dataset="synthetic",
    shape=SHAPE,
    test_accuracy=0.1,
    settings=feature_network.Settings(channels=(4, 8), features=16),
    to_unit=exp.dataset.info.to_unit,
    batch_size=64,
  )
  monkeypatch.setattr(reconstruction_quality, "load_feature_network", lambda *args: injected)
  return injected


def _run(ctx, state, devices=None, **options):
  section = evaluators.section("rfd", split="test", **options)
  evaluate = evaluators.EVALUATORS["rfd"].build("rfd", section, ctx)
  return evaluate(parallel.replicate(state, devices), 0, True)


def _features(net, info, x):
  return net.outputs(np.clip(info.to_unit(np.asarray(x)), 0.0, 1.0), unit=True)[0]


@pytest.mark.parametrize("n", [40, 37])
def test_rfd_and_its_floor_are_the_frechet_distance_of_the_features(setup, net, n):
  exp, ctx = setup
  info = exp.dataset.info
  x = stack_examples(exp.dataset.split("test"), info, range(n))["x"]
  recon = outputs.reconstruct(exp.model, exp.state, x)["recon"]
  train = stack_examples(exp.dataset.split("train"), info, range(n))["x"]
  real = feature_statistics(_features(net, info, x))
  expected = frechet_distance(*feature_statistics(_features(net, info, recon)), *real)
  floor = frechet_distance(*feature_statistics(_features(net, info, train)), *real)

  result = _run(ctx, exp.state, max_examples=None if n == 40 else n)
  assert result.metrics["examples"] == n
  assert expected > 0 and floor > 0
  np.testing.assert_allclose(result.metrics["rfd"], expected, rtol=1e-6)
  np.testing.assert_allclose(result.metrics["rfd_floor"], floor, rtol=1e-6)
  assert "not Inception" in result.details["feature_network"]
  assert "reconstruction Fréchet distance" in result.lines[0]
  if n == 40:  # every device's sums add up to one device's
    one = _run(ctx, exp.state, jax.local_devices()[:1]).metrics
    np.testing.assert_allclose([one["rfd"], one["rfd_floor"]], [expected, floor], rtol=1e-6)


def test_an_autoencoder_that_returns_its_input_scores_zero(setup, net, monkeypatch):
  exp, ctx = setup
  monkeypatch.setattr(batches, "model_outputs", lambda model, state, batch: {"recon": batch["x"]})
  result = _run(ctx, exp.state).metrics
  assert result["rfd"] == pytest.approx(0.0, abs=1e-9 * result["rfd_floor"])
  assert result["rfd_floor"] > 0


def test_the_feature_network_is_trained_once_into_the_cache_folder(setup, tmp_path):
  exp, ctx = setup
  result = _run(ctx, exp.state, max_examples=24, feature_steps=2, feature_cache=str(tmp_path)).metrics
  assert np.isfinite(result["rfd"]) and result["rfd_floor"] >= 0 and result["examples"] == 24
  settings = feature_network.settings_for(ctx.config.data, 2)
  params_path, meta_path = feature_network.cache_paths(ctx.config.data, settings, tmp_path)
  assert params_path.exists() and meta_path.exists()


@pytest.mark.parametrize(
  "dataset, match",
  [
    (data.data_config("synthetic_sequences"), "cannot run on dataset 'synthetic_sequences': its examples"),
    (data.data_config("spoken_digit"), "cannot run on dataset 'spoken_digit'"),
  ],
)
def test_data_that_is_not_images_is_refused_before_training(dataset, match):
  from conftest import make_tiny_config

  config = make_tiny_config()
  config.data = dataset
  config.evals.rfd = evaluators.section("rfd", split="test")
  with pytest.raises(ConfigError, match=match):
    check_config(config, num_processes=1, local_devices=8)
  with pytest.raises(ConfigError, match=match):
    evaluators.check(config)
