"""The feature network ae-jax trains for sample-quality metrics: deterministic training, a separable task
learnt, predictions and features batched consistently, the cache reused (and retrained when a setting
changes), and the shipped configs."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import data_config, fashion_mnist
from ae_jax.data.images import image_dataset
from ae_jax.metrics import feature_network

TINY = feature_network.Settings(steps=6, batch_size=16, channels=(4, 8), features=16)


def _synthetic():
  return data_config("synthetic", shape=(8, 8, 1), num_train=64, num_test=32)


def quadrant_images(n, seed, side=8):
  """uint8 [n, side, side, 1] noise images whose class (0-3) is the quadrant that is bright, and labels."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, n)
  images = rng.integers(0, 60, (n, side, side, 1))
  half = side // 2
  for i, label in enumerate(labels):
    top, left = divmod(int(label), 2)
    images[i, top * half : (top + 1) * half, left * half : (left + 1) * half] += 150
  return images.astype(np.uint8), labels


def quadrant_dataset(num_train=256, num_test=128):
  """An opened labelled image Dataset (scale "symmetric", pixels in [-1, 1]) of quadrant images."""
  splits = {}
  for split, n, seed in (("train", num_train, 0), ("test", num_test, 1)):
    images, labels = quadrant_images(n, seed)
    splits[split] = [{"image": im, "label": int(lb)} for im, lb in zip(images, labels, strict=True)]
  return image_dataset(
    "quadrants", data_config("synthetic", shape=(8, 8, 1)), splits, (8, 8, 1), tuple("0123")
  )


def _leaves(net):
  return jax.tree.leaves(net.params)


def test_training_is_bitwise_deterministic_for_a_seed():
  first = feature_network.train_feature_network(_synthetic(), TINY)
  again = feature_network.train_feature_network(_synthetic(), TINY)
  other = feature_network.train_feature_network(_synthetic(), dataclasses.replace(TINY, seed=1))
  assert len(_leaves(first)) == 8  # 2 conv + 2 dense layers, kernels and biases
  assert all(np.array_equal(a, b) for a, b in zip(_leaves(first), _leaves(again), strict=True))
  assert not any(np.array_equal(a, b) for a, b in zip(_leaves(first), _leaves(other), strict=True))
  x = np.linspace(-1, 1, 5 * 64, dtype=np.float32).reshape(5, 8, 8, 1)
  assert np.array_equal(first.features(x), again.features(x))


def test_learns_a_separable_task_and_reports_its_test_accuracy():
  dataset = quadrant_dataset()
  settings = feature_network.Settings(steps=80, batch_size=32, seed=0, channels=(8, 16), features=32)
  net = feature_network.train_feature_network(dataset, settings)
  images, labels = quadrant_images(128, seed=1)  # the test split, in uint8
  predicted = net.predict(images / 127.5 - 1.0)  # the dataset's "symmetric" range
  assert net.test_accuracy == pytest.approx(np.mean(predicted == labels), abs=1e-12)
  assert net.test_accuracy > 0.9
  assert "trained by ae-jax on quadrants" in net.describe() and "not Inception" in net.describe()


def test_outputs_are_batched_consistently():
  """Any batch size (short last batches padded) gives each image's features and logits of one pass."""
  net = feature_network.train_feature_network(_synthetic(), TINY)
  x = np.random.default_rng(0).uniform(-1, 1, (7, 8, 8, 1)).astype(np.float32)
  one = [net.outputs(x[i : i + 1]) for i in range(7)]
  net.batch_size = 3
  features, logits = net.outputs(x)
  assert features.dtype == np.float32 and features.shape == (7, 16) and logits.shape == (7, 10)
  np.testing.assert_allclose(features, np.concatenate([f for f, _ in one]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(net.predict(x), np.argmax(np.concatenate([lg for _, lg in one]), axis=1))
  assert np.all(features >= 0)  # post-ReLU
  with pytest.raises(DataError, match=r"expects images \[N, 8, 8, 1\]"):
    net.features(np.zeros((2, 8, 8, 3)))
  with pytest.raises(DataError, match="NaN"):
    net.features(np.full((2, 8, 8, 1), np.nan))


def test_cache_is_reused_across_scales_and_a_changed_setting_retrains(tmp_path, monkeypatch):
  calls = []
  real_train = feature_network.train_feature_network

  def counting(data, settings):
    calls.append(settings)
    return real_train(data, settings)

  monkeypatch.setattr(feature_network, "train_feature_network", counting)
  symmetric = _synthetic()
  first = feature_network.load_or_train(symmetric, tmp_path, TINY)
  assert len(calls) == 1
  params_path, meta_path = feature_network.cache_paths(symmetric, first.settings, tmp_path)
  assert params_path.parent == tmp_path and params_path.name.startswith("synthetic-")
  meta = json.loads(meta_path.read_text())
  assert meta["test_accuracy"] == first.test_accuracy and meta["settings"]["steps"] == TINY.steps
  assert "not Inception" in meta["what"]

  again = feature_network.load_or_train(symmetric, tmp_path, TINY)
  unit = data_config("synthetic", shape=(8, 8, 1), num_train=64, num_test=32, scale="unit")
  in_unit = feature_network.load_or_train(unit, tmp_path, TINY)
  assert len(calls) == 1  # both read from the cache: the network sees [0, 1] pixels whatever the scale
  assert all(np.array_equal(a, b) for a, b in zip(_leaves(first), _leaves(again), strict=True))
  assert again.test_accuracy == first.test_accuracy
  pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1))
  np.testing.assert_allclose(
    first.features(pixels / 127.5 - 1.0), in_unit.features(pixels / 255.0), rtol=1e-5, atol=1e-6
  )

  feature_network.load_or_train(symmetric, tmp_path, dataclasses.replace(TINY, steps=7))
  feature_network.load_or_train(data_config("synthetic", shape=(8, 8, 1), num_train=65), tmp_path, TINY)
  assert len(calls) == 3 and len(list(tmp_path.glob("*.msgpack"))) == 3


