"""Ex-post Gaussian mixtures (ae_jax.generation.mixture): EM recovers known mixtures, log_prob is the mixture
log-density (against scipy), sampling follows the fit, degenerate data stays finite."""

import numpy as np
import pytest
from scipy import stats

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.generation import GaussianMixture, fit_gaussian_mixture

WEIGHTS = np.asarray([0.2, 0.3, 0.5])
MEANS = np.asarray([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])  # distinct x: sorting by x matches components
VARIANCES = np.asarray([[1.0, 0.25], [0.5, 2.0], [1.5, 1.0]])
FULL_COVS = np.asarray([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 2.0]], [[1.5, 0.0], [0.0, 0.3]]])


def _draw(covs, n=4000, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.choice(3, size=n, p=WEIGHTS)
  if covs.ndim == 2:
    return MEANS[labels] + rng.standard_normal((n, 2)) * np.sqrt(covs[labels])
  chol = np.linalg.cholesky(covs)
  return MEANS[labels] + np.einsum("nij,nj->ni", chol[labels], rng.standard_normal((n, 2)))


def _sorted(gm: GaussianMixture):
  order = np.argsort(gm.means[:, 0])
  return gm.weights[order], gm.means[order], gm.covariances[order]


def _scipy_log_prob(gm: GaussianMixture, x):
  covs = gm.covariances if gm.covariance == "full" else [np.diag(v) for v in gm.covariances]
  parts = zip(gm.weights, gm.means, covs, strict=True)
  dens = [w * stats.multivariate_normal(m, c).pdf(x) for w, m, c in parts]
  return np.log(np.sum(dens, axis=0))


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_fit_recovers_a_diagonal_mixture(covariance):
  x = _draw(VARIANCES)
  gm = fit_gaussian_mixture(x, 3, covariance=covariance, seed=1)
  assert gm.converged and gm.covariance == covariance
  weights, means, covs = _sorted(gm)
  np.testing.assert_allclose(weights, WEIGHTS, atol=0.02)
  np.testing.assert_allclose(means, MEANS, atol=0.1)
  variances = covs if covariance == "diag" else np.diagonal(covs, axis1=1, axis2=2)
  np.testing.assert_allclose(variances, VARIANCES, rtol=0.12)
  if covariance == "full":
    np.testing.assert_allclose(covs[:, 0, 1], 0.0, atol=0.1)


def test_fit_recovers_full_covariances_that_diag_cannot():
  x = _draw(FULL_COVS, seed=2)
  full = fit_gaussian_mixture(x, 3, covariance="full", seed=3)
  diag = fit_gaussian_mixture(x, 3, covariance="diag", seed=3)
  weights, means, covs = _sorted(full)
  np.testing.assert_allclose(weights, WEIGHTS, atol=0.02)
  np.testing.assert_allclose(means, MEANS, atol=0.1)
  np.testing.assert_allclose(covs, FULL_COVS, atol=0.15)
  # On well-separated components the full model gains the correlations' mutual information,
  # sum_k w_k * -log(1 - rho_k^2) / 2 nats per point (0.051 here), over the diagonal one.
  rho = FULL_COVS[:, 0, 1] / np.sqrt(FULL_COVS[:, 0, 0] * FULL_COVS[:, 1, 1])
  gain = full.log_prob(x).mean() - diag.log_prob(x).mean()
  assert abs(gain - np.sum(WEIGHTS * -0.5 * np.log1p(-(rho**2)))) < 0.015


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_prob_is_the_mixture_density(covariance):
  gm = fit_gaussian_mixture(_draw(FULL_COVS, n=600, seed=4), 3, covariance=covariance, seed=0)
  x = np.random.default_rng(5).normal(0.0, 5.0, (50, 2))
  np.testing.assert_allclose(gm.log_prob(x), _scipy_log_prob(gm, x), rtol=1e-10, atol=1e-10)
  # It integrates to 1 over the plane (midpoint rule on a grid covering the components).
  step = 0.1
  axis = np.arange(-16.0, 16.0, step) + step / 2
  grid = np.stack(np.meshgrid(axis, axis + 2.0), axis=-1).reshape(-1, 2)
  assert abs(np.exp(gm.log_prob(grid)).sum() * step**2 - 1.0) < 1e-3


def test_fit_is_deterministic_and_sampling_follows_the_mixture():
  x = _draw(FULL_COVS, n=1000, seed=6)
  a, b = fit_gaussian_mixture(x, 3, seed=7), fit_gaussian_mixture(x, 3, seed=7)
  np.testing.assert_array_equal(a.means, b.means)
  np.testing.assert_array_equal(a.covariances, b.covariances)
  gm = GaussianMixture(WEIGHTS, MEANS, FULL_COVS)
  samples = gm.sample(np.random.default_rng(8), 40_000)
  assert samples.shape == (40_000, 2)
  np.testing.assert_array_equal(samples, gm.sample(8, 40_000))
  mean = WEIGHTS @ MEANS
  second = np.einsum("k,kij->ij", WEIGHTS, FULL_COVS + np.einsum("ki,kj->kij", MEANS, MEANS))
  np.testing.assert_allclose(samples.mean(0), mean, atol=0.08)
  np.testing.assert_allclose(np.cov(samples.T), second - np.outer(mean, mean), rtol=0.03, atol=0.05)
  diag = GaussianMixture(WEIGHTS, MEANS, VARIANCES).sample(9, 40_000)
  np.testing.assert_allclose(np.var(diag[diag[:, 0] > 3.0], axis=0), VARIANCES[2], rtol=0.1)


@pytest.mark.parametrize("covariance", ["full", "diag"])
@pytest.mark.parametrize(
  "x",
  [
    np.full((50, 3), 2.5),  # every point equal
    np.repeat(np.asarray([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]]), 20, axis=0),  # 2 distinct points, 4 components
    np.asarray([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]]),  # fewer points than components
  ],
)
def test_degenerate_data_gives_finite_results(x, covariance):
  gm = fit_gaussian_mixture(x, 4, covariance=covariance)
  for value in (gm.weights, gm.means, gm.covariances, gm.log_prob(x), gm.log_prob(x + 1.0), gm.sample(0, 10)):
    assert np.all(np.isfinite(value))
  np.testing.assert_allclose(gm.weights.sum(), 1.0)
  # Every point is a (near-)collapsed component's centre: its density is high.
  assert gm.log_prob(x).min() > 0.0


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_identical_points_give_regularised_point_components(covariance):
  """Every component collapses onto the one point: mean the point, covariance exactly reg (times I)."""
  point = np.asarray([1.0, -2.0, 0.5])
  gm = fit_gaussian_mixture(np.tile(point, (40, 1)), 3, covariance=covariance, reg=1e-4)
  np.testing.assert_allclose(gm.means, np.tile(point, (3, 1)), rtol=1e-12)
  want = 1e-4 * (np.eye(3) if covariance == "full" else np.ones(3))
  np.testing.assert_allclose(gm.covariances, np.broadcast_to(want, gm.covariances.shape), rtol=1e-9)
  # log N(mu; mu, reg I) = -D/2 log(2 pi reg), whatever the weights.
  np.testing.assert_allclose(gm.log_prob(point[None]), [-1.5 * np.log(2 * np.pi * 1e-4)], rtol=1e-9)


