"""Ex-post density estimation (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"): a
Gaussian mixture fitted by EM to a trained autoencoder's latent codes, to sample new codes for its decoder.

p(x) = sum_k w_k N(x; mu_k, C_k), C_k full [D, D] or diagonal [D]. `fit_gaussian_mixture` runs EM in numpy
float64 from `starts` starting points and keeps the fit of the highest mean log-likelihood (sklearn's
GaussianMixture keeps the best of `n_init`, default 1, each start one k-means run, as each start here).
Each start: k-means++ seeding (Arthur and Vassilvitskii 2007), then Lloyd's k-means iterations (at most
`kmeans_iterations`, until no point changes cluster), then an M-step on that hard assignment; then E-steps
(responsibilities by log-sum-exp) and M-steps until the mean log-likelihood improves by less than `tol`
nats or `iterations` EM steps ran. The starts draw their seedings one after another from one numpy
Generator of `seed`, so the first of several starts is the one start of `starts=1`, and a fit is
deterministic for a seed. `reg` is added to every variance (the diagonal of C_k), so a component that
collapses onto one point, or is left with no point, keeps a positive-definite covariance: log-densities
stay finite. Weights are N_k / N with N_k >= 1e-10; a component left with no point keeps its last mean (its
k-means centre at first).

A fit records its convergence: `converged` and `iterations` (EM steps) of the start kept, its mean
log-likelihood on the fitted points and the number of starts (`ae_jax.generation.latent` caches them with
the mixture).

Log-densities (nats) use the Cholesky factor of each C_k: log N(x; mu, C) = -0.5 (|L^-1 (x - mu)|^2
+ log det C + D log 2 pi). The project's Gaussian log-densities (`ae_jax.losses.divergences`) are float32 jax
functions of diagonal Gaussians; this module needs full covariances in float64, hence its own.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg

from ae_jax.core.errors import ConfigError, DataError, did_you_mean

COVARIANCES = ("full", "diag")
_LOG_2PI = math.log(2.0 * math.pi)
_MIN_COUNT = 1e-10


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
  peak = np.max(a, axis=axis, keepdims=True)
  peak = np.where(np.isfinite(peak), peak, 0.0)
  return np.log(np.sum(np.exp(a - peak), axis=axis)) + np.squeeze(peak, axis=axis)


def _cholesky(cov: np.ndarray) -> np.ndarray:
  """Lower Cholesky factors of [k, D, D] symmetric PSD matrices, adding jitter (scaled by the mean
  variance) to any that float64 rounding left not positive definite."""
  cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
  out = np.empty_like(cov)
  eye = np.eye(cov.shape[-1])
  for k, c in enumerate(cov):
    scale = max(float(np.trace(c)) / c.shape[0], 1e-300)
    for jitter in (0.0, 1e-12, 1e-9, 1e-6, 1e-3):
      try:
        out[k] = np.linalg.cholesky(c + jitter * scale * eye)
        break
      except np.linalg.LinAlgError:
        continue
    else:
      raise np.linalg.LinAlgError(f"covariance {k} is not positive definite even with jitter")
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """A fitted mixture (float64 numpy arrays): weights [k] (sum 1), means [k, D], covariances [k, D, D]
  ("full") or [k, D] ("diag", variances). `converged`: the last EM step improved the mean
  log-likelihood by less than tol; `iterations`: EM steps run; `log_likelihood`: the mean log-likelihood
  (nats per point) of the fitted points under this mixture (nan when unknown); `starts`: how many starts
  the fit kept the best of."""

  weights: np.ndarray
  means: np.ndarray
  covariances: np.ndarray
  converged: bool = False
  iterations: int = 0
  log_likelihood: float = float("nan")
  starts: int = 1

  @property
  def covariance(self) -> str:
    """ "full" or "diag"."""
    return "full" if self.covariances.ndim == 3 else "diag"

  def component_log_prob(self, x: np.ndarray) -> np.ndarray:
    """log w_k + log N(x_n; mu_k, C_k) in nats: x [N, D] -> [N, k] float64."""
    x = _check_points(x, "GaussianMixture.log_prob", self.means.shape[1])
    return np.log(self.weights)[None, :] + _gaussian_log_prob(x, self.means, self.covariances)

  def log_prob(self, x: np.ndarray) -> np.ndarray:
    """log p(x_n) in nats: x [N, D] -> [N] float64."""
    return _logsumexp(self.component_log_prob(x), axis=1)

  def sample(self, rng: np.random.Generator | int, n: int) -> np.ndarray:
    """n points drawn from the mixture, in random order: [n, D] float64. `rng`: a Generator or a seed."""
    rng = np.random.default_rng(rng)
    counts = rng.multinomial(n, self.weights / self.weights.sum())
    dim = self.means.shape[1]
    parts = []
    for k, count in enumerate(counts):
      z = rng.standard_normal((count, dim))
      if self.covariance == "full":
        parts.append(self.means[k] + z @ _cholesky(self.covariances[k : k + 1])[0].T)
      else:
        parts.append(self.means[k] + z * np.sqrt(self.covariances[k]))
    return rng.permutation(np.concatenate(parts, axis=0), axis=0)


def _gaussian_log_prob(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
  """log N(x_n; mu_k, C_k): [N, D], [k, D], [k, D, D] or [k, D] -> [N, k] float64."""
  dim = x.shape[1]
  maha = np.empty((x.shape[0], means.shape[0]))
  if covariances.ndim == 2:
    for k in range(means.shape[0]):
      maha[:, k] = np.sum((x - means[k]) ** 2 / covariances[k], axis=1)
    logdet = np.sum(np.log(covariances), axis=-1)[None]
  else:
    chol = _cholesky(covariances)
    for k in range(means.shape[0]):
      solved = scipy.linalg.solve_triangular(chol[k], (x - means[k]).T, lower=True)  # L^-1 (x - mu): [D, N]
      maha[:, k] = np.sum(solved**2, axis=0)
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)[None]
  return -0.5 * (maha + logdet + dim * _LOG_2PI)


def _check_points(x: np.ndarray, where: str, dim: int | None = None) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 1 or (dim is not None and x.shape[1] != dim):
    want = f"[N, {dim}]" if dim is not None else "[N, D] with N >= 1"
    raise DataError(f"{where}: expects points of shape {want}, got {list(x.shape)}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{where}: the points contain NaN or inf ({int(np.sum(~np.isfinite(x)))} values)")
  return x


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k seeds drawn by k-means++ (Arthur and Vassilvitskii 2007): [k, D]. When every point coincides with
  a seed already drawn (fewer distinct points than k), the next seed is uniform over the points."""
  centers = [x[rng.integers(x.shape[0])]]
  d2 = np.sum((x - centers[0]) ** 2, axis=1)
  for _ in range(1, k):
    total = d2.sum()
    index = rng.choice(x.shape[0], p=d2 / total) if total > 0 else rng.integers(x.shape[0])
    centers.append(x[index])
    d2 = np.minimum(d2, np.sum((x - x[index]) ** 2, axis=1))
  return np.stack(centers)


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """Index of the nearest centre of each point: x [N, D], centers [k, D] -> [N] int."""
  return np.argmin(np.stack([np.sum((x - c) ** 2, axis=1) for c in centers], axis=1), axis=1)


