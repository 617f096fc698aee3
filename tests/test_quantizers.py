"""The pure quantiser functions: nearest codes, straight-through gradients, loss terms, EMA, seeding, FSQ."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import quantizers as q

RNG = np.random.default_rng(0)


def _inputs(b=3, h=4, d=5, k=7):
  z_e = RNG.normal(size=(b, h, d)).astype(np.float32)
  codebook = RNG.normal(size=(k, d)).astype(np.float32)
  return jax.device_put(z_e), jax.device_put(codebook)


def test_nearest_code_matches_brute_force():
  z_e, codebook = _inputs(b=6, h=10, d=8, k=33)
  brute = np.argmin(((np.asarray(z_e)[..., None, :] - np.asarray(codebook)) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(jax.jit(q.nearest_code)(z_e, codebook), brute)
  d2 = jax.jit(q.squared_distances)(np.asarray(z_e).reshape(-1, 8), codebook)
  chex.assert_shape(d2, (60, 33))


def test_straight_through_forward_is_the_code_and_gradient_is_the_identity():
  z_e, codebook = _inputs()
  out = jax.jit(q.vector_quantize)(z_e, codebook)
  # z_e + (z_q - z_e) rounds to z_q within one float32 ulp
  np.testing.assert_allclose(out.quantized, np.asarray(codebook)[out.indices], rtol=0, atol=1e-6)
  w = jax.device_put(RNG.normal(size=z_e.shape).astype(np.float32))
  grad = jax.jit(jax.grad(lambda z: jnp.sum(w * q.vector_quantize(z, codebook).quantized)))(z_e)
  np.testing.assert_array_equal(grad, w)


def test_beta_is_on_the_commitment_term():
  """codebook = mean |sg(z_e) - z_q|^2 and commitment = beta * mean |z_e - sg(z_q)|^2, per example (the
  popular reference's bug puts beta on the codebook term instead)."""
  z_e, codebook = _inputs()
  out = jax.jit(functools.partial(q.vector_quantize, beta=0.25))(z_e, codebook)
  sq = np.square(np.asarray(z_e) - np.asarray(codebook)[np.asarray(out.indices)]).reshape(3, -1).mean(1)
  np.testing.assert_allclose(out.codebook_loss, sq, rtol=1e-6)
  np.testing.assert_allclose(out.commitment_loss, 0.25 * sq, rtol=1e-6)
  # the encoder's gradient from the commitment term is beta * 2 (z_e - z_q) / elements
  g = jax.jit(jax.grad(lambda z: q.vector_quantize(z, codebook, 0.25).commitment_loss.sum()))(z_e)
  z_q = np.asarray(codebook)[np.asarray(out.indices)]
  np.testing.assert_allclose(g, 0.25 * 2 * (np.asarray(z_e) - z_q) / 20, rtol=1e-5, atol=1e-7)


def test_each_loss_term_moves_only_its_side():
  """The commitment term gives no gradient to the codebook, the codebook term none to the encoder."""
  z_e, codebook = _inputs()

  def grads(term):
    loss = lambda z, c: getattr(q.vector_quantize(z, c), term).sum()
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(z_e, codebook)

  g_enc, g_code = grads("commitment_loss")
  assert np.abs(g_enc).max() > 0 and np.abs(g_code).max() == 0
  g_enc, g_code = grads("codebook_loss")
  assert np.abs(g_enc).max() == 0 and np.abs(g_code).max() > 0


def test_usage_metrics():
  usage_metrics = jax.jit(q.usage_metrics)
  uniform = usage_metrics(np.full((16,), 3.0, np.float32))
  np.testing.assert_allclose(uniform["perplexity"], 16.0, rtol=1e-5)
  one_hot = np.zeros((16,), np.float32)
  one_hot[3] = 10.0
  one = usage_metrics(one_hot)
  np.testing.assert_allclose(one["perplexity"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(one["codes_used"], 1 / 16)
  counts = jax.jit(q.code_counts, static_argnums=1)(np.array([[0, 0], [2, 5]], np.int32), 8)
  np.testing.assert_array_equal(counts, [2, 0, 1, 0, 0, 1, 0, 0])


def test_ema_update_matches_numpy():
  k, d, decay, eps = 6, 3, 0.9, 1e-3
  stats = jax.jit(q.ema_stats_from_codebook, static_argnums=1)(
    RNG.normal(size=(k, d)).astype(np.float32), 2.0
  )
  counts = np.array([4.0, 0, 1, 0, 3, 0], np.float32)
  sums = RNG.normal(size=(k, d)).astype(np.float32) * counts[:, None]
  new = jax.jit(lambda s, c, e: q.ema_update(s, c, e, decay, eps))(stats, counts, sums)
  size = decay * 2.0 + (1 - decay) * np.asarray(counts)
  embed = decay * np.asarray(stats.embed_sum) + (1 - decay) * np.asarray(sums)
  smoothed = (size + eps) / (size.sum() + k * eps) * size.sum()
  np.testing.assert_allclose(new.cluster_size, size, rtol=1e-6)
  np.testing.assert_allclose(new.codebook, embed / smoothed[:, None], rtol=1e-5)
  # unused codes keep (almost exactly) their value: their sum and count decay together
  np.testing.assert_allclose(np.asarray(new.codebook)[1], np.asarray(stats.codebook)[1], rtol=1e-3)


def test_kmeans_plus_plus_seeds_every_cluster_from_data_rows():
  centres = np.array([[10.0, 0], [-10, 0], [0, 10], [0, -10]], np.float32)
  x = np.concatenate([c + 0.1 * RNG.normal(size=(50, 2)) for c in centres]).astype(np.float32)
  kmeans_plus_plus = jax.jit(q.kmeans_plus_plus, static_argnums=2)
  seeds = np.asarray(kmeans_plus_plus(jax.random.PRNGKey(0), x, 4))
  assert all(any(np.array_equal(s, row) for row in x) for s in seeds)
  nearest = np.argmin(((seeds[:, None] - centres) ** 2).sum(-1), 1)
  assert sorted(nearest) == [0, 1, 2, 3]
  # more centres than distinct rows: falls back to uniform picks instead of failing
  assert np.isfinite(kmeans_plus_plus(jax.random.PRNGKey(1), x[:3], 5)).all()
  chex.assert_shape(jax.jit(q.random_rows, static_argnums=2)(jax.random.PRNGKey(0), x, 7), (7, 2))


def test_reseed_dead_codes_replaces_only_dead_codes_with_distinct_candidates():
  stats = jax.jit(q.ema_stats_from_codebook, static_argnums=1)(np.zeros((6, 2), np.float32), 1.0)
  stats = stats._replace(cluster_size=np.array([5.0, 0.1, 3.0, 0.0, 0.2, 9.0], np.float32))
  candidates = np.arange(20.0, dtype=np.float32).reshape(10, 2) + 1.0
  reseed = jax.jit(functools.partial(q.reseed_dead_codes, threshold=0.5, count=4.0))
  new, dead = jax.device_get(reseed(jax.random.PRNGKey(0), stats, candidates))
  np.testing.assert_array_equal(dead, [False, True, False, True, True, False])
  np.testing.assert_array_equal(new.codebook[~np.asarray(dead)], 0.0)
  rows = {tuple(np.asarray(r)) for r in new.codebook[np.asarray(dead)]}
  assert len(rows) == 3 and rows <= {tuple(r) for r in np.asarray(candidates)}
  np.testing.assert_array_equal(new.cluster_size, [5.0, 4.0, 3.0, 4.0, 4.0, 9.0])
  np.testing.assert_allclose(new.embed_sum, new.codebook * new.cluster_size[:, None])


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3, 4)])
def test_fsq_grid_indices_and_gradients(levels):
  lv = np.asarray(levels)
  z = RNG.normal(scale=3.0, size=(4000, len(levels))).astype(np.float32)
  fsq = jax.jit(functools.partial(q.fsq, levels=levels))
  out = fsq(z)
  scaled = np.asarray(out.quantized) * (lv // 2)
  np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-5)  # on the integer grid
  assert (scaled >= -(lv // 2)).all() and (scaled <= lv - 1 - lv // 2).all()  # L values per channel
  np.testing.assert_array_equal(out.codebook_loss, 0.0)
  np.testing.assert_array_equal(out.commitment_loss, 0.0)
  # inputs aimed at every grid point get every index in [0, prod(levels)) exactly once
  grid = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in levels], indexing="ij"), -1).reshape(
    -1, lv.size
  )
  half, offset = (lv - 1) * (1 - 1e-3) / 2, np.where(lv % 2, 0.0, 0.5)
  z_grid = np.arctanh((0.9 * grid + offset) / half)  # the bound's inverse at 0.9 x each grid point
  indices = np.asarray(fsq(z_grid.astype(np.float32)).indices)
  np.testing.assert_array_equal(np.sort(indices), np.arange(int(np.prod(levels))))
  g = jax.jit(jax.grad(lambda z: jnp.sum(q.fsq(z, levels).quantized)))(z[:5])
  assert np.all(np.asarray(g) > 0)  # straight-through: the derivative of the bound, not zero


def test_fsq_with_two_levels_gives_two_finite_values_and_refuses_fewer():
  z = RNG.normal(scale=3.0, size=(1000, 2)).astype(np.float32)
  out = jax.jit(functools.partial(q.fsq, levels=(2, 3)))(z)
  assert np.isfinite(np.asarray(out.quantized)).all()
  np.testing.assert_array_equal(np.unique(np.asarray(out.quantized)[:, 0]), [-1.0, 0.0])
  np.testing.assert_array_equal(np.unique(np.asarray(out.indices)), np.arange(6))
  with pytest.raises(ValueError, match="at least 2 levels"):
    q.fsq(z, (1, 3))
