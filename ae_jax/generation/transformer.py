"""A GPT-style autoregressive prior over raster-scan code sequences (VQGAN's second stage, Esser et al. 2021).

p(x) = prod_t p(x_t | x_<t) for a sequence x of L tokens in [0, K) (a VQ-VAE's code indices of one image,
row by row). The model reads [start, x_0, ..., x_{L-2}] (the shift happens inside the module) through
causally masked pre-LayerNorm transformer blocks (`ae_jax.generation.trunk`), so logits[:, t] depends only on
tokens[:, :t]. The start token is one learned embedding when unconditional (`num_classes=0`), or a learned
embedding per class (class-conditional, as taming-transformers' class token). Logits are float32 whatever
the compute dtype. Token ids must lie in [0, K) and labels in [0, num_classes): out-of-range ids are not
checked inside a jitted call.

`token_nll` is the per-example negative log-likelihood in nats (divide by L * ln 2 for bits per token).
Two samplers draw sequences position by position with temperature, top-k and nucleus filters
(`ae_jax.generation.sampling`), position t from key fold_in(rng, t), so both give the same tokens:
`sample_autoregressive`, the simple reference, re-runs the model on a fixed-shape buffer (L forward passes
of length L); `sample_cached` feeds one token per step through the trunk's key/value cache
(`ARTransformer.decode_step`, `ae_jax.generation.trunk`): L passes over one token.

Classifier-free guidance (Ho & Salimans 2022, in LlamaGen's and MUSE's form on the logits): a prior trained
with `class_dropout` p > 0 sees the null class (label id `num_classes`, one more start token) in place of
an example's label with probability p (`drop_labels`); sampling with guidance W reads the logits
uncond + W (cond - uncond) (`sampling.guide_logits`) before temperature and filters, the conditional and
null-class passes stacked along the batch (one cache for both). W = 1 is the conditional prior (one pass),
W = 0 the null-class prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ae_jax.core.errors import ConfigError
from ae_jax.generation.sampling import (
  check_sampling_options,
  guidance_weights,
  guide_logits,
  sample_logits,
)
from ae_jax.generation.trunk import SequenceTransformer, TokenPrior

# apply_fn(tokens [N, L] int32, labels [N] int32 | None) -> logits [N, L, K] (or {"logits": ...}).
ApplyFn = Callable[[jax.Array, jax.Array | None], jax.Array | Mapping[str, jax.Array]]
# step_fn(cache, ids [B] int32, position int32 []) -> (logits [B, K] float32, the updated cache).
StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


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


def check_class_dropout(model: str, class_dropout: float, num_classes: int) -> None:
  """Raises ConfigError unless 0 <= class_dropout < 1, and 0 for an unconditional model."""
  if not 0.0 <= class_dropout < 1.0:
    raise ConfigError(
      f"{model}: config.model.class_dropout must be in [0, 1) (the probability of training on the null "
      f"class), got {class_dropout}"
    )
  if class_dropout > 0 and not num_classes:
    raise ConfigError(
      f"{model}: config.model.class_dropout={class_dropout} needs a class-conditional prior (the config's "
      "',conditional'); set class_dropout to 0"
    )


def check_guidance(
  model: str, guidance: float, num_classes: int, class_dropout: float, *, given: bool = False
) -> None:
  """Raises ConfigError for a guidance weight this prior cannot use: W must be finite and >= 0, and any W
  other than 1 (or any W the user `given`) needs a class-conditional prior trained with class_dropout > 0
  (one that has learned the null class)."""
  if not math.isfinite(guidance) or guidance < 0:
    raise ConfigError(f"--guidance must be a finite number >= 0 (1: no guidance), got {guidance}")
  if guidance == 1.0 and not given:
    return
  if not num_classes:
    raise ConfigError(
      f"--guidance needs a class-conditional prior; this '{model}' prior is unconditional: drop --guidance"
    )
  if class_dropout <= 0:
    raise ConfigError(
      f"--guidance needs a prior trained with label dropout (it has never learned the null class); this "
      f"'{model}' prior was trained with config.model.class_dropout=0: retrain it with "
      "--config.model.class_dropout=0.1, or drop --guidance"
    )


def drop_labels(rng: jax.Array, labels: jax.Array, class_dropout: float, null_label: int) -> jax.Array:
  """Labels [B] with each replaced by `null_label` with probability `class_dropout` (independently):
  int32 [B]. The label dropout of classifier-free guidance's training."""
  labels = labels.astype(jnp.int32)
  if class_dropout <= 0:
    return labels
  return jnp.where(jax.random.bernoulli(rng, class_dropout, labels.shape), null_label, labels)


