"""Sample quality in a feature network's space: a set scored against itself is perfect, a shifted one is
worse, the floor is the distance between two real sets, and class accuracy is the network's own verdict.
The network is an untrained FeatureCNN (its features are a fixed function of the images: enough here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.errors import DataError
from ae_jax.feature_network import FeatureCNN, FeatureNetwork, Settings
from ae_jax.sample_metrics import feature_statistics, frechet_distance
from ae_jax.sample_quality import sample_quality

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def net():
  module = FeatureCNN(4, channels=(4, 8), features=16)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)))["params"]
  return FeatureNetwork(
    module,
    params,
    dataset="toy",
    shape=SHAPE,
    test_accuracy=0.5,
    settings=Settings(channels=(4, 8), features=16),
    to_unit=lambda x: (x + 1.0) / 2.0,  # images in [-1, 1]
    batch_size=64,
  )


def _images(n, seed):
  return np.random.default_rng(seed).uniform(-1, 1, (n, *SHAPE)).astype(np.float32)


def test_reference_against_itself_is_perfect(net):
  reference = _images(150, 0)
  result = sample_quality(reference, net, reference, train_reference=reference)
  assert result["frechet_feature_distance"] == pytest.approx(0.0, abs=1e-6)
  assert result["floor_frechet_feature_distance"] == pytest.approx(0.0, abs=1e-6)
  assert result["precision"] == 1.0 and result["recall"] == 1.0
  assert result["num_samples"] == 150 and result["num_reference"] == 150
  assert "class_accuracy" not in result


def test_shifted_samples_score_worse_than_the_floor(net):
  reference, train = _images(200, 0), _images(200, 1)
  fair = sample_quality(_images(200, 2), net, reference, train_reference=train)
  shifted = sample_quality(np.clip(_images(200, 2) + 0.6, -1, 1), net, reference, train_reference=train)
  # the floor: the distance of the train set's features to the reference's, computed independently
  floor = frechet_distance(
    *feature_statistics(net.features(train)), *feature_statistics(net.features(reference))
  )
  assert fair["floor_frechet_feature_distance"] == pytest.approx(floor, rel=1e-9)
  assert floor > 0
  assert shifted["frechet_feature_distance"] > 10 * fair["frechet_feature_distance"]
  assert shifted["precision"] < fair["precision"] and shifted["recall"] < fair["recall"]


def test_class_accuracy_is_the_networks_agreement_with_the_labels(net):
  samples = _images(90, 3)
  predicted = np.argmax(net.outputs(samples)[1], axis=1)
  labels = predicted.copy()
  labels[:30] = (labels[:30] + 1) % 4  # a third deliberately wrong
  result = sample_quality(samples, net, _images(50, 4), labels=labels)
  assert result["class_accuracy"] == pytest.approx(np.mean(net.predict(samples) == labels), abs=1e-12)
  assert result["class_accuracy"] == pytest.approx(60 / 90, abs=1e-12)
  with pytest.raises(DataError, match="labels must be integer class ids"):
    sample_quality(samples, net, _images(50, 4), labels=labels[:10])
