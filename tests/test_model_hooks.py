"""What the trainer offers models beyond x: the padding mask, batch-level metrics, cross-device statistics."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ae_jax import models
from ae_jax.core import parallel
from ae_jax.runner.bottleneck import inspect_model
from ae_jax.training import outputs, train


class _SyncedBatchNormAE(nn.Module):
  """Dense -> BatchNorm (statistics averaged over the device axis) -> Dense, reporting a batch metric."""

  input_shape: tuple = (4,)
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train=False, mask=None):
    h = nn.Dense(3)(x)
    h = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, momentum=0.5)(h)
    seen = jnp.ones(x.shape[:1]) if mask is None else mask[:, 0]
    mean_abs = jnp.mean(jnp.abs(h))
    if self.axis_name is not None:
      mean_abs = jax.lax.pmean(mean_abs, self.axis_name)
    return {"code": h, "recon": nn.Dense(4)(h), "seen": seen, "metrics": {"code_mean_abs": mean_abs}}


def _setup(monkeypatch, tiny_config):
  spec = models.ModelSpec(name="bn_toy", cls=_SyncedBatchNormAE, abilities=frozenset({"masked"}))
  monkeypatch.setitem(models.MODELS, "bn_toy", spec)
  tiny_config.model = {"name": "bn_toy"}
  # SGD: the bias before BatchNorm has a zero true gradient, and Adam would scale its float noise up to lr
  tiny_config.optimizer.name, tiny_config.optimizer.momentum = "sgd", 0.0
  model, objective, tx, schedule = train.build(tiny_config, (4,))
  assert model.axis_name == parallel.AXIS  # build() binds the device axis for models that take one
  x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
  state = train.create_train_state(model, tx, x[:1], 0)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)
  return model, state, step, objective, x


def _run(step, state, batch, devices):
  p_step = jax.pmap(step, axis_name=parallel.AXIS, devices=devices)
  rstate, metrics = p_step(
    parallel.replicate(state, devices),
    parallel.shard(parallel.split_for_devices(batch, len(devices)), devices),
  )
  return jax.device_get(parallel.unreplicate(rstate)), jax.device_get(metrics)


def test_synced_batchnorm_and_metrics_match_one_device(monkeypatch, tiny_config):
  model, state, step, _, x = _setup(monkeypatch, tiny_config)
  batch = {"x": x, "mask": np.ones((16, 4), np.float32)}
  s8, m8 = _run(step, state, batch, jax.local_devices())
  s1, m1 = _run(step, state, batch, jax.local_devices()[:1])
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s8.model_state, s1.model_state, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m8["code_mean_abs"][0], m1["code_mean_abs"][0], rtol=1e-5)
  # the running statistics moved towards the global batch statistics of the first layer's output
  assert not np.allclose(s8.model_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


def test_mask_reaches_models_that_take_it(monkeypatch, tiny_config):
  model, state, _, _, x = _setup(monkeypatch, tiny_config)
  mask = np.zeros((16, 4), np.float32)
  mask[:5] = 1.0
  run = parallel.with_named_axis(
    lambda s, b: train.apply_model(model, s.params, s.model_state, b, train=False, rng=s.rng)[0]
  )
  out = jax.jit(run)(state, {"x": x, "mask": mask})
  np.testing.assert_array_equal(out["seen"], mask[:, 0])


def test_models_with_a_device_axis_run_outside_pmap(monkeypatch, tiny_config):
  """Reconstruction grids and the inspector run such models on one device (axis bound with size 1)."""
  model, state, _, _, x = _setup(monkeypatch, tiny_config)
  out = outputs.reconstruct(model, state, x)
  assert out["recon"].shape == (16, 4) and "metrics" not in out
  chunked = outputs.reconstruct(model, state, x, batch_size=5)  # 5 + 5 + 5 + 1, one jitted function
  np.testing.assert_allclose(chunked["recon"], out["recon"], rtol=1e-6, atol=1e-6)
  report = inspect_model(model, (4,))
  assert report.total_params == sum(p.size for p in jax.tree.leaves(state.params))
