"""Gumbel-softmax quantisation: the annealing schedule, hard codes forward with soft gradients, argmax at
evaluation, the KL-to-uniform term, and a step counter that resumes the schedule exactly from a checkpoint."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ae_jax import losses
from ae_jax import quantizers as q
from ae_jax.training import checkpoint

RNG = np.random.default_rng(0)


def test_temperature_schedule():
  schedule = jax.jit(q.gumbel_temperature, static_argnums=(1, 2, 3))
  temperature = lambda s, n=100: float(schedule(np.int32(s), 1.0, 1 / 16, n))
  assert temperature(0) == 1.0
  np.testing.assert_allclose(temperature(50), 0.25, rtol=1e-6)  # geometric: halfway in log space
  np.testing.assert_allclose([temperature(100), temperature(1000)], 1 / 16, rtol=1e-6)
  assert temperature(500, n=0) == 1.0  # no annealing


def test_hard_codes_forward_soft_gradients_and_argmax_at_evaluation():
  logits = RNG.normal(size=(2, 3, 6)).astype(np.float32)
  codebook = RNG.normal(size=(6, 4)).astype(np.float32)
  noise = np.asarray(jax.jit(jax.random.gumbel, static_argnums=1)(jax.random.PRNGKey(0), logits.shape))
  out = jax.jit(q.gumbel_quantize)(logits, codebook, 0.5, noise)
  np.testing.assert_array_equal(out.indices, np.argmax(logits + noise, -1))
  np.testing.assert_array_equal(out.quantized, codebook[out.indices])  # exactly the hard code
  w = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda a: jnp.sum(w * q.gumbel_quantize(a, codebook, 0.5, noise).quantized)))(
    logits
  )
  soft = lambda a: jax.nn.softmax((a + noise) / 0.5, -1) @ codebook
  soft_grad = jax.jit(jax.grad(lambda a: jnp.sum(w * soft(a))))(logits)
  np.testing.assert_allclose(grad, soft_grad, rtol=1e-5, atol=1e-6)
  evaluation = jax.jit(lambda a, c: q.gumbel_quantize(a, c, 0.5))(logits, codebook)
  np.testing.assert_array_equal(evaluation.indices, np.argmax(logits, -1))
  np.testing.assert_array_equal(evaluation.quantized, codebook[evaluation.indices])


def test_kl_to_uniform():
  logits = RNG.normal(size=(3, 4, 5))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expected = (p * np.log(p * 5)).sum(-1).mean(1)
  kl_to_uniform = jax.jit(q.gumbel_kl_to_uniform)
  np.testing.assert_allclose(kl_to_uniform(logits.astype(np.float32)), expected, rtol=1e-5)
  np.testing.assert_allclose(kl_to_uniform(np.zeros((2, 3, 5), np.float32)), 0.0, atol=1e-7)


def test_step_counter_resumes_the_schedule_exactly_from_a_checkpoint(tmp_path):
  module = q.GumbelQuantizer(6, 4, anneal_steps=4)
  z = jax.device_put(RNG.normal(size=(2, 3, 4)).astype(np.float32))
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  assert int(variables["vq_ema"]["step"]) == 0

  @jax.jit
  def step(variables, key):
    out, state = module.apply(variables, z, train=True, rngs={"sample": key}, mutable=["vq_ema"])
    return {**variables, **state}, out

  run, temperatures = variables, []
  for i in range(3):
    run, out = step(run, jax.random.PRNGKey(i))
    temperatures.append(float(out["metrics"]["temperature"]))
  np.testing.assert_allclose(temperatures, [1.0, 0.5, 0.25], rtol=1e-6)  # 1 -> 1/16 over 4 steps
  assert int(run["vq_ema"]["step"]) == 3
  evaluate = jax.jit(lambda v: module.apply(v, z, mutable=["vq_ema"]))
  assert int(evaluate(run)[1]["vq_ema"]["step"]) == 3  # evaluation: no step

  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(3, run, {})
  restored = jax.device_get(ckpt.restore(3, variables, {}))
  ckpt.close()
  chex.assert_trees_all_equal(restored, jax.device_get(run))
  resumed, out_resumed = step(restored, jax.random.PRNGKey(3))
  _, out = step(run, jax.random.PRNGKey(3))
  chex.assert_trees_all_equal(out_resumed, out)
  np.testing.assert_allclose(out["metrics"]["temperature"], 0.125, rtol=1e-6)
  np.testing.assert_array_equal(losses.LOSSES["gumbel_kl"](out, {}), out["gumbel_kl"])
  assert out["code_logits"].shape == (2, 3, 6) and out["code_entropy"].shape == (2,)
