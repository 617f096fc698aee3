"""Sample-quality metrics in a feature space: Fréchet distance (FID's formula) and k-NN precision/recall.

Features are any [N, D] embeddings of real and generated examples (an Inception network's pool features
for FID proper; a trained encoder's or classifier's features here). All functions are numpy, on the host.

Fréchet distance (Heusel et al. 2017) between N(mu1, C1) and N(mu2, C2), the squared 2-Wasserstein
distance between the two Gaussians:

  d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2),

in squared feature units. The matrix square roots use symmetric eigendecompositions in float64 with
negative eigenvalues (rounding) clamped to 0, so rank-deficient covariances (fewer examples than
dimensions) give finite values; the result is clamped to >= 0. `feature_statistics` gives the mean and the
unbiased covariance (divisor N - 1, as pytorch-fid and the TTUR reference code).

Precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models"): each point of a set gets the radius of the ball around it reaching its k-th nearest
neighbour in its own set (itself excluded); precision is the fraction of generated points inside at least
one real ball (|f - r_i| <= radius_i), recall the fraction of real points inside at least one generated
ball. Both lie in [0, 1]. Squared Euclidean distances are computed in float64 by |a|^2 + |b|^2 - 2 a.b on
chunks of `chunk` rows against the whole other set (memory chunk * max(N, M) doubles), each set's radii after
centring it on its own mean and the cross distances after centring both on their joint mean (which leaves
distances unchanged and reduces the cancellation). In float32 the rounding of |a|^2 (relative 6e-8) swamps
the distances inside a cluster far from the centre: two clusters at +-1000 in 16 dimensions with spread
0.01 scored precision 1.0 where the exact value is 0.07 (tests/test_sample_metrics.py).

Inception Score (Salimans et al. 2016) of class logits [N, C] (the FID Inception network's 1,008 logits
without the fc bias, `inception.InceptionV3`'s "logits_unbiased", as torch-fidelity's default
`feature_layer_isc` and the original TensorFlow code): p(y|x) = softmax over all C logits in float64; the
N examples are shuffled by numpy's RandomState(`shuffle_seed`) permutation (torch-fidelity's default 2020;
None: kept in order, as the original) and cut into `splits` consecutive parts [i N / splits, (i + 1) N /
splits); each part's score is exp(mean_x KL(p(y|x) || p(y))), p(y) the part's mean of p(y|x); the result
is the mean and the standard deviation (divisor `splits`, numpy's default) of the parts' scores, as
torch-fidelity's `isc_features_to_metric`. It lies in [1, C].
"""

from __future__ import annotations

import numpy as np

from ae_jax.core.errors import ConfigError, DataError

__all__ = ["feature_statistics", "frechet_distance", "inception_score", "precision_recall"]