def with_guidance(
  apply_fn: ApplyFn,
  guidance: float,
  null_label: int,
  schedule: str = "constant",
  seq_len: int | None = None,
) -> ApplyFn:
  """`apply_fn` with classifier-free guidance: (tokens [N, L], labels [N]) -> logits [N, L, K] =
  uncond + W_t (cond - uncond) at each position t, both passes in one call of batch 2N (labels, then
  `null_label`s); W_t from `sampling.guidance_weights(guidance, schedule, seq_len)` (a prefix of l <=
  seq_len positions reads the first l; the constant schedule needs no seq_len). W = 1 returns `apply_fn`
  itself (the conditional prior, one pass)."""
  if guidance == 1.0:
    return apply_fn
  if seq_len is None and schedule != "constant":
    raise ConfigError(f"with_guidance: the '{schedule}' guidance schedule needs the sequence length")
  weights = guidance_weights(guidance, schedule, seq_len or 1)  # one weight broadcasts to every position

  def guided(tokens: jax.Array, labels: jax.Array | None) -> jax.Array:
    nulls = jnp.full_like(labels, null_label)
    both = logits_of(apply_fn(jnp.concatenate([tokens, tokens]), jnp.concatenate([labels, nulls])))
    cond, uncond = jnp.split(both, 2)
    return guide_logits(cond, uncond, weights[: cond.shape[1], None])

  return guided


def zero_cache(create: Callable[[], tuple[Any, Mapping[str, Any]]]) -> Any:
  """The zero "cache" collection that `create()` (an apply with mutable=["cache"] that creates it, e.g.
  `ARTransformer.init_cache`) makes, without running it (jax.eval_shape)."""
  shapes = jax.eval_shape(create)[1]["cache"]
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


class ARTransformer(TokenPrior):
  """Causal transformer prior: tokens [B, L] int32 -> {"logits": [B, L, K] float32}, logits[:, t] the
  distribution of tokens[:, t] given tokens[:, :t].

  Embedding table: the K tokens, then one start token (unconditional) or one per class, then the null
  class's (only with class_dropout > 0). Label `num_classes` is the null class.
  """

  def setup(self) -> None:
    check_class_dropout("ar_transformer", self.class_dropout, self.num_classes)
    null = 1 if self.class_dropout > 0 else 0
    self.net = SequenceTransformer(
      num_embeddings=self.vocab_size + max(1, self.num_classes) + null,
      num_outputs=self.vocab_size,
      max_len=self.seq_len,
      causal=True,
      **self.trunk_options(),
    )

  def start_ids(self, labels: jax.Array | None, batch: int) -> jax.Array:
    """The start token of each sequence: int32 [batch] (K, or K + label for a class-conditional prior)."""
    offset = jnp.zeros((batch,), jnp.int32) if labels is None else labels.astype(jnp.int32)
    return self.vocab_size + offset

  def __call__(
    self, tokens: jax.Array, *, labels: jax.Array | None = None, train: bool
  ) -> dict[str, jax.Array]:
    check_tokens("ar_transformer", tokens, self.seq_len)
    check_labels("ar_transformer", labels, self.num_classes, tokens.shape[0])
    tokens = tokens.astype(jnp.int32)
    if labels is not None and train and self.class_dropout > 0:
      labels = drop_labels(self.make_rng("dropout"), labels, self.class_dropout, self.num_classes)
    start = self.start_ids(labels, tokens.shape[0])
    inputs = jnp.concatenate([start[:, None], tokens[:, :-1]], axis=1)
    return {"logits": self.net(inputs, train=train)}

  def init_cache(self, batch: int) -> None:
    """Creates the zero key/value cache of `batch` sequences (apply with mutable=["cache"]; `zero_cache`)."""
    self.net(jnp.zeros((batch, self.seq_len), jnp.int32), train=False, decode=True)

  def decode_step(self, ids: jax.Array, position: jax.Array) -> jax.Array:
    """One cached step: the input ids [B] at `position` (the start token at 0, then token position - 1)
    -> logits [B, K] float32 of the token at `position` (apply with mutable=["cache"])."""
    return self.net(ids.astype(jnp.int32)[:, None], train=False, decode=True, position=position)[:, 0]


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
  blocks: int = 1,
) -> jax.Array:
  """Draws `num` sequences from a causal model by full recomputation (the reference of `sample_cached`):
  int32 [num, seq_len].

  `apply_fn(tokens [num, L], labels)` returns the model's logits [num, L, K] (or its output dict), e.g.
  `lambda t, y: model.apply(variables, t, labels=y, train=False)`; it must be causal with the shift inside
  (logits[:, t] reads tokens[:, :t] only, like ARTransformer), so the not-yet-sampled zeros of the buffer
  never matter. Position t is drawn with key fold_in(rng, t) by `sample_logits` (temperature < 1e-5:
  greedy argmax; then top_k, then top_p filters). Jittable (a lax.fori_loop over positions; `num`,
  `seq_len`, `top_k`, `top_p` and `blocks` are static), deterministic for an rng.

  `blocks` > 1 (a divisor of seq_len, e.g. a code grid's rows) fills the positions in that many
  consecutive blocks, block b reading only the prefix of (b + 1) seq_len / blocks positions: `apply_fn`
  then also takes prefixes [num, l] and returns their logits [num, l, K] (the PixelCNN over the first
  rows of its grid). The tokens are those of blocks=1 (a causal model's logits at a position do not read
  later positions), for about half the FLOPs.
  """
  check_sampling_options(temperature, top_k, top_p)
  if labels is not None and tuple(labels.shape) != (num,):
    raise ConfigError(f"sample_autoregressive: labels must have shape [{num}], got {list(labels.shape)}")
  if blocks < 1 or seq_len % blocks:
    raise ConfigError(f"sample_autoregressive: blocks must divide seq_len {seq_len}, got {blocks}")
  size = seq_len // blocks

  def body(t: jax.Array, buffer: jax.Array, prefix: int) -> jax.Array:
    logits = logits_of(apply_fn(buffer[:, :prefix], labels))
    step_logits = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
    token = sample_logits(jax.random.fold_in(rng, t), step_logits, temperature, top_k, top_p)
    return jax.lax.dynamic_update_index_in_dim(buffer, token, t, axis=1)

  buffer = jnp.zeros((num, seq_len), jnp.int32)
  for b in range(blocks):  # one loop per prefix length (static shapes)
    fill = lambda t, buf, prefix=(b + 1) * size: body(t, buf, prefix)  # noqa: E731
    buffer = jax.lax.fori_loop(b * size, (b + 1) * size, fill, buffer)
  return buffer


