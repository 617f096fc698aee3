"""config.freeze: frozen parameters never change and get no optimizer state; bad patterns fail clearly."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ae_jax.core import parallel
from ae_jax.data import get_dataset
from ae_jax.data.pipeline import train_batches
from ae_jax.runner import loop
from ae_jax.runner.config import default_config
from ae_jax.training import checkpoint, optim, train
from ae_jax.training.optim import make_optimizer

OTHER = {"encoder": "decoder", "decoder": "encoder"}


def _use_model(config, name):
  if name == "tied_ae":
    config.model = ml_collections.ConfigDict({"name": "tied_ae", "dims": (32, 16, 4)})
  return config


def _initial_state(config):
  dataset = get_dataset(config.data)
  train_src, info = dataset.split("train"), dataset.info
  model, objective, tx, schedule = train.build(config, info.shape)
  state = train.create_train_state(model, tx, info.preprocess(train_src[0], 0)["x"][None], config.seed)
  return state, (train_src, info, model, objective, tx, schedule)


def _train(config, steps=3):
  """(initial state, state after `steps` pmapped train steps) on 8 devices."""
  state, (train_src, info, model, objective, tx, schedule) = _initial_state(config)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)
  p_step = jax.pmap(step, axis_name=parallel.AXIS)
  batches = train_batches(train_src, info.preprocess, global_batch=config.batch_size, seed=0, num_threads=1)
  rstate = parallel.replicate(state)
  for _ in range(steps):
    rstate, metrics = p_step(rstate, parallel.shard(parallel.split_for_devices(next(batches))))
    assert float(metrics["nonfinite"][0]) == 0.0
  return jax.device_get(state), jax.device_get(parallel.unreplicate(rstate))


def _size(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("model", ["mlp_ae", "tied_ae"])
@pytest.mark.parametrize("frozen", ["decoder", "encoder"])
def test_frozen_half_is_bit_exact_and_other_half_trains(tiny_config, model, frozen):
  """freeze=("decoder/.*",) trains only the encoder, and the reverse; for tied_ae the shared kernels are
  encoder parameters, so freezing the decoder freezes only its biases."""
  config = _use_model(tiny_config, model)
  config.freeze = (f"{frozen}/.*",)
  initial, trained = _train(config)
  chex.assert_trees_all_equal(trained.params[frozen], initial.params[frozen])
  moved = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), trained.params[OTHER[frozen]], initial.params[OTHER[frozen]]
  )
  assert all(jax.tree.leaves(moved)), moved

  # Adam's moments exist only for the trainable half: every float array in the optimizer state is a
  # mu or nu of a trainable parameter (the frozen ones are optax.MaskedNode placeholders, not arrays).
  floats = [x for x in jax.tree.leaves(trained.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert sum(x.size for x in floats) == 2 * _size(trained.params[OTHER[frozen]])
  assert len(floats) == 2 * len(jax.tree.leaves(trained.params[OTHER[frozen]]))


def test_unfrozen_optimizer_state_covers_every_parameter(tiny_config):
  """The comparison point for the test above: without freeze, Adam keeps two moments per parameter."""
  state, _ = _initial_state(tiny_config)
  floats = [x for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert sum(x.size for x in floats) == 2 * _size(state.params)


def test_clipping_sees_only_trainable_parameters():
  """With a huge gradient on a frozen parameter, the trainable update equals that of the same optimizer
  (global-norm clipping included) run on the trainable parameters alone."""
  cfg = default_config().optimizer
  cfg.name, cfg.momentum, cfg.learning_rate, cfg.grad_clip_norm = "sgd", 0.0, 0.1, 1.0
  params = {"encoder": {"kernel": jnp.ones((3, 2))}, "decoder": {"kernel": jnp.ones((2, 3))}}
  grads = {"encoder": {"kernel": jnp.full((3, 2), 0.2)}, "decoder": {"kernel": jnp.full((2, 3), 1e3)}}
  tx, _ = make_optimizer(cfg, 10, freeze=("decoder/.*",))
  updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  plain, _ = make_optimizer(cfg, 10)
  alone, _ = jax.jit(lambda g, p: plain.update(g, plain.init(p), p))(grads["encoder"], params["encoder"])
  chex.assert_trees_all_close(updates["encoder"], alone)
  np.testing.assert_allclose(updates["encoder"]["kernel"], -0.1 * 0.2)  # norm 0.49 < 1: not clipped
  chex.assert_trees_all_equal(updates["decoder"]["kernel"], jnp.zeros((2, 3)))


def test_grad_norm_reports_only_the_trainable_gradient(tiny_config):
  """The step's grad_norm is the norm of the encoder's gradient alone when the decoder is frozen."""
  tiny_config.freeze = ("decoder/.*",)
  state, (train_src, info, model, objective, tx, schedule) = _initial_state(tiny_config)
  batch = next(train_batches(train_src, info.preprocess, global_batch=16, seed=0, num_threads=1))
  deps = dict(model=model, objective=objective, tx=tx, learning_rate=schedule)
  mask = optim.trainable_mask(train.freeze_patterns(tiny_config))

  def run(**kw):
    step = jax.pmap(functools.partial(train.train_step, **deps, **kw), axis_name=parallel.AXIS)
    _, metrics = step(parallel.replicate(state), parallel.shard(parallel.split_for_devices(batch)))
    return metrics["grad_norm"][0]

  def loss(params):  # the same loss on the whole batch, one device
    outputs, _ = train.apply_model(model, params, state.model_state, batch, train=True, rng=state.rng)
    return objective(outputs, batch, state.step)[0].mean()

  grads = jax.jit(jax.grad(loss))(state.params)
  norm = jax.jit(optax.tree.norm)
  np.testing.assert_allclose(run(trainable=mask), norm(grads["encoder"]), rtol=1e-5)
  np.testing.assert_allclose(run(), norm(grads), rtol=1e-5)  # without the mask: everything
  assert float(norm(grads["decoder"])) > 0.1 * float(norm(grads))


@pytest.mark.parametrize("pattern", ["decoder/nothing", "decoder", "Dense_0/kernel"])
def test_pattern_matching_nothing_is_one_clear_error(tiny_config, pattern):
  tiny_config.freeze = ("encoder/.*", pattern)
  with pytest.raises(ValueError, match=f"config.freeze pattern '{pattern}' matches no parameter") as info:
    _initial_state(tiny_config)
  message = str(info.value)
  assert "\n" not in message and "decoder/Dense_0/kernel" in message  # real paths, to copy from


def test_invalid_regex_fails_when_the_optimizer_is_built():
  with pytest.raises(ValueError, match=r"config.freeze pattern 'encoder/\(' is not a valid regex"):
    make_optimizer(default_config().optimizer, 10, freeze=("encoder/(",))


@pytest.mark.training
def test_train_and_evaluate_keeps_frozen_decoder(tiny_config, tmp_path):
  """End to end (with checkpoints every 4 steps): the final decoder is the seed's initial decoder."""
  tiny_config.freeze = ("decoder/.*",)
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path))
  final = jax.device_get(summary["state"].params)
  initial, _ = _initial_state(tiny_config)
  chex.assert_trees_all_equal(final["decoder"], jax.device_get(initial.params["decoder"]))
  assert not np.array_equal(final["encoder"]["code"]["kernel"], initial.params["encoder"]["code"]["kernel"])


@pytest.mark.training
def test_frozen_run_resumes_bit_exactly(tiny_config, tmp_path):
  """The masked optimizer state survives an Orbax save and restore: 6 + 6 steps == 12 steps."""
  tiny_config.freeze = ("encoder/.*",)
  full = loop.train_and_evaluate(tiny_config, str(tmp_path / "full"))
  half = tiny_config.copy_and_resolve_references()
  half.total_steps = 6
  loop.train_and_evaluate(half, str(tmp_path / "split"))
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  assert resumed["step"] == 12
  chex.assert_trees_all_equal(jax.device_get(full["state"]), jax.device_get(resumed["state"]))
  assert checkpoint.Checkpointer(str(tmp_path / "split" / "checkpoints"), keep=3).latest_step() == 12
