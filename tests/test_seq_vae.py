"""The causal-conv sequence VAE: causality, layer shapes, padding masks, synchronised masked BatchNorm."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ae_jax import models
from ae_jax.core import parallel
from ae_jax.models import seq_vae
from ae_jax.models.seq_vae import CausalConv1d, MaskedBatchNorm, SeqVAEConv, frame_noise
from ae_jax.runner.bottleneck import inspect_model
from ae_jax.training import train

F, Z, T = 5, 4, 6  # tiny sizes for everything that runs


def _init(module, x, **kwargs):
  """Variables of `module` for inputs like x, compiled the cheap way (an op-by-op init compiles slowly)."""
  init = lambda rngs, x: module.init(rngs, x, **kwargs)  # noqa: E731
  return train.run_once(init, {"params": jax.random.key(0), "sample": jax.random.key(1)}, x)


@pytest.mark.parametrize("dilation", [1, 2])
def test_causal_conv_never_sees_the_future(dilation):
  conv = CausalConv1d(3, kernel_size=3, dilation=dilation)
  x = np.random.default_rng(0).normal(size=(2, 12, 4)).astype(np.float32)
  params = _init(conv, x)
  apply = jax.jit(conv.apply)
  y = apply(params, x)
  assert y.shape == (2, 12, 3)
  for t in (0, 5, 10):
    future = x.copy()
    future[:, t + 1 :] += 100.0 * np.random.default_rng(t).normal(size=future[:, t + 1 :].shape)
    y2 = apply(params, future)
    np.testing.assert_array_equal(y2[:, : t + 1], y[:, : t + 1])
    assert not np.allclose(y2[:, t + 1], y[:, t + 1])  # the next step does see it
  # y[t] = bias + sum_j x[t - (k-1-j) * d] @ W[j], with zeros before the start
  w, b = np.asarray(params["params"]["kernel"]), np.asarray(params["params"]["bias"])
  padded = np.pad(x, ((0, 0), (2 * dilation, 0), (0, 0)))
  ref = b + sum(padded[:, j * dilation : j * dilation + 12] @ w[j] for j in range(3))
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_model_is_causal_from_input_to_reconstruction():
  model = SeqVAEConv(input_shape=(T, F), latent_dim=Z)
  x = np.random.default_rng(0).normal(size=(3, T, F)).astype(np.float32)
  variables = _init(model, x)
  apply = jax.jit(lambda v: model.apply(variables, v, rngs={"sample": jax.random.key(2)}))
  out = apply(x)
  future = x.copy()
  future[:, 3:] = 7.0
  out2 = apply(future)
  for key in ("mean", "logvar", "z", "recon"):
    np.testing.assert_array_equal(out2[key][:, :3], out[key][:, :3])
    assert not np.allclose(out2[key][:, 3], out[key][:, 3])


def test_layer_shapes_for_the_seed_sizes():
  """F = 201 frequency bins, Z = 256: every layer's output and parameter count (shape inference only)."""
  report = inspect_model(SeqVAEConv(input_shape=(40, 201), latent_dim=256), (40, 201))
  rows = {r.path: (r.shape, r.params) for r in report.rows}
  conv = lambda i, o: 3 * i * o + o  # noqa: E731
  dense = lambda i, o: i * o + o  # noqa: E731
  expected = {
    "encoder/conv_0": (("B", 40, 256), conv(201, 256)),
    "encoder/norm_0": (("B", 40, 256), 2 * 256),
    "encoder/conv_1": (("B", 40, 256), conv(256, 256)),
    "encoder/conv_2": (("B", 40, 512), conv(256, 512)),
    "encoder/norm_2": (("B", 40, 512), 2 * 512),
    "encoder/posterior": (("B", 40, 512), dense(512, 512)),
    "decoder/dense_0": (("B", 40, 201), dense(256, 201)),
    "decoder/dense_1": (("B", 40, 201), dense(201, 201)),
    "decoder/norm_2": (("B", 40, 201), 2 * 201),
    "decoder/output": (("B", 40, 201), dense(201, 201)),
  }
  for path, want in expected.items():
    assert rows[path] == want, path
  for key, shape in [
    ("mean", 256),
    ("logvar", 256),
    ("z", 256),
    ("code", 256),
    ("recon", 201),
    ("logits", 201),
  ]:
    assert report.outputs[key][0] == ("B", 40, shape), key
  assert report.outputs["latent_mask"][0] == ("B", 40)
  assert report.step_ratio == pytest.approx(201 / 256)
  assert report.other_variables == {"batch_stats": 2 * (256 + 256 + 512 + 3 * 201)}


def test_frame_noise_does_not_depend_on_the_sequence_length():
  key = jax.random.key(3)
  noise = jax.jit(frame_noise, static_argnums=1)
  short, long = noise(key, (2, 3, 4)), noise(key, (2, 9, 4))
  np.testing.assert_array_equal(long[:, :3], short)
  assert abs(float(np.std(long)) - 1.0) < 0.5 and not np.allclose(long[:, 0], long[:, 1])