def test_a_damaged_cache_file_is_a_data_error(tmp_path):
  net = feature_network.load_or_train(_synthetic(), tmp_path, TINY)
  params_path, _ = feature_network.cache_paths(_synthetic(), net.settings, tmp_path)
  params_path.write_bytes(b"not msgpack")
  with pytest.raises(DataError, match="delete both to retrain"):
    feature_network.load_or_train(_synthetic(), tmp_path, TINY)


def test_bad_settings_and_unlabelled_data_fail_before_training():
  with pytest.raises(ConfigError, match="must be positive"):
    feature_network.train_feature_network(_synthetic(), feature_network.Settings(steps=0))
  dataset = quadrant_dataset(num_train=8, num_test=8)
  unlabelled = dataclasses.replace(dataset, info=dataclasses.replace(dataset.info, class_names=None))
  with pytest.raises(ConfigError, match="no class labels"):
    feature_network.train_feature_network(unlabelled, feature_network.Settings(steps=1))


def test_shipped_configs():
  from experiments.configs import feature_network as configs

  for name in ("fashion_mnist", "cifar10"):
    config = configs.get_config(name)
    assert config.data.name == name
    settings = feature_network.Settings.from_config(config)
    assert set(config.keys()) == {"data", *dataclasses.asdict(settings)}
  with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
    configs.get_config("cifar_10")


def test_each_dataset_has_one_network_for_its_config_sampling_and_evaluators():
  """settings_for (used by experiments.sample --quality and the sample_quality evaluator) gives the
  shipped config's settings; other datasets the defaults; feature_steps changes the steps only."""
  from experiments.configs import feature_network as configs

  for name in ("fashion_mnist", "cifar10"):
    config = configs.get_config(name)
    assert feature_network.settings_for(config.data) == feature_network.Settings.from_config(config)
  cifar = feature_network.settings_for(data_config("cifar10", scale="centered"))
  assert cifar.channels == (32, 64, 128) and cifar.steps == 3000
  assert feature_network.settings_for(data_config("cifar10"), 7) == dataclasses.replace(cifar, steps=7)
  assert feature_network.settings_for(data_config("mnist")) == feature_network.Settings()


@pytest.mark.integration
@pytest.mark.skipif(
  not fashion_mnist.has_idx_files(fashion_mnist.DEBIAN_IDX_DIR),
  reason=f"Fashion-MNIST idx files not in {fashion_mnist.DEBIAN_IDX_DIR}: "
  "apt-get install dataset-fashion-mnist",
)
def test_learns_real_fashion_mnist(tmp_path):
  """200 steps of the shipped architecture already classify most of the real test set (10 classes)."""
  from experiments.configs import feature_network as configs

  config = configs.get_config("fashion_mnist")
  config.data.data_dir = str(tmp_path / "tfds")  # prepared from the idx files, no network
  config.data.idx_dir = fashion_mnist.DEBIAN_IDX_DIR
  settings = feature_network.Settings.from_config(config)
  net = feature_network.train_feature_network(
    config.data, dataclasses.replace(settings, steps=200, batch_size=64)
  )
  assert net.test_accuracy > 0.75
