"""Quantisers without a codebook lookup: finite scalar quantisation (FSQ, Mentzer et al. 2023) and
lookup-free quantisation (LFQ, MAGVIT-v2, Yu et al. 2023), each channel rounded on its own."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.errors import ConfigError
from ae_jax.quantizers.core import (
  QuantizerOutput,
  code_counts,
  global_sum,
  per_example_mean,
  straight_through,
  usage_metrics,
)
from ae_jax.quantizers.vq import outputs_dict

MAX_LFQ_BITS = 20  # indices are int32 and usage counts one float per code (2^20 = 4 MiB)


def fsq_bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """Squashes z [..., len(levels)] so that rounding channel i gives one of levels[i] integers (levels >= 2;
  for 2 levels the shift that would centre z = 0 exceeds tanh's range and is clipped)."""
  levels = np.asarray(levels, np.float32)
  if np.any(levels < 2):
    raise ConfigError(f"fsq needs at least 2 levels per channel, got {levels.astype(int).tolist()}")
  half = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 1, 0.0, 0.5).astype(np.float32)  # even levels: {-L/2, ..., L/2 - 1}
  shift = np.arctanh(np.minimum(offset / half, 1 - eps)).astype(np.float32)
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


class FiniteScalarQuantizer(nn.Module):
  """FSQ with `levels` per channel (inputs [B, ..., len(levels)]), prod(levels) implicit codes; no state,
  no auxiliary losses. The same outputs as `VectorQuantizer` (no code logits: `code_entropy` is undefined)."""

  levels: Sequence[int] = (8, 5, 5, 5)
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., len(levels)] -> quantized (values in [-1, 1]), indices, zero losses, usage metrics."""
    out = fsq(z, tuple(self.levels))
    counts = code_counts(out.indices, int(np.prod(self.levels)), self.axis_name)
    return outputs_dict(out, usage_metrics(counts))


def _bit_entropy(logits: jax.Array) -> jax.Array:
  """Entropy in nats of Bernoulli(sigmoid(logits)), stably: p softplus(-l) + (1 - p) softplus(l)."""
  p = jax.nn.sigmoid(logits)
  return p * jax.nn.softplus(-logits) + (1.0 - p) * jax.nn.softplus(logits)


def _entropy_of_probability(p: jax.Array) -> jax.Array:
  return -(jax.scipy.special.xlogy(p, p) + jax.scipy.special.xlogy(1.0 - p, 1.0 - p))


def lfq(
  z: jax.Array,
  beta: float = 0.25,
  temperature: float = 0.01,
  diversity: float = 1.0,
  axis_name: str | None = None,
) -> tuple[QuantizerOutput, jax.Array]:
  """Lookup-free quantisation of z [B, ..., n]: every channel to sign(z) in {-1, +1} (0 -> -1),
  straight-through; index = sum_i [z_i > 0] 2^i of the implicit codebook {-1, 1}^n (2^n codes).

  Returns (QuantizerOutput with codebook_loss 0 and commitment_loss = beta * mean |z - sg(q)|^2, and the
  entropy penalty [B] in nats). Soft assignments to the 2^n codes, softmax(-|z - c|^2 / temperature),
  factorise over channels into p_i = sigmoid(4 z_i / temperature); the penalty is the mean over an
  example's positions of the assignment entropy sum_i H(p_i) (exact) minus `diversity` x the codebook
  entropy sum_i H(mean p_i) over every position of the global batch (psum over `axis_name`), the
  per-channel factorised codebook entropy (an upper bound on the entropy of the mean assignment, equal when
  the channels are independent across the batch).
  """
  if z.shape[-1] > MAX_LFQ_BITS:
    raise ConfigError(
      f"lfq codes have 2^code_dim entries; code_dim={z.shape[-1]} is above {MAX_LFQ_BITS} bits (set "
      "config.model.code_dim to log2 of the codebook size, e.g. 10 for 1,024 codes)"
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
  entropy = sample - diversity * jnp.sum(_entropy_of_probability(mean_p))
  out = QuantizerOutput(straight_through(z, q), indices, jnp.zeros_like(commitment), commitment)
  return out, entropy


class LookupFreeQuantizer(nn.Module):
  """LFQ on inputs [B, ..., code_dim]: 2^code_dim implicit codes ({-1, 1} per channel), no state. Outputs:
  quantized, indices, codebook_loss (0), commitment_loss, lfq_entropy [B] (the entropy penalty of `lfq`,
  weighted by config.loss.lfq_entropy), metrics (usage of the 2^code_dim codes)."""

  code_dim: int = 10
  beta: float = 0.25
  entropy_temperature: float = 0.01
  diversity: float = 1.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., code_dim] -> quantized [B, ..., code_dim] in {-1, 1}, indices [B, ...], losses [B]."""
    if z.shape[-1] != self.code_dim:
      raise ConfigError(f"lfq expects {self.code_dim} channels, got {z.shape}")
    out, entropy = lfq(z, self.beta, self.entropy_temperature, self.diversity, self.axis_name)
    counts = code_counts(out.indices, 2**self.code_dim, self.axis_name)
    return outputs_dict(out, usage_metrics(counts), lfq_entropy=entropy)
