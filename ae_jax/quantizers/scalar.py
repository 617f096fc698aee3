"""Quantisers without a codebook lookup: finite scalar quantisation (FSQ, Mentzer et al. 2023) and
lookup-free quantisation (LFQ, MAGVIT-v2, Yu et al. 2023), each channel rounded on its own."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.quantizers import spec
from ae_jax.quantizers.blocks import (
  QuantizerOutput,
  code_counts,
  entropy_of,
  global_sum,
  per_example_mean,
  straight_through,
  usage_metrics,
)
from ae_jax.quantizers.vq import outputs_dict

MAX_CODES = 2**20  # indices are int32 and usage counts hold one float per code (2^20 codes = 4 MiB)
MAX_LFQ_BITS = 20  # log2(MAX_CODES)
# LFQ's joint codebook entropy costs 2^bits multiply-adds per position (and 2^bits floats psum'd); above this
# many bits the penalty uses the per-bit entropy, the factorised upper bound
MAX_JOINT_ENTROPY_BITS = 16


def check_fsq_levels(levels: Sequence[int]) -> None:
  """Raises ConfigError unless every channel has at least 2 levels and the prod(levels) codes fit
  MAX_CODES (int32 indices, one usage count per code)."""
  levels = [int(n) for n in levels]
  if any(n < 2 for n in levels):
    raise ConfigError(f"fsq needs at least 2 levels per channel, got {levels}")
  codes = math.prod(levels)
  if codes > MAX_CODES:
    raise ConfigError(
      f"fsq levels {levels} give {codes:,} codes, above the limit of {MAX_CODES:,} (2^{MAX_LFQ_BITS}: "
      "indices are int32 and usage counts hold one float per code); use fewer or smaller levels "
      "(config.model.quantizer.levels)"
    )


def fsq_bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """Squashes z [..., len(levels)] to tanh(z) (L - 1)(1 - eps)/2 - offset per channel, so that rounding gives
  one of L integers: {-(L-1)/2, ..., (L-1)/2} for odd L (offset 0), {-L/2, ..., L/2 - 1} for even L
  (offset 1/2). For even L, z = 0 sits on the boundary between the two middle levels, so the levels' ranges
  of z mirror each other about 0 (2 levels: z < 0 and z > 0, gradient (1 - eps)/2 at 0). The reference
  implementations instead shift z by arctanh(offset / half-width) (the paper's listing: tan) to put z = 0 on
  level 0; for 2 levels that shift is 3.8, which moves the boundary to z = -3.8 (99.99% of N(0, 1) inputs on
  one level, gradient 0.001 at 0)."""
  check_fsq_levels(levels)
  levels = np.asarray(levels, np.float32)
  half = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 1, 0.0, 0.5).astype(np.float32)
  return jnp.tanh(z) * half - offset


def fsq(z: jax.Array, levels: Sequence[int]) -> QuantizerOutput:
  """Finite scalar quantisation of z [B, ..., len(levels)]: bound, round (straight-through), rescale by
  1 / (L // 2) (odd L: [-1, 1]; even L: [-1, 1 - 2/L]). The implicit codebook has prod(levels) codes, at most
  MAX_CODES (ConfigError otherwise); index = sum_i digit_i prod_{j<i} L_j (int32). No codebook or commitment
  loss (zeros)."""
  check_fsq_levels(levels)
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


@spec.register("fsq", code_dim=lambda o: len(o["levels"]), codebooks=lambda o: (math.prod(o["levels"]),))
class FiniteScalarQuantizer(nn.Module):
  """FSQ with `levels` per channel (inputs [B, ..., len(levels)]), prod(levels) implicit codes (at most
  MAX_CODES); no state, no auxiliary losses. The same outputs as `VectorQuantizer` (no code logits:
  `code_entropy` is undefined)."""

  levels: Sequence[int] = (8, 5, 5, 5)
  axis_name: str | None = None

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code indices int32 [B, ...] (mixed radix over `levels`, the first channel least significant) ->
    the quantized vectors [B, ..., len(levels)] float32."""
    levels = np.asarray(self.levels, np.int32)
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
    digits = (indices[..., None] // basis) % levels
    half = levels // 2
    return (digits - half).astype(jnp.float32) / half

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., len(levels)] -> quantized (values in [-1, 1]), indices, zero losses, usage metrics."""
    out = fsq(z, tuple(self.levels))
    counts = code_counts(out.indices, math.prod(self.levels), self.axis_name)
    return outputs_dict(out, usage_metrics(counts))


def _bit_entropy(logits: jax.Array) -> jax.Array:
  """Entropy in nats of Bernoulli(sigmoid(logits)), stably: p softplus(-l) + (1 - p) softplus(l)."""
  p = jax.nn.sigmoid(logits)
  return p * jax.nn.softplus(-logits) + (1.0 - p) * jax.nn.softplus(logits)


def per_bit_entropy(mean_p: jax.Array) -> jax.Array:
  """sum_i H(Bernoulli(mean_p[i])) in nats, with a finite gradient at mean_p in {0, 1}: [n] -> []."""
  return jnp.sum(entropy_of(jnp.stack([mean_p, 1.0 - mean_p], axis=-1)))


def _code_probabilities(logits: jax.Array) -> jax.Array:
  """p(code) = prod_i sigmoid(+-l_i) for every code of n bits, as softmax_c(sum_i bit_i(c) l_i):
  logits [N, n] -> [N, 2^n] (code c = sum_i bit_i 2^i)."""
  n = logits.shape[-1]
  bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # [2^n, n]
  scores = jnp.matmul(logits, bits.T.astype(np.float32), precision=jax.lax.Precision.HIGHEST)
  return jax.nn.softmax(scores, axis=-1)


def joint_codebook_entropy(logits: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Entropy in nats of the mean over every position of the global batch (psum over `axis_name`) of the
  code distribution p(c) = prod_i p_i(bit_i(c)) over all 2^n codes, from bit logits [..., n] (n <=
  MAX_JOINT_ENTROPY_BITS) -> [].

  The 2^n code masses are accumulated without forming [positions, 2^n]: split the bits into low and high
  halves, p(c) = p_low(c_low) p_high(c_high), so the batch's mass is the matmul p_low^T p_high
  [2^(n/2), 2^(n - n/2)] (N 2^n multiply-adds for N positions).
  """
  flat = logits.reshape(-1, logits.shape[-1]).astype(jnp.float32)
  low = flat.shape[-1] // 2
  p_low, p_high = _code_probabilities(flat[:, :low]), _code_probabilities(flat[:, low:])
  mass = global_sum(jnp.matmul(p_low.T, p_high, precision=jax.lax.Precision.HIGHEST), axis_name)
  total = global_sum(jnp.asarray(flat.shape[0], jnp.float32), axis_name)
  return entropy_of((mass / total).reshape(-1))


def _lfq(
  z: jax.Array, beta: float, temperature: float, diversity: float, axis_name: str | None
) -> tuple[QuantizerOutput, jax.Array, dict[str, jax.Array]]:
  """`lfq`'s outputs and its codebook entropies {"codebook_entropy" (joint; n <= MAX_JOINT_ENTROPY_BITS
  only), "per_bit_entropy"}, scalars in nats over the global batch."""
  if z.shape[-1] > MAX_LFQ_BITS:
    raise ConfigError(
      f"lfq codes have 2^code_dim entries; code_dim={z.shape[-1]} is above {MAX_LFQ_BITS} bits (set "
      "config.model.quantizer.code_dim to log2 of the codebook size, e.g. 10 for 1,024 codes)"
    )
  sg = jax.lax.stop_gradient
  positive = sg(z) > 0
  q = jnp.where(positive, 1.0, -1.0).astype(z.dtype)
  indices = jnp.sum(positive.astype(jnp.int32) * (2 ** jnp.arange(z.shape[-1], dtype=jnp.int32)), axis=-1)
  commitment = beta * per_example_mean(jnp.square(z - q))
  logits = 4.0 * z.astype(jnp.float32) / temperature  # log p(+1) - log p(-1) per channel
  sample = per_example_mean(jnp.sum(_bit_entropy(logits), axis=-1))
  positions = z.size // z.shape[-1]
  mean_p = global_sum(jnp.sum(jax.nn.sigmoid(logits).reshape(-1, z.shape[-1]), 0), axis_name)
  mean_p = mean_p / global_sum(jnp.asarray(positions, jnp.float32), axis_name)
  entropies = {"per_bit_entropy": per_bit_entropy(mean_p)}
  if z.shape[-1] <= MAX_JOINT_ENTROPY_BITS:
    entropies["codebook_entropy"] = joint_codebook_entropy(logits, axis_name)
  codebook = entropies.get("codebook_entropy", entropies["per_bit_entropy"])
  out = QuantizerOutput(straight_through(z, q), indices, jnp.zeros_like(commitment), commitment)
  return out, sample - diversity * codebook, entropies


def lfq(
  z: jax.Array,
  beta: float = 0.25,
  temperature: float = 0.01,
  diversity: float = 1.0,
  axis_name: str | None = None,
) -> tuple[QuantizerOutput, jax.Array]:
  """Lookup-free quantisation of z [B, ..., n]: every channel to sign(z) in {-1, +1} (0 -> -1),
  straight-through; index = sum_i [z_i > 0] 2^i of the implicit codebook {-1, 1}^n (2^n codes, n <=
  MAX_LFQ_BITS).

  Returns (QuantizerOutput with codebook_loss 0 and commitment_loss = beta * mean |z - sg(q)|^2, and the
  entropy penalty [B] in nats). Soft assignments to the 2^n codes, softmax(-|z - c|^2 / temperature),
  factorise over channels into p_i = sigmoid(4 z_i / temperature); the penalty is the mean over an
  example's positions of the assignment entropy sum_i H(p_i) (exact) minus `diversity` x the codebook
  entropy H(mean assignment) over the 2^n codes and every position of the global batch (psum over
  `axis_name`; `joint_codebook_entropy`). Above MAX_JOINT_ENTROPY_BITS bits the codebook term is the
  per-bit entropy sum_i H(mean p_i) instead: an upper bound, equal only when the bits are independent
  across the batch (all bits equal: log 2 joint, n log 2 per bit). Every entropy has a finite gradient,
  also where a bit's mean probability is exactly 0 or 1.
  """
  out, penalty, _ = _lfq(z, beta, temperature, diversity, axis_name)
  return out, penalty


@spec.register("lfq", codebooks=lambda o: (2 ** int(o["code_dim"]),))
class LookupFreeQuantizer(nn.Module):
  """LFQ on inputs [B, ..., code_dim]: 2^code_dim implicit codes ({-1, 1} per channel), no state. Outputs:
  quantized, indices, codebook_loss (0), commitment_loss, lfq_entropy [B] (the entropy penalty of `lfq`,
  weighted by config.loss.lfq_entropy), metrics: usage of the 2^code_dim codes, and over the global batch
  in nats codebook_entropy (the joint entropy of the mean code assignment, `joint_codebook_entropy`; only
  for code_dim <= MAX_JOINT_ENTROPY_BITS) and per_bit_entropy (sum over bits of the entropy of the mean bit
  probability, its upper bound)."""

  code_dim: int = 10
  beta: float = 0.25
  entropy_temperature: float = 0.01
  diversity: float = 1.0
  axis_name: str | None = None

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code indices int32 [B, ...] (bit i of the index is channel i) -> vectors [B, ..., code_dim] of
    +-1 float32."""
    bits = (indices[..., None] >> jnp.arange(self.code_dim, dtype=jnp.int32)) & 1
    return jnp.where(bits > 0, 1.0, -1.0).astype(jnp.float32)

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., code_dim] -> quantized [B, ..., code_dim] in {-1, 1}, indices [B, ...], losses [B]."""
    if z.shape[-1] != self.code_dim:
      raise ConfigError(f"lfq expects {self.code_dim} channels, got {z.shape}")
    out, entropy, entropies = _lfq(z, self.beta, self.entropy_temperature, self.diversity, self.axis_name)
    counts = code_counts(out.indices, 2**self.code_dim, self.axis_name)
    return outputs_dict(out, {**usage_metrics(counts), **entropies}, lfq_entropy=entropy)
