"""Quantisers for autoencoders: vector quantisation (van den Oord et al. 2017) with trained or EMA, cosine
or low-dimensional codebooks and the straight-through or rotation-trick gradient; residual VQ; finite
scalar (FSQ) and lookup-free (LFQ) quantisation; Gumbel-softmax quantisation.

Pure functions (codebook and inputs in, outputs and per-example loss terms out) and one Flax module each,
with one interface, `__call__(z [B, ..., D], *, train) -> dict`:

  quantized        [B, ..., D]  forward value z_q; the encoder's gradient by the quantiser's estimator
                                (straight-through z_e + sg(z_q - z_e) unless stated)
  indices          [B, ...]     int32 code of every vector ([B, ..., S] for S residual stages)
  codebook_loss    [B]          mean over elements of |sg(z_e) - z_q|^2 (zero with EMA codebooks, FSQ, LFQ
                                and Gumbel)
  commitment_loss  [B]          beta * mean over elements of |z_e - sg(z_q)|^2 (zero for FSQ and Gumbel)
  code_logits      [B, ..., K]  where defined (vq, rvq: -squared distances, [B, ..., S, K]; gumbel: logits)
  metrics          {"perplexity", "codes_used", ...}: usage over the whole global batch (psum over devices)

and quantiser-specific per-example terms (code_entropy, lfq_entropy, gumbel_kl), read by the loss terms
of `ae_jax.quantizers.terms`. Each module registers its quantizer (`spec.register`, found by name in
`QUANTIZERS`, see ae_jax/core/registry.py); a model holds one as a section with its options only,
`config.model.quantizer = quantizer_config("rvq", num_stages=8)`. Non-trainable state (EMA statistics,
Gumbel's step counter) lives in the "vq_ema" collection. EMA counts and sums are psum'd over the device
axis, and every data-dependent choice (initialisation, dead-code re-seeding, quantizer dropout, Gumbel
noise) is made from all-gathered encoder outputs and device 0's key, so every device holds what one device
would compute on the same global batch.
"""

from __future__ import annotations

from ae_jax.core.registry import QUANTIZERS
from ae_jax.quantizers.blocks import (
  EMA_COLLECTION,
  GRADIENTS,
  QuantizerOutput,
  broadcast_from_first,
  code_counts,
  code_entropy_penalty,
  codebook_init,
  entropy_of,
  example_keys,
  gather_rows,
  l2_normalize,
  nearest_code,
  nearest_code_and_distances,
  per_example_mean,
  rotation_trick,
  squared_distances,
  straight_through,
  substitute,
  usage_metrics,
  vector_quantize,
  vq_losses,
)
from ae_jax.quantizers.ema import (
  CODEBOOK_INITS,
  EMAStats,
  assigned_sums,
  ema_stats_from_codebook,
  ema_update,
  initial_stats,
  kmeans_plus_plus,
  random_rows,
  reseed_dead_codes,
  reseed_if_dead,
)
from ae_jax.quantizers.gumbel import (
  GumbelQuantizer,
  gumbel_kl_to_uniform,
  gumbel_quantize,
  gumbel_temperature,
)
from ae_jax.quantizers.rvq import ResidualVectorQuantizer, dropout_stages, residual_quantize
from ae_jax.quantizers.scalar import (
  MAX_CODES,
  MAX_JOINT_ENTROPY_BITS,
  MAX_LFQ_BITS,
  FiniteScalarQuantizer,
  LookupFreeQuantizer,
  check_fsq_levels,
  fsq,
  fsq_bound,
  joint_codebook_entropy,
  lfq,
  per_bit_entropy,
)
from ae_jax.quantizers.spec import QuantizerSpec, quantizer_config, register
from ae_jax.quantizers.vq import VectorQuantizer

__all__ = [
  "CODEBOOK_INITS",
  "EMA_COLLECTION",
  "GRADIENTS",
  "MAX_CODES",
  "MAX_JOINT_ENTROPY_BITS",
  "MAX_LFQ_BITS",
  "QUANTIZERS",
  "EMAStats",
  "FiniteScalarQuantizer",
  "GumbelQuantizer",
  "LookupFreeQuantizer",
  "QuantizerOutput",
  "QuantizerSpec",
  "ResidualVectorQuantizer",
  "VectorQuantizer",
  "assigned_sums",
  "broadcast_from_first",
  "check_fsq_levels",
  "code_counts",
  "code_entropy_penalty",
  "codebook_init",
  "dropout_stages",
  "ema_stats_from_codebook",
  "ema_update",
  "entropy_of",
  "example_keys",
  "fsq",
  "fsq_bound",
  "gather_rows",
  "gumbel_kl_to_uniform",
  "gumbel_quantize",
  "gumbel_temperature",
  "initial_stats",
  "joint_codebook_entropy",
  "kmeans_plus_plus",
  "l2_normalize",
  "lfq",
  "nearest_code",
  "nearest_code_and_distances",
  "per_bit_entropy",
  "per_example_mean",
  "quantizer_config",
  "random_rows",
  "register",
  "reseed_dead_codes",
  "reseed_if_dead",
  "residual_quantize",
  "rotation_trick",
  "squared_distances",
  "straight_through",
  "substitute",
  "usage_metrics",
  "vector_quantize",
  "vq_losses",
]