def _check_features(x: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
    raise DataError(f"{name}: expects features of shape [N, D] with N >= {min_rows}, got {list(x.shape)}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{name}: the features contain NaN or inf ({int(np.sum(~np.isfinite(x)))} values)")
  return x


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] (divisor N - 1) of features [N, D], N >= 2: float64."""
  x = _check_features(features, "feature_statistics", min_rows=2).astype(np.float64)
  mean = x.mean(axis=0)
  centred = x - mean
  return mean, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix, negative eigenvalues clamped to 0."""
  values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
  return (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """Fréchet distance d^2 (module docstring) between N(mu1, cov1) and N(mu2, cov2): means [D],
  covariances [D, D] (symmetric PSD) -> float >= 0, in squared feature units."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  dim = mu1.shape[0] if mu1.ndim == 1 else -1
  if mu1.shape != (dim,) or mu2.shape != (dim,) or cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
    raise DataError(
      f"frechet_distance: expects means [D] and covariances [D, D] of one D, got {list(mu1.shape)}, "
      f"{list(cov1.shape)}, {list(mu2.shape)}, {list(cov2.shape)}"
    )
  for name, value in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
    if not np.all(np.isfinite(value)):
      raise DataError(f"frechet_distance: {name} contains NaN or inf")
  root1 = _psd_sqrt(cov1)
  inner = np.linalg.eigvalsh(0.5 * ((root1 @ cov2 @ root1) + (root1 @ cov2 @ root1).T))
  trace_sqrt = float(np.sum(np.sqrt(np.maximum(inner, 0.0))))
  value = float(np.sum((mu1 - mu2) ** 2)) + float(np.trace(cov1) + np.trace(cov2)) - 2.0 * trace_sqrt
  return max(value, 0.0)


def _squared_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
  """|a_i - b_j|^2 >= 0: [n, D] x [m, D] float64 (b_sq = |b_j|^2 [m]) -> [n, m] float64."""
  d2 = a @ b.T
  d2 *= -2.0
  d2 += np.sum(a * a, axis=1)[:, None]
  d2 += b_sq[None, :]
  return np.maximum(d2, 0.0, out=d2)


def _knn_radii_sq(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
  """Squared distance of each point to its k-th nearest neighbour in x, itself excluded: [N] float64."""
  x = x - x.mean(axis=0)
  x_sq = np.sum(x * x, axis=1)
  radii = np.empty(x.shape[0], np.float64)
  for start in range(0, x.shape[0], chunk):
    d2 = _squared_distances(x[start : start + chunk], x, x_sq)
    # Sorted row: index 0 is the point itself (distance 0, or a duplicate's), index k its k-th neighbour.
    radii[start : start + chunk] = np.partition(d2, k, axis=1)[:, k]
  return radii


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> dict[str, float]:
  """k-NN precision and recall (module docstring) of generated features `fake` [M, D] against `real`
  [N, D]: {"precision", "recall"} in [0, 1]. Needs k < N and k < M."""
  real = _check_features(real, "precision_recall (real)")
  fake = _check_features(fake, "precision_recall (fake)")
  if real.shape[1] != fake.shape[1]:
    raise DataError(
      f"precision_recall: real and fake features differ in dimension ({real.shape[1]} vs {fake.shape[1]})"
    )
  if not isinstance(k, int) or k < 1 or chunk < 1:
    raise ConfigError(f"precision_recall: k and chunk must be positive ints, got k={k!r}, chunk={chunk!r}")
  if k >= min(real.shape[0], fake.shape[0]):
    raise ConfigError(
      f"precision_recall: k={k} needs more than k points in each set, got {real.shape[0]} real and "
      f"{fake.shape[0]} fake; lower k or pass more features"
    )
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  real_radii = _knn_radii_sq(real, k, chunk)
  fake_radii = _knn_radii_sq(fake, k, chunk)
  centre = np.concatenate([real, fake]).mean(axis=0)
  real, fake = real - centre, fake - centre
  # One pass over fake-vs-real blocks: rows give precision, columns recall.
  real_sq = np.sum(real * real, axis=1)
  fake_inside = 0
  real_inside = np.zeros(real.shape[0], bool)
  for start in range(0, fake.shape[0], chunk):
    d2 = _squared_distances(fake[start : start + chunk], real, real_sq)  # [c, N]
    fake_inside += int(np.count_nonzero(np.any(d2 <= real_radii[None, :], axis=1)))
    real_inside |= np.any(d2 <= fake_radii[start : start + chunk, None], axis=0)
  return {"precision": fake_inside / fake.shape[0], "recall": float(np.mean(real_inside))}


def inception_score(
  logits: np.ndarray, splits: int = 10, shuffle_seed: int | None = 2020
) -> dict[str, float]:
  """Inception Score (module docstring) of logits [N, C] -> {"inception_score", "inception_score_std"}.
  Needs N >= splits >= 1."""
  logits = _check_features(logits, "inception_score", min_rows=1).astype(np.float64)
  if not isinstance(splits, int) or not 1 <= splits <= logits.shape[0]:
    raise ConfigError(
      f"inception_score: splits must be an int in [1, N] = [1, {logits.shape[0]}], got {splits!r}"
    )
  n = logits.shape[0]
  if shuffle_seed is not None:
    logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p -= np.log(np.sum(np.exp(log_p), axis=1, keepdims=True))  # log softmax
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    part_p, part_log_p = (
      p[i * n // splits : (i + 1) * n // splits],
      log_p[i * n // splits : (i + 1) * n // splits],
    )
    log_marginal = np.log(part_p.mean(axis=0, keepdims=True))
    kl = np.where(part_p > 0, part_p * (part_log_p - log_marginal), 0.0)  # 0 log 0 = 0, not nan
    scores.append(float(np.exp(np.mean(np.sum(kl, axis=1)))))
  return {"inception_score": float(np.mean(scores)), "inception_score_std": float(np.std(scores))}
