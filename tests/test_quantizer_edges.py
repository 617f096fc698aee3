"""The quantisers at their numerical edges: collapsed LFQ bits and all-zero cosine inputs keep finite
gradients, 2-level FSQ channels split N(0, 1) evenly, FSQ refuses codebooks its int32 indices and usage
counts cannot hold, LFQ's codebook entropy sees correlated bits, and bfloat16 distances pick the codes
float64 picks."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import quantizers as q
from ae_jax.core.errors import ConfigError
from ae_jax.models.vqvae import VQVAE

RNG = np.random.default_rng(0)
TINY = dict(hidden=8, res_hidden=4, num_res_layers=1, input_shape=(8, 8, 3))
LOG2 = math.log(2.0)


def _lfq_metrics(z, **kwargs):
  module = q.LookupFreeQuantizer(z.shape[-1], **kwargs)
  return jax.jit(module.apply)({}, jnp.asarray(z, jnp.float32))["metrics"]


def _binary_entropy(p):
  """The previous formula, -(xlogy(p, p) + xlogy(1 - p, 1 - p)), in float64."""
  return -(p * np.log(p) + (1 - p) * np.log(1 - p))


# ----------------------------------------------------------------------------- LFQ


@pytest.mark.parametrize("diversity", [0.0, 1.0])
def test_lfq_entropy_gradient_is_finite_when_a_bit_collapses(diversity):
  """At temperature 0.01, z = 0.5 everywhere makes the batch-mean bit probability exactly 1."""
  penalty_grad = jax.jit(jax.grad(lambda z: q.lfq(z, 0.25, 0.01, diversity)[1].mean()))
  grad = penalty_grad(jnp.full((2, 3, 1), 0.5))
  assert np.isfinite(np.asarray(grad)).all()
  z = RNG.normal(size=(4, 5, 3)).astype(np.float32)
  z[..., 1] = 0.5  # one collapsed bit among live ones
  grad = penalty_grad(jnp.asarray(z))
  assert np.isfinite(np.asarray(grad)).all()
  assert np.abs(np.asarray(grad)[..., 0]).max() > 0  # the live bits still get a gradient


def test_lfq_per_bit_entropy_is_the_previous_formula_away_from_the_edge():
  """Interior bit probabilities: sum_i H(mean p_i) as -(xlogy(p, p) + xlogy(1 - p, 1 - p)) did."""
  z, t = RNG.normal(size=(3, 7, 5)), 0.9
  mean_bits = (1 / (1 + np.exp(-4 * z / t))).reshape(-1, 5).mean(0)
  metrics = _lfq_metrics(z, entropy_temperature=t)
  np.testing.assert_allclose(metrics["per_bit_entropy"], _binary_entropy(mean_bits).sum(), rtol=1e-6)


def test_lfq_codebook_entropy_is_joint_and_sees_correlated_bits():
  """All 6 bits equal (2 of 64 codes, each half the time): the codebook entropy is log 2, while the per-bit
  entropy stays 6 log 2; the penalty rewards only the log 2 actually used."""
  n = 6
  signs = np.where(np.arange(32) % 2 == 0, 1.0, -1.0)
  z = np.broadcast_to(signs[:, None], (32, n)).reshape(4, 8, n)
  metrics = _lfq_metrics(z)
  np.testing.assert_allclose(metrics["codebook_entropy"], LOG2, rtol=1e-5)
  np.testing.assert_allclose(metrics["per_bit_entropy"], n * LOG2, rtol=1e-5)
  np.testing.assert_allclose(metrics["codes_used"], 2 / 64)
  _, penalty = q.lfq(jnp.asarray(z, jnp.float32), diversity=1.0)
  np.testing.assert_allclose(penalty, -LOG2, rtol=1e-5)  # confident bits: no per-sample entropy


def test_lfq_codebook_entropy_of_independent_uniform_bits_is_bits_log_2():
  n = 6
  every_code = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))  # each of the 64 codes once
  for z in (every_code.reshape(4, 16, n), np.zeros((2, 3, n))):  # confident bits; p = 1/2 everywhere
    metrics = _lfq_metrics(z)
    np.testing.assert_allclose(metrics["codebook_entropy"], n * LOG2, rtol=1e-5)
    np.testing.assert_allclose(metrics["per_bit_entropy"], n * LOG2, rtol=1e-5)


def test_lfq_above_the_joint_limit_uses_the_per_bit_entropy():
  n = q.MAX_JOINT_ENTROPY_BITS + 1
  z, t = RNG.normal(size=(2, 3, n)), 0.7
  bits = 1 / (1 + np.exp(-4 * z / t))
  sample = _binary_entropy(bits).sum(-1).mean(1)
  _, penalty = q.lfq(jnp.asarray(z, jnp.float32), 0.25, t, 0.5)
  np.testing.assert_allclose(penalty, sample - 0.5 * _binary_entropy(bits.reshape(-1, n).mean(0)).sum(), 1e-5)
  metrics = _lfq_metrics(z, entropy_temperature=t)
  assert "codebook_entropy" not in metrics and "per_bit_entropy" in metrics


# ----------------------------------------------------------------------------- cosine VQ


def test_l2_normalize_clamps_the_norm_as_torch_normalize_does():
  """x / max(|x|, 1e-12) (torch.nn.functional.normalize's definition and default eps): tiny vectors still
  come out as unit vectors, zero stays zero, and the Jacobian at zero is I / eps (finite)."""
  x = np.array([[3.0, 4.0], [3e-10, 4e-10], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(q.l2_normalize(jnp.asarray(x)), [[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  jacobian = jax.jacobian(q.l2_normalize)(jnp.zeros(3))
  np.testing.assert_allclose(jacobian, np.eye(3) / 1e-12, rtol=1e-6)


def test_cosine_vq_gradient_is_finite_for_an_all_zero_encoder_vector():
  z = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  z[0, 1] = 0.0
  module = q.VectorQuantizer(6, 4, ema=False, cosine=True)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, jnp.asarray(z))

  def loss(params, z):
    out = module.apply({"params": params}, z)
    terms = out["codebook_loss"] + out["commitment_loss"] + out["code_entropy"]
    return terms.sum() + jnp.sum(out["quantized"] * jnp.arange(4.0))

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], jnp.asarray(z))
  for leaf in jax.tree.leaves(grads):
    assert np.isfinite(np.asarray(leaf)).all()


# ----------------------------------------------------------------------------- FSQ


def _normal_cdf(x):
  return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("even", [2, 4, 8])
def test_fsq_even_levels_split_a_standard_normal_symmetrically(even):
  """Level k of an even-L channel takes tanh(z) (L - 1)(1 - eps)/2 - 1/2 in [k - 1/2, k + 1/2): under
  N(0, 1) the L levels' frequencies are these closed-form Gaussian masses, mirror-symmetric about z = 0
  (2 levels: half each); the straight-through gradient at 0 is (L - 1)(1 - eps)/2 / (L // 2). Odd channels
  next to it stay round(tanh(z) (L - 1)(1 - eps)/2) / (L // 2), bit for bit."""
  levels = (even, 3, 5)
  z = jnp.asarray(RNG.normal(size=(200_000, 3)), jnp.float32)
  out = q.fsq(z, levels)
  digits = np.asarray(out.indices) % even
  frequency = np.bincount(digits, minlength=even) / digits.size
  half = (even - 1) * (1 - 1e-3) / 2
  inner = [_normal_cdf(math.atanh((k + 1) / half)) for k in range(-even // 2, even // 2 - 1)]
  expected = np.diff([0.0, *inner, 1.0])
  np.testing.assert_allclose(expected, expected[::-1], atol=1e-12)
  np.testing.assert_allclose(frequency, expected, atol=0.005)
  grad = jax.grad(lambda z: q.fsq(z, levels).quantized.sum())(jnp.zeros((1, 3)))
  np.testing.assert_allclose(grad[0, 0], half / (even // 2), rtol=1e-6)
  for i, n in enumerate(levels[1:], 1):
    scale = np.float32((n - 1) * (1 - 1e-3) / 2)
    expected = jnp.round(jnp.tanh(z[:, i]) * scale) / (n // 2)
    np.testing.assert_array_equal(np.asarray(out.quantized)[:, i], np.asarray(expected))


def test_fsq_refuses_more_codes_than_int32_indices_and_usage_counts_hold():
  """Above MAX_CODES = 2^20 codes (8^11 = 2^33 used to give negative indices), for the function, the module
  and the model, before any compute; 2^20 codes themselves are indexed exactly."""
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  image = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  for levels in [(8,) * 11, (2**16, 2**16), (1025, 1024)]:
    match = f"{math.prod(levels):,} codes, above the limit of 1,048,576"
    with pytest.raises(ConfigError, match=match):
      q.fsq(jnp.zeros((1, len(levels))), levels)
    with pytest.raises(ConfigError, match=match):
      q.FiniteScalarQuantizer(levels).apply({}, jnp.zeros((1, len(levels))))
    model = VQVAE(**TINY, quantizer={"name": "fsq", "levels": levels})
    with pytest.raises(ConfigError, match=match):
      jax.eval_shape(lambda r, x, model=model: model.init(r, x), rngs, image)
  levels = (4,) * 10  # 2^20 codes, the limit
  corners = np.array(list(itertools.product([-9.0, 9.0], repeat=10)), np.float32)  # digits 0 and 3
  indices = np.asarray(q.fsq(jnp.asarray(corners), levels).indices)
  np.testing.assert_array_equal(indices, ((corners > 0) * 3 * 4 ** np.arange(10)).sum(-1))
  assert indices.max() == 2**20 - 1


# ----------------------------------------------------------------------------- distances


def test_bfloat16_distances_pick_the_codes_float64_picks():
  """A closely spaced codebook far from the origin: |x|^2 + |e|^2 - 2 x.e cancels; in bfloat16 almost every
  argmin is wrong. Compared where float64's best and second-best codes differ by more than 1e-3."""
  d, k, n = 16, 64, 512
  centre = RNG.normal(size=d) * 4
  codebook = jnp.asarray(centre + 0.05 * RNG.normal(size=(k, d)), jnp.bfloat16)
  x = jnp.asarray(centre + 0.05 * RNG.normal(size=(n, d)), jnp.bfloat16)
  exact = ((np.asarray(x, np.float64)[:, None] - np.asarray(codebook, np.float64)) ** 2).sum(-1)
  ranked = np.sort(exact, -1)
  clear = ranked[:, 1] - ranked[:, 0] > 1e-3
  assert clear.sum() > n // 2
  d2 = q.squared_distances(x, codebook)
  np.testing.assert_array_equal(np.asarray(jnp.argmin(d2, -1))[clear], exact.argmin(-1)[clear])
  assert d2.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(q.nearest_code(x, codebook))[clear], exact.argmin(-1)[clear])
