"""Sample-quality metrics (ae_jax.metrics.sample_metrics): the Fréchet distance against closed forms and
scipy's
sqrtm, and k-NN precision/recall against hand-computed values and a brute-force reference."""

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.metrics.sample_metrics import (
  feature_statistics,
  frechet_distance,
  inception_score,
  precision_recall,
)


def _random_cov(rng, dim, rank=None):
  a = rng.standard_normal((dim, rank or dim))
  return a @ a.T / dim


def test_feature_statistics_are_mean_and_unbiased_covariance():
  x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
  mean, cov = feature_statistics(x)
  assert mean.dtype == cov.dtype == np.float64
  np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
  with pytest.raises(DataError, match="N >= 2"):
    feature_statistics(x[:1])


def test_frechet_distance_of_identical_sets_is_zero():
  x = np.random.default_rng(1).standard_normal((500, 16)) * 3.0 + 1.0
  assert abs(frechet_distance(*feature_statistics(x), *feature_statistics(x))) < 1e-6


def test_frechet_distance_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
  s1, s2 = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
  np.testing.assert_allclose(frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)), want, rtol=1e-10)


def test_frechet_distance_matches_sqrtm_and_is_symmetric():
  rng = np.random.default_rng(3)
  mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
  c1, c2 = _random_cov(rng, 10), _random_cov(rng, 10)
  root = scipy.linalg.sqrtm(c1 @ c2)  # tr sqrt(C1 C2) = tr sqrt(C1^1/2 C2 C1^1/2)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(root).real
  forward, backward = frechet_distance(mu1, c1, mu2, c2), frechet_distance(mu2, c2, mu1, c1)
  np.testing.assert_allclose(forward, want, rtol=1e-8)
  np.testing.assert_allclose(backward, forward, rtol=1e-10)


def test_frechet_distance_is_finite_for_rank_deficient_covariances():
  rng = np.random.default_rng(4)
  few = rng.standard_normal((5, 32))  # 5 examples in 32 dimensions: rank 4
  other = rng.standard_normal((6, 32)) + 0.5
  value = frechet_distance(*feature_statistics(few), *feature_statistics(other))
  assert np.isfinite(value) and value > 0.0
  assert frechet_distance(*feature_statistics(few), *feature_statistics(few)) < 1e-6
  zero = np.zeros((32, 32))
  # Point masses: only the means differ.
  np.testing.assert_allclose(frechet_distance(np.zeros(32), zero, np.ones(32), zero), 32.0)
  c = _random_cov(rng, 32, rank=3)
  np.testing.assert_allclose(frechet_distance(np.zeros(32), c, np.zeros(32), zero), np.trace(c), rtol=1e-8)


def _brute_force_precision_recall(real, fake, k):
  """Float64 reference: full distance matrices, radii by sorting (index 0 is the point itself)."""
  real_radii = np.sort(cdist(real, real), axis=1)[:, k]
  fake_radii = np.sort(cdist(fake, fake), axis=1)[:, k]
  cross = cdist(fake, real)  # [M, N]
  return {
    "precision": float(np.mean(np.any(cross <= real_radii[None, :], axis=1))),
    "recall": float(np.mean(np.any(cross.T <= fake_radii[None, :], axis=1))),
  }


