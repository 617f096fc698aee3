"""VectorQuantizer's options: cosine (l2-normalised) and low-dimensional codebooks, dead-code re-seeding
under a lax.cond that resets the revived codes' statistics, and the code entropy penalty."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax import quantizers as q

RNG = np.random.default_rng(0)


def _apply(module, z, variables=None, **kwargs):
  variables = variables or jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, z), variables


def test_cosine_codebook_looks_up_by_angle_and_outputs_unit_codes():
  z = jnp.asarray(RNG.normal(size=(3, 5, 4)) * RNG.uniform(0.1, 10, size=(3, 5, 1)), jnp.float32)
  module = q.VectorQuantizer(9, 4, ema=False, cosine=True)
  out, variables = _apply(module, z)
  codebook = np.asarray(variables["params"]["codebook"])
  unit = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
  cosine = np.einsum("bpd,kd->bpk", np.asarray(z) / np.linalg.norm(z, axis=-1, keepdims=True), unit)
  np.testing.assert_array_equal(out["indices"], cosine.argmax(-1))
  np.testing.assert_allclose(out["quantized"], unit[np.asarray(out["indices"])], atol=1e-6)
  # the losses compare the normalised input with the normalised code: 2 - 2 cos per vector, over D = 4
  expected = (2 - 2 * cosine.max(-1)).mean(1) / 4
  np.testing.assert_allclose(out["codebook_loss"], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out["commitment_loss"], 0.25 * expected, rtol=1e-4, atol=1e-6)


def test_cosine_ema_codebook_averages_unit_vectors():
  z = jnp.asarray(RNG.normal(size=(4, 6, 3)) * 7.0, jnp.float32)
  module = q.VectorQuantizer(5, 3, cosine=True, codebook_init="random_data", decay=0.5)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  apply = jax.jit(functools.partial(module.apply, train=True, mutable=["vq_ema"]))
  _, state = apply(variables, z, rngs={"sample": jax.random.PRNGKey(1)})
  units = np.asarray(z).reshape(-1, 3) / np.linalg.norm(np.asarray(z).reshape(-1, 3), axis=1, keepdims=True)
  sums = np.asarray(state["vq_ema"]["embed_sum"])
  assert np.all(np.linalg.norm(sums / state["vq_ema"]["cluster_size"][:, None], axis=1) <= 1 + 1e-5)
  assert np.abs(sums).sum() < np.abs(units).sum() * 10  # sums of unit vectors, not of the raw (x7) inputs


def test_low_dimensional_codebook_projects_in_and_out():
  z = jnp.asarray(RNG.normal(size=(2, 4, 6)), jnp.float32)
  module = q.VectorQuantizer(8, 6, ema=False, codebook_dim=2)
  out, variables = _apply(module, z)
  params = variables["params"]
  assert params["codebook"].shape == (8, 2)
  assert params["project_in"]["kernel"].shape == (6, 2) and params["project_out"]["kernel"].shape == (2, 6)
  low = np.asarray(z) @ np.asarray(params["project_in"]["kernel"]) + np.asarray(params["project_in"]["bias"])
  codebook = np.asarray(params["codebook"])
  np.testing.assert_array_equal(out["indices"], ((low[..., None, :] - codebook) ** 2).sum(-1).argmin(-1))
  code = codebook[np.asarray(out["indices"])]
  expected = code @ np.asarray(params["project_out"]["kernel"]) + np.asarray(params["project_out"]["bias"])
  np.testing.assert_allclose(out["quantized"], expected, rtol=1e-5, atol=1e-6)
  assert out["quantized"].shape == z.shape and out["code_logits"].shape == (2, 4, 8)
  np.testing.assert_allclose(out["codebook_loss"], ((low - code) ** 2).reshape(2, -1).mean(1), rtol=1e-5)


@pytest.mark.parametrize("sizes", [[5.0, 0.1, 3.0, 0.0, 0.2, 9.0], [5.0, 1.0, 3.0, 2.0, 0.9, 9.0]])
def test_reseed_under_a_cond_gives_the_same_result(sizes):
  stats = q.ema_stats_from_codebook(jnp.asarray(RNG.normal(size=(6, 2)), jnp.float32), 1.0)
  stats = stats._replace(cluster_size=jnp.asarray(sizes, jnp.float32))
  candidates = jnp.arange(20.0).reshape(10, 2) + 1.0
  key = jax.random.PRNGKey(0)
  plain = jax.jit(q.reseed_dead_codes, static_argnums=(3, 4))(key, stats, candidates, 0.5, 4.0)
  cond = jax.jit(q.reseed_if_dead, static_argnums=(3, 4))(key, stats, candidates, 0.5, 4.0)
  jax.tree.map(np.testing.assert_array_equal, cond, plain)


def test_revived_code_keeps_its_new_value_after_the_next_update():
  """A re-seeded code starts from fresh statistics: the next update moves it from its new value, not back
  towards the sums it had gathered before it died."""
  codes = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
  old = q.EMAStats(codes, jnp.array([3.0, 3.0, 3.0, 0.1]), codes * jnp.array([3.0, 3.0, 3.0, 0.1])[:, None])
  candidates = jnp.array([[0.5, 0.5], [0.2, 0.7]])
  reseed = jax.jit(q.reseed_dead_codes, static_argnames=("threshold", "count"))
  revived, dead = reseed(jax.random.PRNGKey(0), old, candidates, threshold=1.0, count=3.0)
  assert dead.tolist() == [False, False, False, True]
  new_value = np.asarray(revived.codebook[3])
  assert any(np.array_equal(new_value, c) for c in np.asarray(candidates))
  counts = jnp.array([4.0, 4.0, 4.0, 0.0])
  after = jax.jit(lambda s, c, x: q.ema_update(s, c, x * c[:, None], decay=0.5))(revived, counts, codes)
  np.testing.assert_allclose(after.codebook[3], new_value, rtol=1e-4)  # no assignments: it stays

  # in the module: after re-seeding, a step whose data sit on the codes moves no code
  module = q.VectorQuantizer(4, 2, decay=0.5, dead_code_threshold=2.0)
  z1 = jnp.asarray(np.repeat(np.asarray(codes[:3]), 4, 0) + RNG.normal(scale=0.05, size=(12, 2)), jnp.float32)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z1[None])
  variables = {"vq_ema": {**variables["vq_ema"], "codebook": codes}}
  step = jax.jit(lambda v, z, k: module.apply(v, z[None], train=True, rngs={"sample": k}, mutable=["vq_ema"]))
  out, v1 = step(variables, z1, jax.random.PRNGKey(1))
  assert float(out["metrics"]["codes_reseeded"]) == 1.0
  revived_code = np.asarray(v1["vq_ema"]["codebook"][3])
  assert any(np.allclose(revived_code, row) for row in np.asarray(z1))
  z2 = jnp.concatenate([jnp.asarray(v1["vq_ema"]["codebook"][:3]), jnp.asarray(revived_code)[None]])
  out, v2 = step(v1, jnp.repeat(z2, 3, 0), jax.random.PRNGKey(2))
  assert float(out["metrics"]["codes_reseeded"]) == 0.0
  np.testing.assert_allclose(v2["vq_ema"]["codebook"][3], revived_code, rtol=1e-4)


def _entropy_numpy(logits, temperature, diversity, weights):
  x = logits / temperature
  p = np.exp(x - x.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  h = -(p * np.log(p)).sum(-1)
  sample = (weights * h).sum(1) / weights.sum(1)
  mean = (weights[..., None] * p).sum((0, 1)) / weights.sum()
  return sample - diversity * -(mean * np.log(mean)).sum()


def test_code_entropy_penalty_matches_numpy_and_its_extremes():
  logits = RNG.normal(size=(3, 5, 7)).astype(np.float64)
  weights = (RNG.uniform(size=(3, 5)) > 0.3).astype(np.float64)
  weights[:, 0] = 1.0
  penalty = jax.jit(q.code_entropy_penalty, static_argnums=(1, 2, 3))
  got = penalty(jnp.asarray(logits, jnp.float32), 0.7, 0.5, None, jnp.asarray(weights))
  np.testing.assert_allclose(got, _entropy_numpy(logits, 0.7, 0.5, weights), rtol=1e-5, atol=1e-6)
  # confident assignments spread evenly over the codes: the minimum, -diversity * log K
  confident = jnp.asarray(np.eye(4)[None] * 50.0, jnp.float32)
  np.testing.assert_allclose(penalty(confident, 1.0, 1.0), -np.log(4), atol=1e-5)


def test_code_entropy_term_works_where_logits_exist_and_names_the_gap_elsewhere():
  z = jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32)
  vq_out, _ = _apply(q.VectorQuantizer(8, 4, ema=False), z)
  term = losses.LOSSES["code_entropy"]
  np.testing.assert_allclose(term(vq_out, {}), vq_out["code_entropy"])
  lfq_out, _ = _apply(q.LookupFreeQuantizer(4), z)
  with pytest.raises(KeyError, match=r"needs per-position code logits \('code_logits'\).*lfq_entropy"):
    term(lfq_out, {})
  fsq_out, _ = _apply(q.FiniteScalarQuantizer((3, 3, 3, 3)), z)
  with pytest.raises(KeyError, match="code_logits"):
    term(fsq_out, {})
  with pytest.raises(KeyError, match="quantizer='gumbel'"):
    losses.LOSSES["gumbel_kl"](vq_out, {})