def sample_cached(
  step_fn: StepFn,
  cache: Any,
  rng: jax.Array,
  start_ids: jax.Array,
  *,
  seq_len: int,
  temperature: float | jax.Array = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  guidance: float = 1.0,
  guidance_schedule: str = "constant",
) -> jax.Array:
  """Draws sequences through a key/value cache, one position per step: int32 [num, seq_len].

  `step_fn(cache, ids [B], t)` returns the logits [B, K] of position t given the ids fed at positions
  0..t (`ARTransformer.decode_step`); `cache` is its zero cache of batch B; `start_ids` [B] the ids fed at
  position 0. Without guidance (W = 1) B = num; with guidance B = 2 num, the first num rows conditional and
  the last num their null-class twins (the same tokens fed to both), and position t is drawn from
  uncond + W_t (cond - uncond), W_t = `guidance_weights(guidance, guidance_schedule, seq_len)[t]`.
  Position t is drawn with key fold_in(rng, t) by `sample_logits`, as in
  `sample_autoregressive`, so both give the same tokens for the same model and rng. Jittable (a
  lax.fori_loop; `seq_len`, `top_k`, `top_p`, `guidance` and its schedule are static), deterministic for an
  rng.
  """
  check_sampling_options(temperature, top_k, top_p)
  rows = start_ids.shape[0]
  num = rows // 2 if guidance != 1.0 else rows
  if guidance != 1.0 and rows % 2:
    raise ConfigError(f"sample_cached: guidance needs 2 x num start ids (cond, then null), got {rows}")

  weights = guidance_weights(guidance, guidance_schedule, seq_len)

  def body(t: jax.Array, carry: tuple[Any, jax.Array, jax.Array]) -> tuple[Any, jax.Array, jax.Array]:
    cache, ids, tokens = carry
    logits, cache = step_fn(cache, ids, t)
    if guidance != 1.0:
      logits = guide_logits(logits[:num], logits[num:], weights[t])
    token = sample_logits(jax.random.fold_in(rng, t), logits, temperature, top_k, top_p)
    ids = jnp.concatenate([token, token]) if guidance != 1.0 else token
    return cache, ids, jax.lax.dynamic_update_index_in_dim(tokens, token, t, axis=1)

  carry = (cache, start_ids.astype(jnp.int32), jnp.zeros((num, seq_len), jnp.int32))
  return jax.lax.fori_loop(0, seq_len, body, carry)[2]
