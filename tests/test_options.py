"""Config-driven options: learning-rate schedules, dynamic binarisation, tfds datasets, reports."""

import math
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from ae_jax import data
from ae_jax.core import visualize
from ae_jax.evaluators import batches, pictures
from ae_jax.runner.config import default_config
from ae_jax.training import optim


def _opt(**kw):
  cfg = default_config().optimizer
  cfg.update(kw)
  return cfg


def test_piecewise_schedule_matches_the_iwae_paper_rule():
  """lr * 10^(-i/7) during stage i, stage i lasting 3^i epochs."""
  epochs = [3**i for i in range(8)]
  bounds = tuple(sum(epochs[: i + 1]) * 10 for i in range(7))
  sched = optim.make_schedule(
    _opt(
      schedule="piecewise",
      learning_rate=1e-3,
      boundaries=bounds,
      scales=tuple(10 ** (-i / 7) for i in range(8)),
    ),
    total_steps=10,
  )
  for stage, start in enumerate((0, *bounds)):
    assert float(sched(start)) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-6)
  with pytest.raises(ValueError, match="one entry more than boundaries"):
    optim.make_schedule(_opt(schedule="piecewise", boundaries=(5,), scales=(1.0,)), 10)


@pytest.mark.parametrize("name", ["constant", "cosine", "warmup_cosine"])
def test_schedules_start_and_end_where_expected(name):
  sched = optim.make_schedule(_opt(schedule=name, learning_rate=0.1, warmup_steps=10), total_steps=100)
  start = {"constant": 0.0, "cosine": 0.1, "warmup_cosine": 0.0}[name]
  assert float(sched(0)) == pytest.approx(start, rel=1e-6, abs=1e-9)
  if name == "constant":
    assert float(sched(10)) == pytest.approx(0.1)  # linear warm-up then constant
  else:
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)


def test_sgd_and_clipping_build_working_optimizers():
  params = {"w": np.ones(3, np.float32)}
  grads = {"w": np.full(3, 10.0, np.float32)}
  tx, _ = optim.make_optimizer(_opt(name="sgd", momentum=0.0, learning_rate=0.1, grad_clip_norm=1.0), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 0.1, rtol=1e-6)  # clipped to norm 1, times lr


def test_dynamic_binarisation_is_bernoulli_and_keyed_by_position():
  image = np.full((28, 28, 1), 51, np.uint8)  # p = 0.2
  draws = np.stack([data.binarize(image, i) for i in range(400)])
  assert set(np.unique(draws)) <= {0.0, 1.0}
  assert draws.mean() == pytest.approx(0.2, abs=3 * math.sqrt(0.2 * 0.8 / draws.size))
  np.testing.assert_array_equal(data.binarize(image, 7), data.binarize(image, 7))
  assert not np.array_equal(data.binarize(image, 7), data.binarize(image, 8))
  assert data.binarize(np.zeros((4, 4, 1), np.uint8), 0).sum() == 0
  assert data.binarize(np.full((4, 4, 1), 255, np.uint8), 0).sum() == 16


def test_binarized_preprocess_and_display():
  c = data.data_config(
    "synthetic", binarize="dynamic", scale="unit", shape=(8, 8, 1), num_train=16, num_test=8
  )
  dataset = data.get_dataset(c)
  train, info = dataset.split("train"), dataset.info
  x = info.preprocess(train[0], 3)["x"]
  assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
  np.testing.assert_array_equal(info.to_image(x), x)
  c.binarize = "threshold"
  with pytest.raises(ValueError, match="config.data.binarize"):
    data.get_dataset(c)


def test_missing_tfds_dataset_gives_one_clear_error(tmp_path):
  c = data.data_config("mnist", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="tfds dataset 'mnist'.*data.download=True"):
    data.get_dataset(c)
  assert data.example_spec(c).shape == (28, 28, 1)


def test_latent_points_pca_recovers_the_dominant_plane():
  rng = np.random.default_rng(0)
  plane = rng.normal(size=(500, 2)) * [5.0, 3.0]
  basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]
  codes = plane @ basis.T + 0.01 * rng.normal(size=(500, 6))
  points, title = pictures.latent_points(codes)
  assert points.shape == (500, 2) and "principal components" in title
  # the 2-D view spans the same plane: projecting back loses almost nothing
  centred = codes - codes.mean(0)
  resid = centred - points @ np.linalg.lstsq(points, centred, rcond=None)[0]
  assert np.linalg.norm(resid) / np.linalg.norm(centred) < 0.01
  same, title2 = pictures.latent_points(plane)
  np.testing.assert_array_equal(same, plane)
  assert title2 == "latent code"


def test_image_grid_and_scatter_files(tmp_path):
  images = np.random.default_rng(0).uniform(size=(5, 4, 4, 1))
  grid = visualize.image_grid(images, ncols=3, pad=1)
  assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[1:5, 1:5, 0], (images[0, ..., 0] * 255).round())
  path = visualize.save_reconstructions(str(tmp_path / "r.png"), images, images, ncols=3)
  assert os.path.getsize(path) > 0 and not os.path.exists(path + ".tmp")
  pts = np.random.default_rng(1).normal(size=(30, 2))
  out = visualize.save_scatter(str(tmp_path / "s.png"), pts, np.arange(30) % 3, ("a", "b", "c"), "t")
  assert os.path.getsize(out) > 1000


def test_typo_inside_a_replaced_section_is_caught():
  c = default_config()
  c.optimizer = ml_collections.ConfigDict({"name": "adam"})
  c.optimizer.learning_rte = 1.0
  from ae_jax.runner.config import check_config

  with pytest.raises(ValueError, match="did you mean 'optimizer.learning_rate'"):
    check_config(c, num_processes=1, local_devices=jax.local_device_count())


def test_kl_warmup_ramps_the_weight_linearly_from_zero():
  from ae_jax.training import train

  c = default_config()
  c.loss = ml_collections.ConfigDict({"bernoulli_nll": 1.0, "kl": 4.0})  # beta = 4
  c.loss_schedules = ml_collections.ConfigDict({"kl": 100})
  weights = train.loss_weights(c)
  assert weights["bernoulli_nll"] == 1.0
  np.testing.assert_allclose([float(weights["kl"](s)) for s in (0, 50, 100, 1000)], [0.0, 2.0, 4.0, 4.0])
  c.loss_schedules = ml_collections.ConfigDict({"kll": 100})
  with pytest.raises(ValueError, match="not in config.loss"):
    train.loss_weights(c)


def test_mean_image_baseline_ignores_padded_positions():
  """The baseline predicts the per-position mean of real training frames and scores real test frames only."""
  info = data.DatasetInfo(data.ExampleSpec((3, 2)), lambda r, i: dict(r))
  train = [
    {"x": np.array([[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]), "mask": np.array([1.0, 1.0, 0.0])},
    {"x": np.array([[3.0, 3.0], [5.0, 5.0], [7.0, 7.0]]), "mask": np.array([1.0, 1.0, 1.0])},
  ]
  test = [{"x": np.array([[2.0, 2.0], [4.0, 4.0], [-99.0, -99.0]]), "mask": np.array([1.0, 0.0, 0.0])}]
  # means per position: [2, 4, 7]; the one real test frame [2, 2] matches its mean exactly
  assert batches.mean_image_mse(train, test, info) == 0.0
  test[0]["x"][0] = [4.0, 4.0]
  assert batches.mean_image_mse(train, test, info) == pytest.approx(4.0)
