"""Batch-level divergences: MMD against a numpy U-statistic and its null distribution, the β-TCVAE terms
against a float64 reference, closed-form total correlations, device-split / pmap invariance, and padding
(a valid mask) leaving the estimators over the real examples unchanged."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.losses import divergences as dv
from ae_jax.models import vae

RNG = np.random.default_rng(0)
DEVICES = 8

KERNEL_SPECS = {  # name: (family, prior variance, multipliers)
  "imq": ("imq", 1.0, (1.0,)),
  "rbf": ("rbf", 1.0, (1.0,)),
  "imq_wae": ("imq", 2.0, dv.WAE_MULTIPLIERS),
  "rbf_multi": ("rbf", 1.0, (0.5, 1.0, 2.0)),
}
KERNELS = {
  name: functools.partial(dv.imq_kernel if family == "imq" else dv.rbf_kernel, scale=scale, multipliers=mults)
  for name, (family, scale, mults) in KERNEL_SPECS.items()
}


def _np_kernel(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """The [N, M] Gram matrix in float64, written out independently of the module."""
  family, scale, mults = KERNEL_SPECS[name]
  d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  cs = [2.0 * x.shape[1] * scale * c for c in mults]
  if family == "imq":
    return sum(c / (c + d2) for c in cs)
  return sum(np.exp(-d2 / c) for c in cs)


def _np_mmd(name: str, x: np.ndarray, y: np.ndarray) -> float:
  n, m = len(x), len(y)
  kxx, kyy, kxy = _np_kernel(name, x, x), _np_kernel(name, y, y), _np_kernel(name, x, y)
  return (
    (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    - 2.0 * kxy.mean()
  )


def _split(fn, b: int, *gathered):
  """Runs fn(local..., gathered..., index) on each of DEVICES contiguous slices, as all_gather(tiled) lays
  them out, and concatenates the per-example outputs."""
  outs = []
  for k in range(DEVICES):
    sl = slice(k * b, (k + 1) * b)
    outs.append(fn(*(g[sl] for g in gathered), *gathered, jnp.arange(k * b, (k + 1) * b)))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


# ----------------------------------------------------------------------------- log-density and kernels


def test_normal_logpdf_matches_numpy_and_the_vae_density():
  z, mean = RNG.normal(size=(2, 5, 3)).astype(np.float32)
  logvar = RNG.normal(scale=0.5, size=(5, 3)).astype(np.float32)
  out = jax.jit(dv.normal_logpdf)(z, mean, logvar)
  chex.assert_shape(out, (5, 3))
  var = np.exp(logvar.astype(np.float64))
  expected = -0.5 * np.log(2 * np.pi * var) - 0.5 * (z - mean) ** 2 / var
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5, atol=1e-5)
  eps = (z - mean) * np.exp(-0.5 * logvar)
  chex.assert_trees_all_close(
    out.sum(-1), jax.jit(dv.diagonal_normal_logpdf)(eps, logvar), rtol=1e-5, atol=1e-5
  )
  assert vae.diagonal_normal_logpdf is dv.diagonal_normal_logpdf  # one density, used by the VAEs too
  assert vae.standard_normal_logpdf is dv.standard_normal_logpdf
  nll = jax.jit(losses.gaussian_nll)(mean, z, logvar)  # the reconstruction NLL is the same density, summed
  chex.assert_trees_all_close(nll, -expected.sum(-1).astype(np.float32), rtol=1e-5, atol=1e-5)


def test_kernel_scale_is_2_d_sigma2():
  """k(x, x) = number of scales; at |x - y|^2 = C = 2 D sigma^2 the IMQ kernel is 1/2 and the RBF 1/e."""
  d, sigma2 = 4, 1.5
  x = jnp.zeros((1, d))
  y = jnp.full((1, d), math.sqrt(2.0 * d * sigma2 / d))  # |x - y|^2 = C
  imq, rbf = (jax.jit(kernel, static_argnums=3) for kernel in (dv.imq_kernel, dv.rbf_kernel))
  chex.assert_trees_all_close(imq(x, y, sigma2), jnp.array([0.5]), rtol=1e-6)
  chex.assert_trees_all_close(rbf(x, y, sigma2), jnp.array([math.exp(-1.0)]), rtol=1e-6)
  for kernel in (imq, rbf):
    chex.assert_trees_all_close(kernel(x, x, sigma2, dv.WAE_MULTIPLIERS), jnp.array([7.0]), rtol=1e-6)


# ----------------------------------------------------------------------------- MMD


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_mmd_unbiased_matches_numpy_u_statistic(name):
  x = RNG.normal(size=(24, 3)).astype(np.float32)
  y = (RNG.normal(size=(17, 3)) + 0.3).astype(np.float32)
  out = jax.jit(dv.mmd_unbiased, static_argnums=2)(x, y, KERNELS[name])
  chex.assert_shape(out, ())
  chex.assert_trees_all_close(out, np.float32(_np_mmd(name, x.astype(np.float64), y)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_mmd_terms_average_to_mmd_unbiased_on_one_and_on_8_devices(name):
  """mean_i mmd_terms = mmd_unbiased; 8 device slices with index offsets give the same per-example terms."""
  kernel = KERNELS[name]
  b = 6
  z = (RNG.normal(size=(DEVICES * b, 5)) * 0.7 + 0.2).astype(np.float32)
  prior = RNG.normal(size=(DEVICES * b, 5)).astype(np.float32)
  terms_fn = jax.jit(functools.partial(dv.mmd_terms, kernel=kernel))
  one = terms_fn(z, prior, z, prior, jnp.arange(DEVICES * b))
  chex.assert_shape(one, (DEVICES * b,))
  reference = jax.jit(dv.mmd_unbiased, static_argnums=2)(z, prior, kernel)
  chex.assert_trees_all_close(one.mean(), reference, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(one.mean(), np.float32(_np_mmd(name, z.astype(np.float64), prior)), rtol=1e-4)
  split = _split(terms_fn, b, z, prior)
  chex.assert_trees_all_close(split, one, rtol=1e-6, atol=1e-6)
  per_device = split.reshape(DEVICES, b).mean(axis=1)
  chex.assert_trees_all_close(per_device.mean(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["imq", "rbf"])
def test_mmd_is_unbiased_under_the_null_and_positive_for_a_shift(name):
  """500 independent estimates (32 vs 32 samples, D = 4): same distribution -> mean within 4 standard errors
  of 0 and a good share of negative estimates; means shifted by 0.5 per dimension -> mean above 20 SEs."""
  kernel = KERNELS[name]

  @jax.jit
  def estimates(shift: jax.Array) -> jax.Array:
    def one(key):
      kx, ky = jax.random.split(key)
      x = jax.random.normal(kx, (32, 4)) + shift
      return dv.mmd_unbiased(x, jax.random.normal(ky, (32, 4)), kernel)

    return jax.vmap(one)(jax.random.split(jax.random.key(1), 500))

  null, shifted = np.asarray(estimates(0.0)), np.asarray(estimates(0.5))
  se = null.std() / math.sqrt(len(null))
  assert abs(null.mean()) < 4 * se, (null.mean(), se)
  assert 0.3 < (null < 0).mean() < 0.7
  assert shifted.mean() > 20 * shifted.std() / math.sqrt(len(shifted)), shifted.mean()


def test_pmap_with_all_gather_matches_one_device_value_and_gradient():
  """The intended use: gather under pmap, mean of per-example terms, pmean; value and input gradients equal
  the one-device estimator's (all_gather's transpose routes every device's cotangent back)."""
  b, d, n = 4, 3, 10_000
  z = RNG.normal(size=(DEVICES * b, d)).astype(np.float32)
  prior = RNG.normal(size=(DEVICES * b, d)).astype(np.float32)
  mean = RNG.normal(size=(DEVICES * b, d)).astype(np.float32)
  logvar = RNG.normal(scale=0.3, size=(DEVICES * b, d)).astype(np.float32)

  def objective(terms_mmd, tc):
    return terms_mmd.mean() + (tc["mi"] + 3.0 * tc["tc"] + 0.5 * tc["dwkl"]).mean()

  def per_device(z, prior, mean, logvar):
    gather = functools.partial(jax.lax.all_gather, axis_name=parallel.AXIS, tiled=True)
    index = dv.local_index(z.shape[0], parallel.AXIS)
    mmd = dv.mmd_terms(z, prior, gather(z), gather(prior), index)
    tc = dv.tc_terms(z, mean, logvar, gather(mean), gather(logvar), index, n)
    return jax.lax.pmean(objective(mmd, tc), parallel.AXIS)

  p_loss = jax.pmap(per_device, axis_name=parallel.AXIS)

  def sharded(*args):
    return p_loss(*(a.reshape(DEVICES, b, d) for a in args))[0]

  def single(z, prior, mean, logvar):
    index = jnp.arange(z.shape[0])
    return objective(
      dv.mmd_terms(z, prior, z, prior, index), dv.tc_terms(z, mean, logvar, mean, logvar, index, n)
    )

  args = (z, prior, mean, logvar)
  value, grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2, 3)))(*args)
  value1, grads1 = jax.jit(jax.value_and_grad(single, argnums=(0, 1, 2, 3)))(*args)
  chex.assert_trees_all_close(value, value1, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(grads, grads1, rtol=1e-4, atol=1e-6)


def test_mmd_needs_two_samples():
  with pytest.raises(ValueError, match="at least 2"):
    dv.mmd_unbiased(jnp.zeros((1, 2)), jnp.zeros((5, 2)))


# ----------------------------------------------------------------------------- β-TCVAE


def _posteriors(m: int, d: int, rho: float, s2: float, seed: int):
  """Means ~ N(0, Sigma - s2 I), variance s2 and one sample each: q(z) -> N(0, Sigma) as m grows. Sigma has
  unit variances and correlation rho, so TC(N(0, Sigma)) = -0.5 log det Sigma."""
  rng = np.random.default_rng(seed)
  sigma = np.full((d, d), rho) + (1.0 - rho) * np.eye(d)
  mean = rng.normal(size=(m, d)) @ np.linalg.cholesky(sigma - s2 * np.eye(d)).T
  z = mean + math.sqrt(s2) * rng.normal(size=(m, d))
  logvar = np.full((m, d), math.log(s2))
  closed_form_tc = -0.5 * np.linalg.slogdet(sigma)[1]
  return z.astype(np.float32), mean.astype(np.float32), logvar.astype(np.float32), closed_form_tc


@functools.partial(jax.jit, static_argnames=("dataset_size", "estimator"))
def _tc_one_device(z, mean, logvar, dataset_size, estimator):
  return dv.tc_terms(z, mean, logvar, mean, logvar, jnp.arange(z.shape[0]), dataset_size, estimator)


def _np_tc_reference(z, mean, logvar, n, estimator):
  """The estimators in float64 from an explicit [M, M] weight matrix (the paper's MSS placement)."""
  z, mean, logvar = (a.astype(np.float64) for a in (z, mean, logvar))
  m = len(z)
  if estimator == "mws":
    w = np.full((m, m), 1.0 / (n * m))
  else:
    w = np.full((m, m), 1.0 / (m - 1))
    for i in range(m):
      w[i, i] = 1.0 / n
      w[i, (i + 1) % m] = (n - m + 1) / (n * (m - 1))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
  var = np.exp(logvar)
  log_q = -0.5 * (np.log(2 * np.pi * var[None]) + (z[:, None] - mean[None]) ** 2 / var[None])  # [M, M, D]
  log_qz = np_logsumexp(log_q.sum(-1), b=w, axis=1)
  log_prod = np_logsumexp(log_q, b=w[:, :, None], axis=1).sum(-1)
  log_qz_x = np.array([log_q[i, i].sum() for i in range(m)])
  log_pz = (-0.5 * (np.log(2 * np.pi) + z**2)).sum(-1)
  return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod, "dwkl": log_prod - log_pz}