def test_precision_recall_of_identical_and_of_far_apart_sets():
  x = np.random.default_rng(5).standard_normal((300, 8))
  assert precision_recall(x, x.copy(), k=3) == {"precision": 1.0, "recall": 1.0}
  assert precision_recall(x, x + 1000.0, k=3) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_hand_built_1d():
  real = np.asarray([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every real radius is 1
  fake = np.asarray([[0.5], [0.7], [3.9], [10.0]])  # radii 0.2, 0.2, 3.2, 6.1
  # Precision: 0.5, 0.7 and 3.9 lie within 1 of a real point, 10 does not. Recall: 1, 2 and 3 lie within
  # 3.2 of 3.9; 0 lies within no fake ball (0.5 > 0.2, 0.7 > 0.2, 3.9 > 3.2, 10 > 6.1).
  assert precision_recall(real, fake, k=1) == {"precision": 0.75, "recall": 0.75}
  assert precision_recall(real, fake, k=1, chunk=1) == {"precision": 0.75, "recall": 0.75}
  # Points on a ball's border count as inside (<=, as the reference code): 4 is 1 from 3, and 2 is 2
  # (the fake radius) from 4; 6 and 0, 1 lie outside every ball. Exact in float32.
  assert precision_recall(real, np.asarray([[4.0], [6.0]]), k=1) == {"precision": 0.5, "recall": 0.5}


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_precision_recall_chunks_match_brute_force(chunk):
  rng = np.random.default_rng(6)
  real = rng.standard_normal((400, 6)) + 5.0
  fake = rng.standard_normal((250, 6)) * 1.3 + 5.5
  want = _brute_force_precision_recall(real, fake, k=3)
  got = precision_recall(real, fake, k=3, chunk=chunk)
  assert 0.1 < want["precision"] < 0.99 and 0.1 < want["recall"] < 0.99  # a case with something to count
  assert got == want  # float64 distances: no point of random data lies within rounding of a ball's border


def test_precision_recall_of_tight_clusters_far_from_the_origin():
  """Two real clusters at +-1000 in 16 dimensions (spread 0.01) and fakes of which 20 lie in them and 180
  are shifted by 0.25 in every coordinate (1.0 away, 100 spreads): the expanded |a|^2 + |b|^2 - 2ab loses
  every distance inside a cluster to rounding in float32 (which scored precision and recall 1.0); the
  result must be the brute-force float64 one, precision 0.07."""
  rng = np.random.default_rng(0)
  centres = np.stack([np.full(16, 1000.0), np.full(16, -1000.0)])
  real = centres[rng.integers(2, size=200)] + 0.01 * rng.standard_normal((200, 16))
  near = centres[rng.integers(2, size=20)] + 0.01 * rng.standard_normal((20, 16))
  far = centres[rng.integers(2, size=180)] + 0.25 + 0.01 * rng.standard_normal((180, 16))
  fake = np.concatenate([near, far])
  want = _brute_force_precision_recall(real, fake, k=3)
  assert want == {"precision": 0.07, "recall": 0.865}
  assert precision_recall(real, fake, k=3) == want
  assert precision_recall(real.astype(np.float32), fake.astype(np.float32), k=3) == want


def test_precision_recall_bad_arguments():
  x = np.zeros((3, 2))
  with pytest.raises(ConfigError, match="more than k points"):
    precision_recall(x, np.ones((10, 2)), k=3)
  with pytest.raises(DataError, match="dimension"):
    precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
  with pytest.raises(DataError, match="NaN"):
    precision_recall(np.full((10, 2), np.nan), np.zeros((10, 2)))


def _torch_fidelity_isc(logits: np.ndarray, splits: int, rng_seed: int = 2020) -> tuple[float, float]:
  """torch-fidelity's isc_features_to_metric (metric_isc.py), written out with torch: shuffle by
  RandomState(rng_seed), float64 softmax, consecutive splits, exp of the mean KL, mean and np.std."""
  import torch

  feature = torch.from_numpy(logits)[np.random.RandomState(rng_seed).permutation(len(logits))].double()
  n = len(logits)
  p, log_p = feature.softmax(dim=1), feature.log_softmax(dim=1)
  scores = []
  for i in range(splits):
    p_chunk, log_p_chunk = (
      p[i * n // splits : (i + 1) * n // splits],
      log_p[i * n // splits : (i + 1) * n // splits],
    )
    q = p_chunk.mean(dim=0, keepdim=True)
    scores.append((p_chunk * (log_p_chunk - torch.log(q))).sum(dim=1).mean().exp().item())
  return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_closed_forms():
  """Logits a * onehot(c) over C = 4 classes, each split holding the 4 classes once (no shuffle): p(y) is
  uniform and every example's KL is q log(qC) + (C - 1) r log(rC), q = e^a / (e^a + C - 1), r = 1 / (e^a + C
  - 1), so IS = exp of it in every split (std 0); uniform logits score 1; a point mass per class scores C."""
  c, a = 4, 2.0
  logits = a * np.tile(np.eye(c), (10, 1))  # 40 examples, split i = examples 4i..4i+3
  q, r = np.exp(a) / (np.exp(a) + c - 1), 1.0 / (np.exp(a) + c - 1)
  want = np.exp(q * np.log(q * c) + (c - 1) * r * np.log(r * c))
  got = inception_score(logits, splits=10, shuffle_seed=None)
  np.testing.assert_allclose(got["inception_score"], want, rtol=1e-12)
  assert got["inception_score_std"] < 1e-12
  assert inception_score(np.zeros((20, 1008)), splits=10)["inception_score"] == 1.0
  point = inception_score(1e4 * np.tile(np.eye(c), (10, 1)), splits=10, shuffle_seed=None)  # exp(-1e4) = 0
  np.testing.assert_allclose(point["inception_score"], c, rtol=1e-12)


def test_inception_score_is_torch_fidelitys():
  """Random logits [103, 1008] (N not a multiple of the 10 splits), shuffled with torch-fidelity's seed."""
  logits = np.random.default_rng(7).standard_normal((103, 1008)) * 3.0
  got = inception_score(logits.astype(np.float32), splits=10)
  want = _torch_fidelity_isc(logits.astype(np.float32).astype(np.float64), splits=10)
  np.testing.assert_allclose([got["inception_score"], got["inception_score_std"]], want, rtol=1e-10)
  assert got["inception_score_std"] > 0
  with pytest.raises(ConfigError, match="splits"):
    inception_score(logits[:5], splits=10)
