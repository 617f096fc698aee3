"""Sample quality in a feature network's space: a set scored against itself is perfect, shifted or
collapsed samples score worse than the floor, the floor is the distance between two real sets, and class
accuracy is the network's own verdict. The network is an untrained FeatureCNN (its features are a fixed
function of the images: enough here) on images whose bright quadrant is their class."""

import numpy as np
import pytest

from ae_jax.core.errors import DataError
from ae_jax.metrics.feature_network import FeatureCNN, FeatureNetwork, Settings, init_params
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance
from ae_jax.metrics.sample_quality import sample_quality

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def net():
  module = FeatureCNN(4, channels=(4, 8), features=16)
  return FeatureNetwork(
    module,
    init_params(module, 0, SHAPE),
    dataset="toy",
    shape=SHAPE,
    test_accuracy=0.5,
    settings=Settings(channels=(4, 8), features=16),
    to_unit=lambda x: (x + 1.0) / 2.0,  # images in [-1, 1]
    batch_size=64,
  )


def _images(n, seed, classes=(0, 1, 2, 3)):
  """Images in [-1, 1] [n, 8, 8, 1]: noise with one bright quadrant, drawn from `classes`; and labels."""
  rng = np.random.default_rng(seed)
  labels = rng.choice(classes, n)
  images = rng.uniform(0, 0.25, (n, *SHAPE))
  for i, label in enumerate(labels):
    top, left = divmod(int(label), 2)
    images[i, top * 4 : top * 4 + 4, left * 4 : left * 4 + 4] += 0.6
  return (images * 2 - 1).astype(np.float32), labels


def test_reference_against_itself_is_perfect(net):
  reference = _images(150, 0)[0]
  result = sample_quality(reference, net, reference, train_reference=reference)
  assert result["frechet_feature_distance"] == pytest.approx(0.0, abs=1e-6)
  assert result["floor_frechet_feature_distance"] == pytest.approx(0.0, abs=1e-6)
  assert result["precision"] == 1.0 and result["recall"] == 1.0
  assert result["num_samples"] == 150 and result["num_reference"] == 150
  assert "class_accuracy" not in result


def test_shifted_or_collapsed_samples_score_worse_than_the_floor(net):
  reference, train, fair = _images(300, 0)[0], _images(300, 1)[0], _images(300, 2)[0]
  result = sample_quality(fair, net, reference, train_reference=train)
  # the floor: the distance between the train set's features and the reference's, computed independently
  floor = frechet_distance(
    *feature_statistics(net.features(train)), *feature_statistics(net.features(reference))
  )
  assert result["floor_frechet_feature_distance"] == pytest.approx(floor, rel=1e-9)
  assert 0 < floor and result["frechet_feature_distance"] < 3 * floor
  shifted = sample_quality(np.clip(fair + 0.5, -1, 1), net, reference)
  collapsed = sample_quality(_images(300, 2, classes=(0,))[0], net, reference)
  for worse in (shifted, collapsed):
    assert worse["frechet_feature_distance"] > 10 * floor
  assert shifted["precision"] < 0.5 * result["precision"]
  assert collapsed["recall"] < 0.5 * result["recall"]  # one class of four: most real images uncovered


def test_class_accuracy_is_the_networks_agreement_with_the_labels(net):
  samples = _images(90, 3)[0]
  labels = np.argmax(net.outputs(samples)[1], axis=1)
  labels[:30] = (labels[:30] + 1) % 4  # a third deliberately wrong
  result = sample_quality(samples, net, _images(50, 4)[0], labels=labels)
  assert result["class_accuracy"] == pytest.approx(np.mean(net.predict(samples) == labels), abs=1e-12)
  assert result["class_accuracy"] == pytest.approx(60 / 90, abs=1e-12)
  with pytest.raises(DataError, match="labels must be integer class ids"):
    sample_quality(samples, net, _images(50, 4)[0], labels=labels[:10])