@pytest.mark.parametrize("estimator", dv.TC_ESTIMATORS)
def test_tc_terms_match_a_float64_reference_and_sum_to_the_sampled_kl(estimator):
  m, d, n = 40, 5, 1000
  z, mean, logvar, _ = _posteriors(m, d, 0.3, 0.2, seed=3)
  logvar = logvar + RNG.normal(scale=0.3, size=logvar.shape).astype(np.float32)
  terms = _tc_one_device(z, mean, logvar, dataset_size=n, estimator=estimator)
  for name in ("mi", "tc", "dwkl"):
    chex.assert_shape(terms[name], (m,))
  expected = _np_tc_reference(z, mean, logvar, n, estimator)
  chex.assert_trees_all_close(
    {k: terms[k] for k in expected}, jax.tree.map(np.float32, expected), rtol=1e-4, atol=1e-4
  )
  total = terms["mi"] + terms["tc"] + terms["dwkl"]
  chex.assert_trees_all_close(total, terms["log_qz_x"] - terms["log_pz"], rtol=1e-6, atol=2e-5)
  var = np.exp(logvar.astype(np.float64))
  log_ratio = (-0.5 * (np.log(var) + (z - mean) ** 2 / var - z.astype(np.float64) ** 2)).sum(-1)
  chex.assert_trees_all_close(total, log_ratio.astype(np.float32), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("estimator", dv.TC_ESTIMATORS)
def test_tc_terms_split_over_8_devices_equal_one_device(estimator):
  b, d, n = 5, 4, 500
  z, mean, logvar, _ = _posteriors(DEVICES * b, d, 0.5, 0.3, seed=4)
  fn = jax.jit(functools.partial(dv.tc_terms, dataset_size=n, estimator=estimator))

  def local(z, mean, logvar, _z_all, mean_all, logvar_all, index):
    return fn(z, mean, logvar, mean_all, logvar_all, index)

  split = _split(local, b, z, mean, logvar)
  one = _tc_one_device(z, mean, logvar, dataset_size=n, estimator=estimator)
  chex.assert_trees_all_close(split, one, rtol=1e-6, atol=1e-5)


def test_tc_of_a_correlated_aggregate_posterior_matches_the_closed_form():
  """The batch is the whole dataset (M = N = 2048, D = 3, correlation 0.6, posterior variance 0.3), so
  q(z) ~= N(0, Sigma): MSS's TC is within 0.1 nats of -0.5 log det Sigma = 0.522 (its Monte Carlo standard
  error is ~0.025). MWS equals it after removing the exact M = N offsets of its log-sum-exp weights 1/(N M):
  log q(z) - log N, hence TC + (D - 1) log N, MI + log N, dimension-wise KL - D log N."""
  m, d = 2048, 3
  z, mean, logvar, closed_form = _posteriors(m, d, 0.6, 0.3, seed=0)
  mss = jax.tree.map(
    lambda v: float(v.mean()), _tc_one_device(z, mean, logvar, dataset_size=m, estimator="mss")
  )
  mws = jax.tree.map(
    lambda v: float(v.mean()), _tc_one_device(z, mean, logvar, dataset_size=m, estimator="mws")
  )
  assert closed_form == pytest.approx(0.5221, abs=1e-4)
  assert mss["tc"] == pytest.approx(closed_form, abs=0.1)
  log_n = math.log(m)
  assert mws["tc"] - (d - 1) * log_n == pytest.approx(mss["tc"], abs=2e-3)
  assert mws["mi"] - log_n == pytest.approx(mss["mi"], abs=2e-3)
  assert mws["dwkl"] + d * log_n == pytest.approx(mss["dwkl"], abs=2e-3)
  # q(z_d) = N(0, 1) = p(z_d), so the dimension-wise KL is ~0 as well.
  assert mss["dwkl"] == pytest.approx(0.0, abs=0.05)


def test_tc_of_a_minibatch_from_a_large_dataset_matches_the_closed_form():
  """MSS with M = 1024 examples of a dataset of N = 100000 drawn from the same model: within 0.1 nats."""
  z, mean, logvar, closed_form = _posteriors(1024, 3, 0.6, 0.3, seed=1)
  tc = _tc_one_device(z, mean, logvar, dataset_size=100_000, estimator="mss")["tc"].mean()
  assert float(tc) == pytest.approx(closed_form, abs=0.1)


@pytest.mark.parametrize("estimator", dv.TC_ESTIMATORS)
def test_tc_of_a_factorised_aggregate_posterior_is_zero(estimator):
  """Independent latents (Sigma = I), M = N = 1024: TC within 0.03 nats of 0 (after MWS's offset)."""
  m, d = 1024, 3
  z, mean, logvar, closed_form = _posteriors(m, d, 0.0, 0.3, seed=2)
  assert closed_form == 0.0
  tc = float(_tc_one_device(z, mean, logvar, dataset_size=m, estimator=estimator)["tc"].mean())
  offset = (d - 1) * math.log(m) if estimator == "mws" else 0.0
  assert tc - offset == pytest.approx(0.0, abs=0.03)


@pytest.mark.parametrize("estimator", dv.TC_ESTIMATORS)
def test_a_posterior_that_ignores_x_has_no_index_code_information(estimator):
  """q(z|x) = N(0, I) for every x: MSS gives MI = TC = dimension-wise KL = 0 exactly (its weights sum to 1);
  MWS gives exactly its offsets log N, (D - 1) log N and -D log N."""
  m, d, n = 64, 4, 5000
  z = RNG.normal(size=(m, d)).astype(np.float32)
  zeros = np.zeros((m, d), np.float32)
  terms = _tc_one_device(z, zeros, zeros, dataset_size=n, estimator=estimator)
  log_n = math.log(n) if estimator == "mws" else 0.0
  expected = {"mi": log_n, "tc": (d - 1) * log_n, "dwkl": -d * log_n}
  for name, value in expected.items():
    chex.assert_trees_all_close(terms[name], np.full(m, value, np.float32), atol=1e-4)


def test_tc_terms_reject_bad_arguments():
  z = jnp.zeros((8, 2))
  with pytest.raises(ValueError, match="unknown total-correlation estimator"):
    dv.tc_terms(z, z, z, z, z, jnp.arange(8), 100, estimator="mis")
  with pytest.raises(ValueError, match="smaller than the global batch"):
    dv.tc_terms(z, z, z, z, z, jnp.arange(8), 4)


# ----------------------------------------------------------------------------- padding


def _real_mask(m: int, num_real: int, seed: int) -> np.ndarray:
  """A 0/1 float mask [m] with `num_real` ones at random positions (padding anywhere, not only at the end)."""
  mask = np.zeros(m, np.float32)
  mask[np.random.default_rng(seed).choice(m, num_real, replace=False)] = 1.0
  return mask


@pytest.mark.parametrize("name", ["imq", "rbf_multi"])
def test_mmd_terms_with_padding_are_the_estimate_over_the_real_examples(name):
  """With a valid mask the real rows are the per-example terms of the real examples alone (their mean is
  mmd_unbiased of them), padded rows are 0, an all-ones mask changes nothing, and 8 device slices agree."""
  kernel = KERNELS[name]
  b, d = 6, 4
  m = DEVICES * b
  z = (RNG.normal(size=(m, d)) * 0.8 + 0.3).astype(np.float32)
  prior = RNG.normal(size=(m, d)).astype(np.float32)
  valid = _real_mask(m, 29, seed=5)
  real = valid > 0
  fn = jax.jit(functools.partial(dv.mmd_terms, kernel=kernel))
  out = fn(z, prior, z, prior, jnp.arange(m), valid_all=valid)
  alone = fn(z[real], prior[real], z[real], prior[real], jnp.arange(real.sum()))
  chex.assert_trees_all_close(out[real], alone, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out)[~real] == 0.0)
  chex.assert_trees_all_close(
    out.sum() / real.sum(),
    jax.jit(dv.mmd_unbiased, static_argnums=2)(z[real], prior[real], kernel),
    rtol=1e-5,
    atol=1e-6,
  )
  chex.assert_trees_all_close(
    fn(z, prior, z, prior, jnp.arange(m), valid_all=np.ones(m)),
    fn(z, prior, z, prior, jnp.arange(m)),
    rtol=1e-6,
  )
  split = _split(
    lambda zl, pl, z_all, p_all, index: fn(zl, pl, z_all, p_all, index, valid_all=valid), b, z, prior
  )
  chex.assert_trees_all_close(split, out, rtol=1e-6, atol=1e-6)


