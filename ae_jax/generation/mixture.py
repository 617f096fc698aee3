"""Ex-post density estimation (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"): a
Gaussian mixture fitted by EM to a trained autoencoder's latent codes, to sample new codes for its decoder.

p(x) = sum_k w_k N(x; mu_k, C_k), C_k full [D, D] or diagonal [D]. `fit_gaussian_mixture` runs EM in numpy
float64: k-means++ seeding from `seed` (deterministic), one hard assignment to the nearest seed and an
M-step give the starting parameters; then E-steps (responsibilities by log-sum-exp) and M-steps until the
mean log-likelihood improves by less than `tol` nats or `iterations` EM steps ran. `reg` is added to every
variance (the diagonal of C_k), so a component that collapses onto one point, or is left with no point,
keeps a positive-definite covariance: log-densities stay finite. Weights are N_k / N with N_k >= 1e-10;
a component left with no point keeps its last mean (its k-means++ seed at first).

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
  log-likelihood by less than tol; `iterations`: EM steps run."""

  weights: np.ndarray
  means: np.ndarray
  covariances: np.ndarray
  converged: bool = False
  iterations: int = 0

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


def fit_gaussian_mixture(
  x: np.ndarray,
  num_components: int,
  *,
  covariance: str = "full",
  iterations: int = 100,
  tol: float = 1e-6,
  seed: int = 0,
  reg: float = 1e-6,
) -> GaussianMixture:
  """Fits a k-component Gaussian mixture to points x [N, D] by EM (module docstring); deterministic for a
  seed. `tol` in nats per point; `reg` > 0 is added to every variance."""
  if covariance not in COVARIANCES:
    raise ConfigError(
      f"mixture: unknown covariance '{covariance}'; {did_you_mean(covariance, COVARIANCES)}"
      f"choose one of {list(COVARIANCES)}"
    )
  if num_components < 1 or iterations < 0 or not reg > 0:
    raise ConfigError(
      f"mixture: needs num_components >= 1, iterations >= 0 and reg > 0, got num_components="
      f"{num_components}, iterations={iterations}, reg={reg}"
    )
  x = _check_points(x, "fit_gaussian_mixture")
  rng = np.random.default_rng(seed)
  centers = _kmeans_plus_plus(x, num_components, rng)
  nearest = np.argmin(np.stack([np.sum((x - c) ** 2, axis=1) for c in centers], axis=1), axis=1)
  resp = np.eye(num_components)[nearest]
  weights, means, covs = _m_step(x, resp, centers, covariance, reg)
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
  return GaussianMixture(weights, means, covs, converged=converged, iterations=steps)
