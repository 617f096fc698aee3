"""Pure quantiser building blocks: nearest codes, gradient estimators, VQ loss terms, usage statistics and
the code entropy penalty; shapes are documented on each function."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ae_jax.core.errors import ConfigError

EMA_COLLECTION = "vq_ema"
GRADIENTS = ("straight_through", "rotation")


class QuantizerOutput(NamedTuple):
  """What a quantiser returns; shapes for inputs z_e [B, ..., D] (S stages, K codes)."""

  quantized: jax.Array  # [B, ..., D] forward value z_q, gradient by the chosen estimator
  indices: jax.Array  # [B, ...] int32 ([B, ..., S] for residual stages)
  codebook_loss: jax.Array  # [B]
  commitment_loss: jax.Array  # [B]
  code_logits: jax.Array | None = None  # [B, ..., K] ([B, ..., S, K]): -|z - e_k|^2 or the logits


def per_example_mean(x: jax.Array) -> jax.Array:
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return x.reshape(x.shape[0], -1).mean(axis=1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) along the last axis, torch.nn.functional.normalize's definition and default eps
  (as vector-quantize-pytorch's cosine codebooks use): [..., D] -> [..., D].

  The gradient is finite everywhere: the norm of a vector whose squares sum to 0 is taken of ones and masked
  to 0 (the gradient of sqrt at 0 is infinite, and 0 x inf = NaN), so at x = 0 the output is 0 with
  Jacobian I / eps; elsewhere values and gradients are those of the plain formula, bit for bit.
  """
  positive = jnp.sum(x * x, axis=-1, keepdims=True) > 0
  norm = jnp.linalg.norm(jnp.where(positive, x, 1.0), axis=-1, keepdims=True)
  return x / jnp.maximum(jnp.where(positive, norm, 0.0), eps)


