"""A GPT-style autoregressive prior over raster-scan code sequences (VQGAN's second stage, Esser et al. 2021).

p(x) = prod_t p(x_t | x_<t) for a sequence x of L tokens in [0, K) (a VQ-VAE's code indices of one image,
row by row). The model reads [start, x_0, ..., x_{L-2}] (the shift happens inside the module) through
causally masked pre-LayerNorm transformer blocks (`ae_jax.generation.trunk`), so logits[:, t] depends only on
tokens[:, :t]. The start token is one learned embedding when unconditional (`num_classes=0`), or a learned
embedding per class (class-conditional, as taming-transformers' class token). Logits are float32 whatever
the compute dtype. Token ids must lie in [0, K) and labels in [0, num_classes): out-of-range ids are not
checked inside a jitted call.

`token_nll` is the per-example negative log-likelihood in nats (divide by L * ln 2 for bits per token);
`sample_autoregressive` draws sequences position by position with temperature, top-k and nucleus filters
(`ae_jax.generation.sampling`), re-running the model on a fixed-shape buffer (no KV cache: L forward passes of
length L per batch, O(L^2) attention work per token).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.generation.sampling import check_sampling_options, sample_logits
from ae_jax.generation.trunk import SequenceTransformer, TokenPrior

# apply_fn(tokens [N, L] int32, labels [N] int32 | None) -> logits [N, L, K] (or {"logits": ...}).
ApplyFn = Callable[[jax.Array, jax.Array | None], jax.Array | Mapping[str, jax.Array]]


def check_tokens(model: str, tokens: jax.Array, seq_len: int) -> None:
  """Raises ConfigError unless `tokens` is an integer array [B, seq_len]."""
  if tokens.ndim != 2 or tokens.shape[1] != seq_len:
    raise ConfigError(
      f"{model}: expects tokens of shape [batch, {seq_len}] (seq_len), got {list(tokens.shape)}; flatten "
      "each example's code grid in raster order and set seq_len to its length"
    )
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ConfigError(f"{model}: tokens must be integer code indices, got dtype {tokens.dtype}")


def check_labels(model: str, labels: jax.Array | None, num_classes: int, batch: int) -> None:
  """Raises ConfigError when labels are missing for a class-conditional model, given to an unconditional
  one, or not of shape [batch]."""
  if num_classes > 0 and labels is None:
    raise ConfigError(f"{model}: the model is class-conditional (num_classes={num_classes}); pass labels")
  if num_classes == 0 and labels is not None:
    raise ConfigError(f"{model}: labels were given but the model is unconditional; set num_classes > 0")
  if labels is not None and tuple(labels.shape) != (batch,):
    raise ConfigError(
      f"{model}: labels must have shape [{batch}] (one per sequence), got {list(labels.shape)}"
    )


def logits_of(output: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
  """The logits of a model output: the array itself or `output["logits"]`, as float32."""
  if isinstance(output, Mapping):
    output = output["logits"]
  return jnp.asarray(output, jnp.float32)


class ARTransformer(TokenPrior):
  """Causal transformer prior: tokens [B, L] int32 -> {"logits": [B, L, K] float32}, logits[:, t] the
  distribution of tokens[:, t] given tokens[:, :t].

  Embedding table: the K tokens, then one start token (unconditional) or one per class.
  """

  @nn.compact
  def __call__(
    self, tokens: jax.Array, *, labels: jax.Array | None = None, train: bool
  ) -> dict[str, jax.Array]:
    check_tokens("ar_transformer", tokens, self.seq_len)
    check_labels("ar_transformer", labels, self.num_classes, tokens.shape[0])
    tokens = tokens.astype(jnp.int32)
    offset = jnp.zeros(tokens.shape[:1], jnp.int32) if labels is None else labels.astype(jnp.int32)
    start = self.vocab_size + offset
    inputs = jnp.concatenate([start[:, None], tokens[:, :-1]], axis=1)
    logits = SequenceTransformer(
      num_embeddings=self.vocab_size + max(1, self.num_classes),
      num_outputs=self.vocab_size,
      max_len=self.seq_len,
      causal=True,
      **self.trunk_options(),
      name="net",
    )(inputs, train=train)
    return {"logits": logits}


def token_nll(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Per-example negative log-likelihood in nats, summed over positions: logits [B, L, K], tokens [B, L]
  -> [B] float32 (-sum_t log softmax(logits[:, t])[tokens[:, t]]; finite for finite logits)."""
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, tokens.astype(jnp.int32)[..., None], axis=-1)[..., 0]
  return -jnp.sum(picked, axis=-1)


def sample_autoregressive(
  apply_fn: ApplyFn,
  rng: jax.Array,
  num: int,
  *,
  seq_len: int,
  temperature: float | jax.Array = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  labels: jax.Array | None = None,
) -> jax.Array:
  """Draws `num` sequences from a causal model: int32 [num, seq_len].

  `apply_fn(tokens [num, L], labels)` returns the model's logits [num, L, K] (or its output dict), e.g.
  `lambda t, y: model.apply(variables, t, labels=y, train=False)`; it must be causal with the shift inside
  (logits[:, t] reads tokens[:, :t] only, like ARTransformer), so the not-yet-sampled zeros of the buffer
  never matter. Position t is drawn with key fold_in(rng, t) by `sample_logits` (temperature < 1e-5:
  greedy argmax; then top_k, then top_p filters). Jittable (a lax.fori_loop over positions; `num`,
  `seq_len`, `top_k` and `top_p` are static), deterministic for an rng.
  """
  check_sampling_options(temperature, top_k, top_p)
  if labels is not None and tuple(labels.shape) != (num,):
    raise ConfigError(f"sample_autoregressive: labels must have shape [{num}], got {list(labels.shape)}")

  def body(t: jax.Array, buffer: jax.Array) -> jax.Array:
    logits = logits_of(apply_fn(buffer, labels))
    step_logits = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
    token = sample_logits(jax.random.fold_in(rng, t), step_logits, temperature, top_k, top_p)
    return jax.lax.dynamic_update_index_in_dim(buffer, token, t, axis=1)

  return jax.lax.fori_loop(0, seq_len, body, jnp.zeros((num, seq_len), jnp.int32))
