"""Residual VQ: stage by stage against numpy, quantizer dropout and eval_stages, shared codebooks, which
parameters each loss term moves, and the per-stage usage metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax import quantizers as q

RNG = np.random.default_rng(0)


def _nearest(x, codebook):
  return ((x[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)


def test_each_stage_quantises_the_previous_stages_residual():
  z = RNG.normal(size=(3, 4, 5)).astype(np.float32)
  codebooks = (RNG.normal(size=(3, 11, 5)) * np.array([1.0, 0.5, 0.25])[:, None, None]).astype(np.float32)
  quantize = jax.jit(q.residual_quantize, static_argnames="beta")
  out, inputs = quantize(jnp.asarray(z), jnp.asarray(codebooks), beta=0.25)
  residual, total, terms = z.astype(np.float64), 0.0, []
  for s in range(3):
    idx = _nearest(residual, codebooks[s])
    np.testing.assert_array_equal(out.indices[..., s], idx)
    np.testing.assert_allclose(inputs[s], residual, rtol=1e-5, atol=1e-6)
    code = codebooks[s][idx]
    terms.append(((residual - code) ** 2).reshape(3, -1).mean(1))
    total, residual = total + code, residual - code
  np.testing.assert_allclose(out.quantized, total, rtol=1e-5, atol=1e-6)
  # the terms compare each stage's code with that stage's input (its residual), averaged over stages
  np.testing.assert_allclose(out.codebook_loss, np.mean(terms, 0), rtol=1e-5)
  np.testing.assert_allclose(out.commitment_loss, 0.25 * np.mean(terms, 0), rtol=1e-5)
  assert out.indices.shape == (3, 4, 3) and out.code_logits.shape == (3, 4, 3, 11)
  # fewer active stages: the output sums only those codes, the terms average only those stages
  active = jnp.array([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]])
  part, _ = quantize(jnp.asarray(z), jnp.asarray(codebooks), beta=0.25, active=active)
  codes = np.stack([codebooks[s][np.asarray(out.indices[..., s])] for s in range(3)], -2)  # [B, P, S, D]
  np.testing.assert_allclose(
    part.quantized, (codes * np.asarray(active)[:, None, :, None]).sum(-2), atol=1e-5
  )
  np.testing.assert_allclose(
    part.codebook_loss, [terms[0][0], np.mean(terms[:2], 0)[1], np.mean(terms, 0)[2]]
  )


def test_quantizer_dropout_draws_one_to_all_stages_per_example():
  keys = jax.jit(jax.random.split, static_argnums=1)(jax.random.PRNGKey(0), 400)
  active = np.asarray(jax.jit(q.dropout_stages, static_argnums=1)(keys, 4))
  used = active.sum(1)
  assert set(used.tolist()) == {1.0, 2.0, 3.0, 4.0}
  np.testing.assert_array_equal(active, np.arange(4)[None] < used[:, None])  # always the first n stages


def _grads(module, z):
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)

  def term(name, params, z):
    return jnp.sum(module.apply({"params": params}, z)[name])

  @jax.jit
  def grads(params, z):
    names = ("codebook_loss", "commitment_loss", "quantized")
    return {n: jax.grad(lambda p, z, n=n: term(n, p, z), argnums=(0, 1))(params, z) for n in names}

  return grads(variables["params"], z), variables


def test_trained_codebooks_each_term_moves_only_its_side():
  z = jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32)
  grads, variables = _grads(q.ResidualVectorQuantizer(6, 4, num_stages=2, ema=False), z)
  assert variables["params"]["codebook"].shape == (2, 6, 4)
  g_code, g_z = grads["codebook_loss"]
  assert np.all(np.abs(g_code["codebook"]).sum((1, 2)) > 0) and np.abs(g_z).max() == 0  # both stages
  g_code, g_z = grads["commitment_loss"]
  assert np.abs(g_code["codebook"]).max() == 0 and np.abs(g_z).max() > 0
  g_code, g_z = grads["quantized"]
  np.testing.assert_array_equal(g_z, 1.0)  # straight-through
  assert np.abs(g_code["codebook"]).max() == 0
  shared, variables = _grads(
    q.ResidualVectorQuantizer(6, 4, num_stages=3, ema=False, shared_codebook=True), z
  )
  assert variables["params"]["codebook"].shape == (1, 6, 4)
  assert np.abs(shared["codebook_loss"][0]["codebook"]).max() > 0


def test_eval_stages_and_per_stage_metrics():
  z = jnp.asarray(RNG.normal(size=(4, 3, 4)), jnp.float32)
  module = q.ResidualVectorQuantizer(6, 4, num_stages=3, ema=False, eval_stages=1)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  out = jax.jit(module.apply)(variables, z)
  first = np.asarray(variables["params"]["codebook"][0])[np.asarray(out["indices"][..., 0])]
  np.testing.assert_allclose(out["quantized"], first, atol=1e-6)  # one stage at evaluation
  assert out["indices"].shape == (4, 3, 3)
  metrics = out["metrics"]
  assert float(metrics["stages_used"]) == 1.0
  assert {f"perplexity_stage{s}" for s in range(3)} | {"perplexity", "codes_used"} <= set(metrics)
  counts = np.bincount(np.asarray(out["indices"][..., 0]).ravel(), minlength=6)
  np.testing.assert_allclose(metrics["codes_used_stage0"], np.mean(counts > 0))
  np.testing.assert_allclose(metrics["codes_used_stage1"], 0.0)  # unused stages count nothing
  # training with dropout uses a random number of stages per example, evaluation with 0 uses all
  full = q.ResidualVectorQuantizer(6, 4, num_stages=3, ema=False, quantizer_dropout=True)
  out = jax.jit(functools.partial(full.apply, train=True))(
    variables, z, rngs={"sample": jax.random.PRNGKey(3)}
  )
  assert 1.0 <= float(out["metrics"]["stages_used"]) <= 3.0
  assert float(jax.jit(full.apply)(variables, z)["metrics"]["stages_used"]) == 3.0


def test_ema_stages_are_seeded_from_the_residuals_of_the_seeded_stages_before_them():
  z = jnp.asarray(RNG.normal(size=(8, 8, 3)), jnp.float32)
  module = q.ResidualVectorQuantizer(4, 3, num_stages=2, codebook_init="random_data", decay=1.0 - 1e-9)
  variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, z)
  apply = jax.jit(functools.partial(module.apply, train=True, mutable=["vq_ema"]))
  out, state = apply(variables, z, rngs={"sample": jax.random.PRNGKey(1)})
  codebooks = np.asarray(state["vq_ema"]["codebook"])
  flat = np.asarray(z).reshape(-1, 3)
  assert all(any(np.allclose(c, row, atol=1e-6) for row in flat) for c in codebooks[0])  # rows of z
  residual = flat - codebooks[0][_nearest(flat, codebooks[0])]
  assert all(any(np.allclose(c, row, atol=1e-6) for row in residual) for c in codebooks[1])  # of its residual
  assert int(state["vq_ema"]["started"]) == 1
  np.testing.assert_array_equal(out["codebook_loss"], 0.0)  # EMA: no codebook term