def squared_distances(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """|x - e|^2 as |x|^2 + |e|^2 - 2 x.e (one matmul): x [N, D], codebook [K, D] -> [N, K], computed in (at
  least) float32 whatever the inputs' dtype: in bfloat16 the sum cancels and picks wrong nearest codes."""
  dtype = jnp.promote_types(jnp.result_type(x, codebook), jnp.float32)
  x, codebook = x.astype(dtype), codebook.astype(dtype)
  xe = jnp.matmul(x, codebook.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(x * x, -1, keepdims=True) + jnp.sum(codebook * codebook, -1) - 2.0 * xe


def nearest_code_and_distances(z: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(int32 index of the nearest codebook row [...], squared distances [..., K]) of z [..., D] and codebook
  [K, D]: the one distance matrix both the lookup and the code logits use."""
  d2 = squared_distances(z.reshape(-1, z.shape[-1]), codebook)
  indices = jnp.argmin(d2, axis=-1).astype(jnp.int32).reshape(z.shape[:-1])
  return indices, d2.reshape(*z.shape[:-1], codebook.shape[0])


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codebook row for every vector: z [..., D], codebook [K, D] -> int32 [...]."""
  return nearest_code_and_distances(z, codebook)[0]


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
  """z_e + sg(z_q - z_e): equals z_q, and its gradient with respect to z_e is the identity."""
  return z_e + jax.lax.stop_gradient(z_q - z_e)


def rotation_trick(z_e: jax.Array, z_q: jax.Array, eps: float = 1e-6) -> jax.Array:
  """The rotation trick (Fifty et al. 2024): forward value exactly z_q [..., D]; the gradient reaching z_e
  [..., D] is the decoder's gradient rotated and rescaled, d out / d z_e = |q|/|e| R with R the rotation
  taking e/|e| to q/|q| in their plane, R = I - 2 r r^T + 2 q^ e^T, r = (e^ + q^)/|e^ + q^|.

  R and the ratio are constants (stop-gradient); R e is applied as e - 2 r (r.e) + 2 q^ (e^.e), without
  forming a matrix. No gradient reaches z_q through the output (the codebook loss or EMA trains it).
  """
  sg = jax.lax.stop_gradient
  e_norm = jnp.maximum(jnp.linalg.norm(sg(z_e), axis=-1, keepdims=True), eps)
  q_norm = jnp.linalg.norm(sg(z_q), axis=-1, keepdims=True)
  e_hat, q_hat = sg(z_e) / e_norm, sg(z_q) / jnp.maximum(q_norm, eps)
  r = l2_normalize(e_hat + q_hat, eps)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rotated = (q_norm / e_norm) * (z_e - 2.0 * r * dot(r, z_e) + 2.0 * q_hat * dot(e_hat, z_e))
  return sg(z_q) + (rotated - sg(rotated))


def substitute(z_e: jax.Array, z_q: jax.Array, gradient: str = "straight_through") -> jax.Array:
  """The quantised output z_q [..., D] carrying the encoder's gradient by `gradient` ("straight_through" or
  "rotation")."""
  if gradient == "straight_through":
    return straight_through(z_e, z_q)
  if gradient == "rotation":
    return rotation_trick(z_e, z_q)
  raise ConfigError(f"unknown gradient estimator '{gradient}'; choose one of {GRADIENTS}")


def vq_losses(z_e: jax.Array, z_q: jax.Array, beta: float) -> tuple[jax.Array, jax.Array]:
  """(codebook loss, commitment loss), each [B], from z_e and its nearest codes z_q [B, ..., D].

  codebook = mean |sg(z_e) - z_q|^2 moves only the codes; commitment = beta * mean |z_e - sg(z_q)|^2 moves
  only the encoder. beta belongs to the commitment term (the paper's eq. 3); a widely copied PyTorch
  reference puts it on the codebook term instead.
  """
  sg = jax.lax.stop_gradient
  codebook = per_example_mean(jnp.square(sg(z_e) - z_q))
  commitment = beta * per_example_mean(jnp.square(z_e - sg(z_q)))
  return codebook, commitment


def vector_quantize(
  z_e: jax.Array, codebook: jax.Array, beta: float = 0.25, gradient: str = "straight_through"
) -> QuantizerOutput:
  """Nearest-code quantisation of z_e [B, ..., D] with codebook [K, D]; the loss terms compare the codes
  with z_e itself (before substitution); code_logits [B, ..., K] = -squared distances."""
  indices, d2 = nearest_code_and_distances(z_e, codebook)  # d2 carries gradients for code_entropy
  z_q = jnp.take(codebook, indices, axis=0)
  codebook_loss, commitment_loss = vq_losses(z_e, z_q, beta)
  return QuantizerOutput(substitute(z_e, z_q, gradient), indices, codebook_loss, commitment_loss, -d2)


# ----------------------------------------------------------------------------- usage and entropy


def code_counts(
  indices: jax.Array, num_codes: int, axis_name: str | None = None, weights: jax.Array | None = None
) -> jax.Array:
  """How often each code was chosen (each choice counted `weights` times, same shape as indices), summed
  over `axis_name` (all devices) when given: int [...] -> [K]."""
  ones = 1.0 if weights is None else weights.reshape(-1).astype(jnp.float32)
  counts = jnp.zeros((num_codes,), jnp.float32).at[indices.reshape(-1)].add(ones)
  return counts if axis_name is None else jax.lax.psum(counts, axis_name)


def entropy_of(p: jax.Array, axis: int = -1) -> jax.Array:
  """-sum p log p along `axis` (0 log 0 = 0): [..., K] -> [...]."""
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def usage_metrics(counts: jax.Array) -> dict[str, jax.Array]:
  """perplexity = exp(entropy of the code frequencies) (K when all codes are equally used, 1 for one code)
  and codes_used = the fraction of codes chosen at least once, from counts [K]."""
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return {"perplexity": jnp.exp(entropy_of(p)), "codes_used": jnp.mean((counts > 0).astype(jnp.float32))}


def global_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def code_entropy_penalty(
  logits: jax.Array,
  temperature: float = 0.01,
  diversity: float = 1.0,
  axis_name: str | None = None,
  weights: jax.Array | None = None,
) -> jax.Array:
  """The codebook entropy penalty of MaskGIT/VQGAN variants, per example [B], in nats: the mean over an
  example's positions of the entropy of p = softmax(logits / temperature) minus `diversity` x the entropy
  of p averaged over every position of the global batch (psum over `axis_name`). Minimising it makes each
  assignment confident and the batch use many codes. logits [B, ..., K]; weights [B, ...] (0 = leave a
  position out)."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  p = jnp.exp(log_p)
  sample = -jnp.sum(p * log_p, axis=-1)  # [B, ...]
  w = jnp.ones(sample.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  per_example = jnp.sum((w * sample).reshape(w.shape[0], -1), 1)
  per_example = per_example / jnp.maximum(jnp.sum(w.reshape(w.shape[0], -1), 1), 1.0)
  total = global_sum(jnp.sum(w), axis_name)
  mean_p = global_sum(jnp.sum((w[..., None] * p).reshape(-1, p.shape[-1]), 0), axis_name)
  return per_example - diversity * entropy_of(mean_p / jnp.maximum(total, 1e-12))


# ----------------------------------------------------------------------------- devices and keys


def broadcast_from_first(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Device 0's value of x (an array or a PRNG key) on every device: a psum of x masked to device 0."""
  if axis_name is None:
    return x
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    impl = jax.random.key_impl(x)
    return jax.random.wrap_key_data(broadcast_from_first(jax.random.key_data(x), axis_name), impl=impl)
  first = jax.lax.axis_index(axis_name) == 0
  return jax.lax.psum(jnp.where(first, x, jnp.zeros_like(x)), axis_name)


def example_keys(key: jax.Array, batch: int, axis_name: str | None) -> jax.Array:
  """One key per example of this device's batch, fold_in(device 0's key, the example's index in the global
  batch): per-example draws that do not depend on how the global batch is split over devices. -> [batch]."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch
  key = broadcast_from_first(key, axis_name)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(batch))


def gather_rows(x: jax.Array, axis_name: str | None) -> jax.Array:
  """The rows of x [..., D] of every device, in global order: [N, D] (N = all devices' rows)."""
  flat = x.reshape(-1, x.shape[-1])
  return flat if axis_name is None else jax.lax.all_gather(flat, axis_name, tiled=True)


def codebook_init(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform with variance 1/D (Sonnet's variance-scaling default for the embeddings), shape [..., K, D]."""
  limit = math.sqrt(3.0 / shape[-1])
  return jax.random.uniform(key, shape, jnp.float32, -limit, limit)