def test_mmd_terms_with_fewer_than_two_real_examples_are_zero():
  z = RNG.normal(size=(8, 3)).astype(np.float32)
  fn = jax.jit(dv.mmd_terms)
  for num_real in (0, 1):
    out = fn(z, z + 1.0, z, z + 1.0, jnp.arange(8), valid_all=_real_mask(8, num_real, seed=0))
    chex.assert_trees_all_equal(out, np.zeros(8, np.float32))


@pytest.mark.parametrize("estimator", dv.TC_ESTIMATORS)
def test_tc_terms_with_padding_are_the_terms_of_the_real_examples(estimator):
  """With a valid mask, the real rows equal tc_terms of the real examples alone (MSS's next example is the
  next real one), padded rows are 0, an all-ones mask changes nothing, and 8 device slices agree."""
  b, d, n = 5, 3, 700
  m = DEVICES * b
  z, mean, logvar, _ = _posteriors(m, d, 0.4, 0.3, seed=6)
  logvar = logvar + RNG.normal(scale=0.3, size=logvar.shape).astype(np.float32)
  valid = _real_mask(m, 23, seed=7)
  real = valid > 0
  fn = jax.jit(functools.partial(dv.tc_terms, dataset_size=n, estimator=estimator))
  out = fn(z, mean, logvar, mean, logvar, jnp.arange(m), valid_all=valid)
  alone = _tc_one_device(z[real], mean[real], logvar[real], dataset_size=n, estimator=estimator)
  chex.assert_trees_all_close({k: v[real] for k, v in out.items()}, alone, rtol=1e-5, atol=1e-4)
  assert all(np.all(np.asarray(v)[~real] == 0.0) for v in out.values())
  everything = fn(z, mean, logvar, mean, logvar, jnp.arange(m), valid_all=np.ones(m, np.float32))
  chex.assert_trees_all_close(everything, _tc_one_device(z, mean, logvar, n, estimator), rtol=1e-5, atol=1e-4)

  def local(z, mean, logvar, _z_all, mean_all, logvar_all, index):
    return fn(z, mean, logvar, mean_all, logvar_all, index, valid_all=valid)

  chex.assert_trees_all_close(_split(local, b, z, mean, logvar), out, rtol=1e-6, atol=1e-5)