def _kmeans(x: np.ndarray, centers: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
  """Lloyd's k-means from `centers` [k, D]: at most `iterations` steps of moving each centre to the mean
  of its points and reassigning every point to its nearest centre, until no assignment changes; a centre
  left with no point stays where it is. Returns (centers [k, D], each point's centre [N])."""
  labels = _nearest(x, centers)
  for _ in range(iterations):
    counts = np.bincount(labels, minlength=len(centers))
    sums = np.zeros_like(centers)
    np.add.at(sums, labels, x)
    centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
    new = _nearest(x, centers)
    if np.array_equal(new, labels):
      break
    labels = new
  return centers, labels


def _m_step(
  x: np.ndarray, resp: np.ndarray, previous_means: np.ndarray, covariance: str, reg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Weights [k], means [k, D] and covariances (+ reg) from responsibilities resp [N, k]. A component
  with (almost) no responsibility keeps its previous mean instead of falling to the origin."""
  counts = resp.sum(axis=0) + _MIN_COUNT  # [k]
  weights = counts / counts.sum()
  means = (resp.T @ x + _MIN_COUNT * previous_means) / counts[:, None]
  dim = x.shape[1]
  covs = np.empty((means.shape[0], dim) if covariance == "diag" else (means.shape[0], dim, dim))
  for k in range(means.shape[0]):
    diff = x - means[k]
    if covariance == "diag":
      covs[k] = resp[:, k] @ (diff * diff) / counts[k] + reg
    else:
      covs[k] = (resp[:, k : k + 1] * diff).T @ diff / counts[k] + reg * np.eye(dim)
  return weights, means, covs


def _em(
  x: np.ndarray,
  centers: np.ndarray,
  labels: np.ndarray,
  covariance: str,
  iterations: int,
  tol: float,
  reg: float,
) -> GaussianMixture:
  """EM from the M-step of the hard assignment `labels` [N] to `centers` [k, D] (module docstring)."""
  weights, means, covs = _m_step(x, np.eye(len(centers))[labels], centers, covariance, reg)
  previous, converged, steps = -np.inf, False, 0
  while steps < iterations:
    steps += 1
    log_joint = np.log(weights)[None] + _gaussian_log_prob(x, means, covs)  # E-step: [N, k]
    log_norm = _logsumexp(log_joint, axis=1)
    resp = np.exp(log_joint - log_norm[:, None])
    weights, means, covs = _m_step(x, resp, means, covariance, reg)
    mean_ll = float(np.mean(log_norm))
    if abs(mean_ll - previous) < tol:
      converged = True
      break
    previous = mean_ll
  fitted = GaussianMixture(weights, means, covs, converged=converged, iterations=steps)
  return dataclasses.replace(fitted, log_likelihood=float(np.mean(fitted.log_prob(x))))


def fit_gaussian_mixture(
  x: np.ndarray,
  num_components: int,
  *,
  covariance: str = "full",
  iterations: int = 100,
  tol: float = 1e-6,
  seed: int = 0,
  reg: float = 1e-6,
  starts: int = 3,
  kmeans_iterations: int = 300,
) -> GaussianMixture:
  """Fits a k-component Gaussian mixture to points x [N, D] by EM from `starts` k-means starts, keeping
  the one of the highest mean log-likelihood (module docstring); deterministic for a seed. `tol` in nats
  per point; `reg` > 0 is added to every variance; `kmeans_iterations` >= 0 Lloyd steps at most per
  start."""
  if covariance not in COVARIANCES:
    raise ConfigError(
      f"mixture: unknown covariance '{covariance}'; {did_you_mean(covariance, COVARIANCES)}"
      f"choose one of {list(COVARIANCES)}"
    )
  if num_components < 1 or iterations < 0 or not reg > 0 or starts < 1 or kmeans_iterations < 0:
    raise ConfigError(
      f"mixture: needs num_components >= 1, iterations >= 0, reg > 0, starts >= 1 and kmeans_iterations "
      f">= 0, got num_components={num_components}, iterations={iterations}, reg={reg}, starts={starts}, "
      f"kmeans_iterations={kmeans_iterations}"
    )
  x = _check_points(x, "fit_gaussian_mixture")
  rng = np.random.default_rng(seed)
  best = None
  for _ in range(starts):
    centers, labels = _kmeans(x, _kmeans_plus_plus(x, num_components, rng), kmeans_iterations)
    fitted = _em(x, centers, labels, covariance, iterations, tol, reg)
    if best is None or fitted.log_likelihood > best.log_likelihood:
      best = fitted
  return dataclasses.replace(best, starts=starts)
