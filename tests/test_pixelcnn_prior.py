"""The gated PixelCNN prior: causal in raster order without a blind spot, a normalised distribution (the
brute-force sum over every code grid of a tiny vocabulary), greedy sampling, its errors, and training and
sampling through the loop on a tiny VQ-VAE's codes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import models
from ae_jax.core.errors import ConfigError
from ae_jax.generation import generate, stage_one
from ae_jax.generation.pixelcnn_prior import PixelCNNPrior
from ae_jax.runner import loop
from experiments.configs import prior_pixelcnn
from tests.conftest import train_tiny_vqvae

TINY = dict(features=8, num_layers=3, kernel_size=3, head_features=16)


def _model(vocab=6, grid=(3, 4), **kw):
  return PixelCNNPrior(vocab_size=vocab, grid=grid, input_shape=(grid[0] * grid[1],), **{**TINY, **kw})


def _init(model, batch=2, seed=0):
  length = model.input_shape[0]
  tokens = jnp.asarray(np.random.default_rng(seed).integers(0, model.vocab_size, (batch, length)), jnp.int32)
  labels = jnp.zeros((batch,), jnp.int32) if model.num_classes else None
  return model.init(jax.random.PRNGKey(seed), tokens, labels=labels), tokens


def test_logits_at_t_read_only_earlier_codes_and_every_one_of_them():
  """Changing code t leaves logits[:, :t+1] unchanged and changes logits at every later position (the
  vertical stack feeds the horizontal one: no blind spot above and to the right)."""
  model = _model()
  variables, tokens = _init(model)
  logits = jax.jit(lambda t: model.apply(variables, t, method="logits"))
  base = np.asarray(logits(tokens))
  for t in range(tokens.shape[1]):
    changed = np.asarray(logits(tokens.at[:, t].set((tokens[:, t] + 1) % model.vocab_size)))
    moved = np.abs(changed - base).max(axis=(0, 2))
    assert (moved[: t + 1] == 0).all(), (t, moved)
    assert (moved[t + 1 :] > 0).all(), (t, moved)


@pytest.mark.parametrize("num_classes", [0, 2])
def test_the_probabilities_of_every_grid_sum_to_one(num_classes):
  """K = 3 codes on a 2 x 2 grid: sum over all 81 grids of exp(-code_nll) = 1, for each class."""
  model = _model(vocab=3, grid=(2, 2), num_classes=num_classes)
  variables, _ = _init(model)
  grids = jnp.asarray(list(itertools.product(range(3), repeat=4)), jnp.int32)
  nll = jax.jit(lambda x, y: model.apply(variables, x, labels=y)["code_nll"])
  for label in range(max(num_classes, 1)):
    labels = jnp.full((len(grids),), label, jnp.int32) if num_classes else None
    total = np.exp(-np.asarray(nll(grids, labels), np.float64)).sum()
    assert total == pytest.approx(1.0, abs=1e-5)
  if num_classes:
    by_class = [nll(grids, jnp.full((len(grids),), c, jnp.int32)) for c in range(2)]
    assert not np.allclose(by_class[0], by_class[1])  # the class bias reaches the logits


def test_temperature_zero_draws_the_argmax_at_every_position():
  model = _model()
  variables, _ = _init(model)
  logits_fn = lambda t, y: model.apply(variables, t, y, method="logits")  # noqa: E731
  options = generate.SampleOptions(temperature=0.0)
  tokens = jax.jit(lambda key: model.draw(variables, key, None, options))(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(tokens[0], np.argmax(logits_fn(tokens, None)[0], axis=-1))


def test_grids_it_cannot_model_are_one_clear_error():
  tokens = jnp.zeros((1, 8), jnp.int32)
  for grid, message in [((2, 2, 2), "residual stages .* use ar_prior"), ((3, 3), "h \\* w = 8 codes")]:
    model = PixelCNNPrior(vocab_size=4, grid=grid, input_shape=(8,), **TINY)
    with pytest.raises(ConfigError, match=message):
      model.init(jax.random.PRNGKey(0), tokens)
  with pytest.raises(ConfigError, match="kernel_size must be odd"):
    _init(_model(kernel_size=4))
  assert {"code_prior", "conditional"} <= models.abilities("pixelcnn_prior")


@pytest.fixture(scope="module")
def pixelcnn_run(tmp_path_factory):
  stage = str(tmp_path_factory.mktemp("stage_one"))
  train_tiny_vqvae(stage, 4)
  config = prior_pixelcnn.get_config(f"{stage},conditional")
  config.model.update(TINY)
  config.batch_size = config.eval_batch_size = 16
  config.total_steps, config.log_every, config.checkpoint_every = 30, 5, 30
  config.optimizer.warmup_steps, config.optimizer.learning_rate = 2, 3e-3
  config.evals.test.every = 0
  path = str(tmp_path_factory.mktemp("prior_pixelcnn"))
  return path, loop.train_and_evaluate(config, path)


@pytest.mark.training
def test_it_trains_through_the_loop_and_samples_the_same_on_one_or_eight_devices(pixelcnn_run):
  path, summary = pixelcnn_run
  m = summary["metrics"]
  assert tuple(stage_one.saved_config(path)[1].model.grid) == (2, 2)  # read from the stage one
  assert m["likelihood/uniform_bits_per_code"] == 4.0 and m["likelihood/bits_per_code"] < 4.0
  np.testing.assert_allclose(m["likelihood/nll"], m["test/code_nll"], rtol=1e-5)
  run = stage_one.load_run(path)
  options = generate.SampleOptions(temperature=1.0, label="all")
  eight = generate.sample_tokens(run, 10, seed=3, options=options, per_device=2)
  one = generate.sample_tokens(
    run, 10, seed=3, options=options, per_device=2, devices=jax.local_devices()[:1]
  )
  np.testing.assert_array_equal(eight, one)
  assert eight.shape == (10, 4) and eight.min() >= 0 and eight.max() < 16
  with pytest.raises(ConfigError, match="--steps is not an option of this prior"):
    generate.check_options(run, options, 4, given=["steps"])
