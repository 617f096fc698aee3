"""Vector quantisation (van den Oord et al. 2017) and finite scalar quantisation (Mentzer et al. 2023).

Pure functions first (codebook and inputs in, outputs and per-example loss terms out), then two Flax modules
with one interface, `__call__(z [B, ..., D], *, train) -> dict`:

  quantized        [B, ..., D]  the straight-through output z_e + sg(z_q - z_e): forward value z_q, and the
                                decoder's gradient reaches the encoder as if quantisation were the identity
  indices          [B, ...]     int32 code of every vector
  codebook_loss    [B]          mean over elements of |sg(z_e) - z_q|^2 (zero with EMA codebooks and FSQ)
  commitment_loss  [B]          beta * mean over elements of |z_e - sg(z_q)|^2 (zero for FSQ)
  metrics          {"perplexity", "codes_used", ...}: usage over the whole global batch (psum over devices)

`VectorQuantizer` keeps its codebook either as a parameter trained by `codebook_loss`, or (`ema=True`) in the
non-trainable collection "vq_ema", updated by exponential moving averages of the assigned encoder outputs.
The EMA counts and sums are psum'd over the device axis, and every data-dependent choice (initialisation,
dead-code re-seeding) is made from all-gathered encoder outputs with device 0's key, so every device holds
the codebook one device would compute on the same global batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.errors import ConfigError

EMA_COLLECTION = "vq_ema"
CODEBOOK_INITS = ("uniform", "random_data", "kmeans++")


class QuantizerOutput(NamedTuple):
  """What a quantiser returns; shapes for inputs z_e [B, ..., D]."""

  quantized: jax.Array  # [B, ..., D] straight-through
  indices: jax.Array  # [B, ...] int32
  codebook_loss: jax.Array  # [B]
  commitment_loss: jax.Array  # [B]


def _per_example_mean(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).mean(axis=1)


def squared_distances(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """|x - e|^2 as |x|^2 + |e|^2 - 2 x.e (one matmul): x [N, D], codebook [K, D] -> [N, K]."""
  xe = jnp.matmul(x, codebook.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(x * x, -1, keepdims=True) + jnp.sum(codebook * codebook, -1) - 2.0 * xe


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codebook row for every vector: z [..., D], codebook [K, D] -> int32 [...]."""
  flat = z.reshape(-1, z.shape[-1])
  return jnp.argmin(squared_distances(flat, codebook), axis=-1).astype(jnp.int32).reshape(z.shape[:-1])


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
  """z_e + sg(z_q - z_e): equals z_q, and its gradient with respect to z_e is the identity."""
  return z_e + jax.lax.stop_gradient(z_q - z_e)


def vq_losses(z_e: jax.Array, z_q: jax.Array, beta: float) -> tuple[jax.Array, jax.Array]:
  """(codebook loss, commitment loss), each [B], from z_e and its nearest codes z_q [B, ..., D].

  codebook = mean |sg(z_e) - z_q|^2 moves only the codes; commitment = beta * mean |z_e - sg(z_q)|^2 moves
  only the encoder. beta belongs to the commitment term (the paper's eq. 3); a widely copied PyTorch
  reference puts it on the codebook term instead.
  """
  sg = jax.lax.stop_gradient
  codebook = _per_example_mean(jnp.square(sg(z_e) - z_q))
  commitment = beta * _per_example_mean(jnp.square(z_e - sg(z_q)))
  return codebook, commitment


def vector_quantize(z_e: jax.Array, codebook: jax.Array, beta: float = 0.25) -> QuantizerOutput:
  """Nearest-code quantisation of z_e [B, ..., D] with codebook [K, D], straight-through gradients."""
  indices = nearest_code(jax.lax.stop_gradient(z_e), jax.lax.stop_gradient(codebook))
  z_q = jnp.take(codebook, indices, axis=0)
  codebook_loss, commitment_loss = vq_losses(z_e, z_q, beta)
  return QuantizerOutput(straight_through(z_e, z_q), indices, codebook_loss, commitment_loss)


# ----------------------------------------------------------------------------- usage and EMA statistics


def code_counts(indices: jax.Array, num_codes: int, axis_name: str | None = None) -> jax.Array:
  """How often each code was chosen, summed over `axis_name` (all devices) when given: int [...] -> [K]."""
  counts = jnp.zeros((num_codes,), jnp.float32).at[indices.reshape(-1)].add(1.0)
  return counts if axis_name is None else jax.lax.psum(counts, axis_name)