def test_bad_arguments_raise_project_errors():
  x = _draw(VARIANCES, n=30)
  with pytest.raises(ConfigError, match="did you mean 'full'"):
    fit_gaussian_mixture(x, 2, covariance="ful")
  with pytest.raises(ConfigError, match="num_components"):
    fit_gaussian_mixture(x, 0)
  with pytest.raises(ConfigError, match="starts >= 1"):
    fit_gaussian_mixture(x, 2, starts=0)
  with pytest.raises(DataError, match="NaN"):
    fit_gaussian_mixture(np.where(np.arange(60).reshape(30, 2) == 7, np.nan, x), 2)
  with pytest.raises(DataError, match="shape"):
    fit_gaussian_mixture(x[:, 0], 2)


def test_several_starts_escape_the_local_optimum_one_start_lands_in():
  """Six clusters on a 3 x 2 grid (spacing 4, spread 0.5): from seed 8, the one k-means++ / k-means / EM
  start converges to a local optimum (two components on one cluster, one across two) 0.25 nats per point
  below the generating mixture; keeping the best of 5 starts finds the optimum near it, whose mean
  log-likelihood is at least the generating mixture's (the maximum-likelihood fit is, by definition; a
  closed-form bound, where sklearn is not installed to compare with). The convergence is recorded."""
  rng = np.random.default_rng(0)
  means = np.asarray([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0], [0.0, 4.0], [4.0, 4.0], [8.0, 4.0]])
  x = means[rng.integers(6, size=600)] + 0.5 * rng.standard_normal((600, 2))
  truth = GaussianMixture(np.full(6, 1 / 6), means, np.tile(0.25 * np.eye(2), (6, 1, 1)))
  truth_ll = float(truth.log_prob(x).mean())
  one = fit_gaussian_mixture(x, 6, seed=8, starts=1)
  best = fit_gaussian_mixture(x, 6, seed=8, starts=5)
  assert one.converged and one.starts == 1 and one.log_likelihood < truth_ll - 0.2
  assert best.converged and best.starts == 5 and truth_ll <= best.log_likelihood < truth_ll + 0.05
  np.testing.assert_allclose(best.log_likelihood, best.log_prob(x).mean(), rtol=1e-12)
  order = np.lexsort((best.means[:, 0], np.round(best.means[:, 1] / 4)))
  np.testing.assert_allclose(best.means[order], means, atol=0.15)
  assert 0 < best.iterations < 100