def test_masked_batchnorm_statistics_count_only_real_frames():
  bn = MaskedBatchNorm(momentum=0.5)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 2)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  x[mask == 0] = 1e3  # padding far from the data
  variables = _init(bn, x, train=False)
  apply = jax.jit(lambda v, x, mask: bn.apply(v, x, train=True, mask=mask, mutable=["batch_stats"]))
  y, state = jax.device_get(apply(variables, x, mask))
  real = x[mask > 0]
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.5 * real.mean(0), rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"], 0.5 + 0.5 * real.var(0), rtol=1e-4)
  np.testing.assert_allclose(y[mask > 0], (real - real.mean(0)) / np.sqrt(real.var(0) + 1e-5), rtol=1e-4)


def _tiny_model_and_objective(tiny_config):
  tiny_config.model = models.model_config("seq_vae_conv", latent_dim=Z)
  tiny_config.loss = {"bernoulli_nll": 1.0, "kl": 1.0, "mse": 1.0}
  # SGD: Adam would turn the float noise of near-zero gradients (biases before BatchNorm) into full steps
  tiny_config.optimizer.name, tiny_config.optimizer.momentum = "sgd", 0.0
  model, objective, tx, schedule = train.build(tiny_config, (T, F))
  assert model.axis_name == parallel.AXIS
  return model, objective, tx, schedule


def _batch(n=8, frames=T, lengths=(6, 3, 1, 4, 0, 5, 2, 6), seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, frames, F)).astype(np.float32)
  mask = (np.arange(frames)[None] < np.asarray(lengths[:n])[:, None]).astype(np.float32)
  return {"x": np.where(mask[..., None] > 0, x, 0.0).astype(np.float32), "mask": mask}


def test_padding_changes_neither_loss_gradient_nor_statistics(tiny_config):
  """A batch padded with 4 extra frames of garbage (NaN, huge values) gives the same step as the original."""
  model, objective, _, _ = _tiny_model_and_objective(tiny_config)
  batch = _batch()
  garbage = np.random.default_rng(1).normal(scale=1e4, size=(8, T + 4, F)).astype(np.float32)
  garbage[:, -1] = np.nan
  mask = np.pad(batch["mask"], ((0, 0), (0, 4)))
  padded = {
    "x": np.where(mask[..., None] > 0, np.pad(batch["x"], ((0, 0), (0, 4), (0, 0))), garbage),
    "mask": mask,
  }
  state = train.create_train_state(model, optax.sgd(0.1), batch["x"][:1], 0)

  def loss_and_grad(b):
    def loss_fn(params):
      outputs, new_state = train.apply_model(
        model, params, state.model_state, b, train=True, rng=jax.random.key(5)
      )
      total, terms = objective(outputs, b, jnp.int32(0))
      return total.mean(), (terms, new_state, outputs["metrics"])

    return jax.value_and_grad(loss_fn, has_aux=True)(state.params)

  run = jax.jit(parallel.with_named_axis(loss_and_grad))
  (loss, (terms, new_state, metrics)), grads = run(batch)
  (loss_p, (terms_p, new_state_p, metrics_p)), grads_p = run(padded)
  assert np.isfinite(loss) and np.all(np.isfinite(jax.tree.leaves(grads_p)[0]))
  chex.assert_trees_all_close((loss_p, terms_p, metrics_p), (loss, terms, metrics), rtol=1e-5)
  chex.assert_trees_all_close(grads_p, grads, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(new_state_p, new_state, rtol=1e-5, atol=1e-7)
  # the masks reached the losses: the fully padded example (length 0) has zero loss
  np.testing.assert_allclose([terms["bernoulli_nll"][4], terms["kl"][4], terms["mse"][4]], 0.0)


def test_one_step_on_8_devices_equals_1_device(monkeypatch, tiny_config):
  """Synchronised masked BatchNorm: devices holding different numbers of real frames (one none at all).

  The posterior noise is set to zero: each device draws its own, so a stochastic step differs by design.
  """
  monkeypatch.setattr(seq_vae, "frame_noise", lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype))
  model, objective, tx, schedule = _tiny_model_and_objective(tiny_config)
  batch = _batch(n=16, lengths=(6, 3, 1, 4, 0, 5, 2, 6, 0, 0, 6, 6, 1, 2, 3, 4))
  state = train.create_train_state(model, tx, batch["x"][:1], 0)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)

  def run(devices):
    p_step = jax.pmap(step, axis_name=parallel.AXIS, devices=devices)
    rstate, metrics = p_step(
      parallel.replicate(state, devices),
      parallel.shard(parallel.split_for_devices(batch, len(devices)), devices),
    )
    return jax.device_get(parallel.unreplicate(rstate)), jax.device_get(metrics)

  s8, m8 = run(jax.local_devices())
  s1, m1 = run(jax.local_devices()[:1])
  assert m8["nonfinite"][0] == 0
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s8.model_state, s1.model_state, rtol=1e-5, atol=1e-6)
  for k in ("loss", "kl_active_dims", "bernoulli_nll"):
    np.testing.assert_allclose(m8[k][0], m1[k][0], rtol=1e-5)
  assert not np.allclose(s8.model_state["batch_stats"]["encoder"]["norm_0"]["mean"], 0.0)