def usage_metrics(counts: jax.Array) -> dict[str, jax.Array]:
  """perplexity = exp(entropy of the code frequencies) (K when all codes are equally used, 1 for one code)
  and codes_used = the fraction of codes chosen at least once, from counts [K]."""
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"perplexity": jnp.exp(entropy), "codes_used": jnp.mean((counts > 0).astype(jnp.float32))}


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


# ----------------------------------------------------------------------------- data-dependent codebooks


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


def reseed_dead_codes(
  key: jax.Array, stats: EMAStats, candidates: jax.Array, threshold: float, count: float
) -> tuple[EMAStats, jax.Array]:
  """Replaces every code whose EMA count is below `threshold` by a distinct random row of candidates [N, D]
  (recent encoder outputs), with fresh statistics of `count` vectors. Returns (stats, dead mask [K])."""
  dead = stats.cluster_size < threshold
  order = jax.random.permutation(key, candidates.shape[0])
  rank = (jnp.cumsum(dead) - 1) % candidates.shape[0]  # the i-th dead code takes the i-th shuffled row
  new = candidates[order[rank]]
  fresh = ema_stats_from_codebook(new, count)
  pick = lambda a, b: jnp.where(dead.reshape(-1, *(1,) * (a.ndim - 1)), b, a)
  return EMAStats(*(pick(a, b) for a, b in zip(stats, fresh, strict=True))), dead


# ----------------------------------------------------------------------------- finite scalar quantisation


def fsq_bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """Squashes z [..., len(levels)] so that rounding channel i gives one of levels[i] integers."""
  levels = np.asarray(levels, np.float32)
  half = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 1, 0.0, 0.5).astype(np.float32)  # even levels: {-L/2, ..., L/2 - 1}
  shift = np.arctanh(offset / half).astype(np.float32)
  return jnp.tanh(z + shift) * half - offset


def fsq(z: jax.Array, levels: Sequence[int]) -> QuantizerOutput:
  """Finite scalar quantisation of z [B, ..., len(levels)]: bound, round (straight-through), rescale to
  [-1, 1]. The implicit codebook has prod(levels) codes; no codebook or commitment loss (zeros)."""
  if z.shape[-1] != len(levels):
    raise ConfigError(f"fsq needs {len(levels)} channels (one per level of {list(levels)}), got {z.shape}")
  bounded = fsq_bound(z, levels)
  rounded = straight_through(bounded, jnp.round(bounded))
  half_width = np.asarray(levels) // 2
  digits = (jax.lax.stop_gradient(rounded) + half_width).astype(jnp.int32)  # [..., n] in [0, L_i)
  basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
  indices = jnp.sum(digits * basis, axis=-1)
  zeros = jnp.zeros(z.shape[:1], z.dtype)
  return QuantizerOutput(rounded / half_width, indices, zeros, zeros)


# ----------------------------------------------------------------------------- Flax modules