def test_tc_terms_of_a_single_real_example_treat_its_posterior_as_the_aggregate():
  """One real example among padding: MSS gives it weight 1, so MI = TC = 0 and the dimension-wise KL is the
  whole sampled KL; MWS stays finite (its offsets log N, (D - 1) log N, -D log N)."""
  z, mean, logvar, _ = _posteriors(8, 3, 0.2, 0.5, seed=8)
  valid = _real_mask(8, 1, seed=9)
  i = int(np.argmax(valid))
  fn = jax.jit(dv.tc_terms, static_argnames=("dataset_size", "estimator"))
  mss = fn(z, mean, logvar, mean, logvar, jnp.arange(8), dataset_size=100, estimator="mss", valid_all=valid)
  np.testing.assert_allclose([mss["mi"][i], mss["tc"][i]], [0.0, 0.0], atol=1e-5)
  np.testing.assert_allclose(mss["dwkl"][i], mss["log_qz_x"][i] - mss["log_pz"][i], rtol=1e-6)
  mws = fn(z, mean, logvar, mean, logvar, jnp.arange(8), dataset_size=100, estimator="mws", valid_all=valid)
  np.testing.assert_allclose([mws["mi"][i], mws["tc"][i]], [math.log(100), 2 * math.log(100)], rtol=1e-5)
  assert all(np.isfinite(np.asarray(v)).all() for v in (*mss.values(), *mws.values()))
