"""EMA codebook statistics and the data-dependent codebook choices: k-means++ seeding, random rows, and
dead-code re-seeding (only when a code is dead). Every function is pure; shapes on each."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

CODEBOOK_INITS = ("uniform", "random_data", "kmeans++")


class EMAStats(NamedTuple):
  """EMA codebook state: cluster_size [K] (EMA of counts, unsmoothed), embed_sum [K, D] (EMA of the sums of
  assigned vectors) and the codebook [K, D] = embed_sum / Laplace-smoothed cluster_size."""

  codebook: jax.Array
  cluster_size: jax.Array
  embed_sum: jax.Array


def ema_stats_from_codebook(codebook: jax.Array, count: float) -> EMAStats:
  """Statistics as if each code had been assigned `count` vectors equal to itself: unused codes then keep
  their value while their count decays, instead of being divided by a near-zero count."""
  size = jnp.full(codebook.shape[:1], count, codebook.dtype)
  return EMAStats(codebook, size, codebook * count)


def ema_update(
  stats: EMAStats, counts: jax.Array, sums: jax.Array, decay: float = 0.99, epsilon: float = 1e-5
) -> EMAStats:
  """One EMA step from this batch's counts [K] and sums of assigned vectors [K, D] (already psum'd).

  The codebook divides by Laplace-smoothed counts (n_k + eps) / (n + K eps) * n, so a code whose count has
  decayed to zero never divides by zero.
  """
  size = decay * stats.cluster_size + (1.0 - decay) * counts
  embed_sum = decay * stats.embed_sum + (1.0 - decay) * sums
  n = jnp.sum(size)
  smoothed = (size + epsilon) / (n + size.shape[0] * epsilon) * n
  return EMAStats(embed_sum / smoothed[:, None], size, embed_sum)


def assigned_sums(
  x: jax.Array, indices: jax.Array, num_codes: int, weights: jax.Array | None = None
) -> jax.Array:
  """Sum of the (weighted) vectors x [..., D] assigned to each code by indices [...]: [K, D]."""
  flat = x.reshape(-1, x.shape[-1])
  if weights is not None:
    flat = flat * weights.reshape(-1, 1).astype(flat.dtype)
  return jax.ops.segment_sum(flat, indices.reshape(-1), num_codes)


def random_rows(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """k rows of x [N, D] drawn uniformly (without replacement when N >= k): [k, D]."""
  x = jnp.asarray(x)
  return x[jax.random.choice(key, x.shape[0], (k,), replace=x.shape[0] < k)]


def kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding (Arthur and Vassilvitskii 2007) of k centres from the rows of x [N, D]: [k, D].

  Each next centre is a row drawn with probability proportional to its squared distance to the nearest
  centre chosen so far; when every row is already a centre (N < k, duplicates) it falls back to uniform.
  """
  x = jnp.asarray(x)
  keys = jax.random.split(key, k)
  first = x[jax.random.randint(keys[0], (), 0, x.shape[0])]
  centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  d2 = jnp.sum(jnp.square(x - first), -1)

  def body(i, carry):
    centres, d2 = carry
    logits = jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1.0)), -jnp.inf)
    logits = jnp.where(jnp.any(d2 > 0), logits, 0.0)
    row = x[jax.random.categorical(keys[i], logits)]
    return centres.at[i].set(row), jnp.minimum(d2, jnp.sum(jnp.square(x - row), -1))

  return jax.lax.fori_loop(1, k, body, (centres, d2))[0]


def initial_stats(
  key: jax.Array, codebook: jax.Array, data: jax.Array | None, how: str, share: float
) -> EMAStats:
  """The first step's statistics: the codebook [K, D] as it is ("uniform"), k-means++ seeds or random rows of
  data [N, D], each code counted as `share` vectors."""
  if how == "kmeans++":
    codebook = kmeans_plus_plus(key, data, codebook.shape[0])
  elif how == "random_data":
    codebook = random_rows(key, data, codebook.shape[0])
  return ema_stats_from_codebook(codebook, share)


def _reseed(stats: EMAStats, dead: jax.Array, new: jax.Array, count: float) -> tuple[EMAStats, jax.Array]:
  fresh = ema_stats_from_codebook(new, count)
  pick = lambda a, b: jnp.where(dead.reshape(-1, *(1,) * (a.ndim - 1)), b, a)
  return EMAStats(*(pick(a, b) for a, b in zip(stats, fresh, strict=True))), dead


def _revived_rows(key: jax.Array, dead: jax.Array, candidates: jax.Array) -> jax.Array:
  """A distinct shuffled row of candidates [N, D] for each dead code (the i-th dead code takes the i-th
  row of a random permutation): [K, D] (rows of live codes are unused)."""
  order = jax.random.permutation(key, candidates.shape[0])
  rank = (jnp.cumsum(dead) - 1) % candidates.shape[0]
  return candidates[order[rank]]


def reseed_dead_codes(
  key: jax.Array, stats: EMAStats, candidates: jax.Array, threshold: float, count: float
) -> tuple[EMAStats, jax.Array]:
  """Replaces every code whose EMA count is below `threshold` by a distinct random row of candidates [N, D]
  (recent encoder outputs), with fresh statistics of `count` vectors (its old counts and sums are dropped,
  so the next update moves it from its new value). Returns (stats, dead mask [K])."""
  dead = stats.cluster_size < threshold
  return _reseed(stats, dead, _revived_rows(key, dead, candidates), count)


def reseed_if_dead(
  key: jax.Array, stats: EMAStats, candidates: jax.Array, threshold: float, count: float
) -> tuple[EMAStats, jax.Array]:
  """`reseed_dead_codes` with the shuffle and gather of the candidates under a lax.cond, run only on steps
  where some code is dead: the same result (live codes keep their statistics either way)."""
  dead = stats.cluster_size < threshold
  new = jax.lax.cond(
    jnp.any(dead),
    lambda: _revived_rows(key, dead, candidates),
    lambda: jnp.zeros((dead.shape[0], candidates.shape[1]), candidates.dtype),
  )
  return _reseed(stats, dead, new, count)