def _broadcast_from_first(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Device 0's value of x (an array or a PRNG key) on every device: a psum of x masked to device 0."""
  if axis_name is None:
    return x
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    impl = jax.random.key_impl(x)
    return jax.random.wrap_key_data(_broadcast_from_first(jax.random.key_data(x), axis_name), impl=impl)
  first = jax.lax.axis_index(axis_name) == 0
  return jax.lax.psum(jnp.where(first, x, jnp.zeros_like(x)), axis_name)


def _codebook_init(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Uniform with variance 1/D (Sonnet's variance-scaling default for the embeddings)."""
  limit = math.sqrt(3.0 / shape[1])
  return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


class VectorQuantizer(nn.Module):
  """Nearest-code quantiser with a codebook [num_codes, code_dim], trained by gradients or by EMA.

  ema=True keeps the codebook in the "vq_ema" collection (no gradient reaches it; `codebook_loss` is zero).
  At the first training step its statistics start as if each code had been used by an equal share of the
  global batch, and `codebook_init` may replace it by encoder outputs of that batch: "random_data" rows or
  "kmeans++" seeding ("uniform" keeps the random initialisation, as the reference does). After every
  update, codes whose EMA count (assignments per step) is below `dead_code_threshold` are re-seeded from
  this batch's encoder outputs (0 disables). Data-dependent options need ema=True.
  """

  num_codes: int = 512
  code_dim: int = 64
  beta: float = 0.25
  ema: bool = True
  decay: float = 0.99
  epsilon: float = 1e-5
  codebook_init: str = "uniform"
  dead_code_threshold: float = 0.0
  axis_name: str | None = None

  def _check(self) -> None:
    if self.codebook_init not in CODEBOOK_INITS:
      raise ConfigError(f"unknown codebook_init '{self.codebook_init}'; choose one of {CODEBOOK_INITS}")
    if not self.ema and (self.codebook_init != "uniform" or self.dead_code_threshold > 0):
      raise ConfigError(
        "codebook_init from data and dead-code re-seeding need ema=True (a trained codebook is a parameter, "
        "which the forward pass cannot overwrite); set ema=True or codebook_init='uniform' and "
        "dead_code_threshold=0"
      )

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z_e [B, ..., code_dim] -> the quantiser outputs described in the module docstring."""
    self._check()
    shape = (self.num_codes, self.code_dim)
    if not self.ema:
      out = vector_quantize(z_e, self.param("codebook", _codebook_init, shape), self.beta)
      return self._outputs(out, code_counts(out.indices, self.num_codes, self.axis_name), {})

    variables = EMAStats(
      self.variable(EMA_COLLECTION, "codebook", lambda: _codebook_init(self.make_rng("params"), shape)),
      self.variable(EMA_COLLECTION, "cluster_size", jnp.zeros, (self.num_codes,)),
      self.variable(EMA_COLLECTION, "embed_sum", jnp.zeros, shape),
    )
    started = self.variable(EMA_COLLECTION, "started", lambda: jnp.zeros((), jnp.int32))
    stats = EMAStats(*(v.value for v in variables))
    update = train and not self.is_initializing()
    if update:
      flat = jax.lax.stop_gradient(z_e).reshape(-1, self.code_dim)
      # every device sees the global batch's encoder outputs in global order, and device 0's key
      gathered = flat if self.axis_name is None else jax.lax.all_gather(flat, self.axis_name, tiled=True)
      init_key, reseed_key = jax.random.split(_broadcast_from_first(self.make_rng("sample"), self.axis_name))
      share = gathered.shape[0] / self.num_codes  # vectors per code in one global batch
      stats = jax.lax.cond(
        started.value == 0,
        lambda: self._first_stats(init_key, stats.codebook, gathered, share),
        lambda: stats,
      )
    out = vector_quantize(z_e, jax.lax.stop_gradient(stats.codebook), self.beta)
    counts = code_counts(out.indices, self.num_codes, self.axis_name)
    extra = {}
    if update:
      sums = jax.ops.segment_sum(flat, out.indices.reshape(-1), self.num_codes)
      sums = sums if self.axis_name is None else jax.lax.psum(sums, self.axis_name)
      stats = ema_update(stats, counts, sums, self.decay, self.epsilon)
      if self.dead_code_threshold > 0:
        stats, dead = reseed_dead_codes(reseed_key, stats, gathered, self.dead_code_threshold, share)
        extra["codes_reseeded"] = jnp.sum(dead).astype(jnp.float32)
      for var, value in zip(variables, stats, strict=True):
        var.value = value
      started.value = jnp.ones((), jnp.int32)
    out = out._replace(codebook_loss=jnp.zeros_like(out.codebook_loss))
    return self._outputs(out, counts, extra)

  def _first_stats(self, key: jax.Array, codebook: jax.Array, data: jax.Array, share: float) -> EMAStats:
    if self.codebook_init == "kmeans++":
      codebook = kmeans_plus_plus(key, data, self.num_codes)
    elif self.codebook_init == "random_data":
      codebook = random_rows(key, data, self.num_codes)
    return ema_stats_from_codebook(codebook, share)

  def _outputs(self, out: QuantizerOutput, counts: jax.Array, extra: dict) -> dict[str, jax.Array]:
    return {**out._asdict(), "metrics": {**usage_metrics(counts), **extra}}


class FiniteScalarQuantizer(nn.Module):
  """FSQ with `levels` per channel (inputs [B, ..., len(levels)]), prod(levels) implicit codes; no state,
  no auxiliary losses. The same outputs as `VectorQuantizer`."""

  levels: Sequence[int] = (8, 5, 5, 5)
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., len(levels)] -> quantized (values in [-1, 1]), indices, zero losses, usage metrics."""
    out = fsq(z, tuple(self.levels))
    counts = code_counts(out.indices, int(np.prod(self.levels)), self.axis_name)
    return {**out._asdict(), "metrics": usage_metrics(counts)}
