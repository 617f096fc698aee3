"""Lookup-free quantisation: signs and bit indices, straight-through gradients, the commitment term from
the pre-substitution input, and the entropy penalty against the full softmax over all 2^n codes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax import quantizers as q

RNG = np.random.default_rng(0)


def test_signs_bits_and_straight_through_gradients():
  z = jnp.asarray(RNG.normal(size=(3, 5, 4)), jnp.float32)
  out, _ = jax.jit(lambda z: q.lfq(z, beta=0.25))(z)
  signs = np.where(np.asarray(z) > 0, 1.0, -1.0)
  np.testing.assert_array_equal(out.quantized, signs)
  np.testing.assert_array_equal(out.indices, ((np.asarray(z) > 0) * 2 ** np.arange(4)).sum(-1))
  np.testing.assert_array_equal(out.codebook_loss, 0.0)
  np.testing.assert_allclose(out.commitment_loss, 0.25 * ((z - signs) ** 2).reshape(3, -1).mean(1), rtol=1e-6)
  w = jnp.asarray(RNG.normal(size=z.shape), jnp.float32)
  np.testing.assert_array_equal(jax.jit(jax.grad(lambda z: jnp.sum(w * q.lfq(z)[0].quantized)))(z), w)
  g = jax.jit(jax.grad(lambda z: q.lfq(z, 0.25)[0].commitment_loss.sum()))(z)
  np.testing.assert_allclose(g, 0.25 * 2 * (z - signs) / 20, rtol=1e-5, atol=1e-7)  # from z itself
  with pytest.raises(ValueError, match="above 20 bits"):
    q.lfq(jnp.zeros((1, 21)))


def test_entropy_penalty_against_the_full_softmax_over_all_codes():
  """Per-sample entropy: exactly that of softmax(-|z - c|^2 / t) over the 2^n codes. Codebook entropy: that
  of the batch mean of the same softmax, at most the sum of the channels' entropies of the mean bit
  probability."""
  n, t, diversity = 3, 0.7, 0.5
  z = RNG.normal(size=(4, 6, n)).astype(np.float64)
  codes = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))  # [8, n]
  logits = -((z[..., None, :] - codes) ** 2).sum(-1) / t
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  sample = -(p * np.log(p)).sum(-1).mean(1)
  bits = 1 / (1 + np.exp(-4 * z / t))
  mean_bits = bits.reshape(-1, n).mean(0)
  factorised = -(mean_bits * np.log(mean_bits) + (1 - mean_bits) * np.log(1 - mean_bits)).sum()
  mean_full = p.reshape(-1, 8).mean(0)
  joint = -(mean_full * np.log(mean_full)).sum()
  _, entropy = jax.jit(lambda z: q.lfq(z, 0.25, t, diversity))(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(entropy, sample - diversity * joint, rtol=1e-5, atol=1e-6)
  assert factorised >= joint - 1e-9
  grad = jax.jit(jax.grad(lambda z: q.lfq(z, 0.25, t, diversity)[1].sum()))(jnp.asarray(z, jnp.float32))
  assert np.abs(grad).max() > 0  # the penalty reaches the encoder


def test_module_outputs_and_loss_term():
  z = jnp.asarray(RNG.normal(size=(2, 3, 5)), jnp.float32)
  module = q.LookupFreeQuantizer(5)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  assert not variables  # no parameters, no state
  out = jax.jit(module.apply)(variables, z)
  assert out["lfq_entropy"].shape == (2,) and "code_logits" not in out
  np.testing.assert_array_equal(losses.LOSSES["lfq_entropy"](out, {}), out["lfq_entropy"])
  counts = np.bincount(np.asarray(out["indices"]).ravel(), minlength=32)
  np.testing.assert_allclose(out["metrics"]["codes_used"], np.mean(counts > 0))
  with pytest.raises(ValueError, match="lfq expects 4 channels"):
    q.LookupFreeQuantizer(4).apply({}, z)
