"""MaskGIT (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer"): a bidirectional transformer
over code sequences, trained to predict masked tokens and sampled by iterative parallel decoding.

Tokens are ids in [0, K); the mask token is id K (`mask_id = vocab_size`). A class-conditional model
(`num_classes > 0`) prepends one class token (id K + 1 + label) to the sequence, as the reference
implementation (github google-research/maskgit) does, and drops its output; with `class_dropout` p > 0 the
label is the null class (label num_classes, one more embedding) with probability p in training, for
classifier-free guidance (`transformer.with_guidance`).

Mask schedule gamma(r), the fraction of the L tokens that is masked at ratio r in [0, 1] (the reference's
`mask_schedule.schedule`): cosine cos(pi/2 r) (the paper's choice), linear 1 - r (the reference's
"uniform"), square 1 - r^2 (its "pow2").

Training (`random_mask`): per example r ~ U[0, 1), n = max(1, ceil(gamma(r) L)) positions chosen uniformly
at random are replaced by the mask token; the loss (`masked_token_loss`) is the cross-entropy on the masked
positions only.

Decoding (`maskgit_decode`, the reference's `parallel_decode.decode`), T = `steps` iterations from the
all-masked sequence. At iteration t = 0..T-1 every masked position is sampled (temperature, top-k, top-p,
`ae_jax.generation.sampling`); the confidence of a sampled token is its log-probability under the model
(the unfiltered, untempered softmax) plus Gumbel noise times choice_temperature * (1 - (t+1)/T); tokens fixed
earlier have confidence +inf. Then the n_t lowest-confidence positions are masked again, with
n_t = max(1, min(n_{t-1} - 1, floor(L gamma((t+1)/T)))) for t < T-1 (n_{-1} = L: at least one token is
fixed per iteration and at least one is left for the next) and n_{T-1} = 0 (`decode_mask_counts`). The
reference compares to a cut-off confidence (ties may mask fewer); here exactly n_t positions are masked.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.core.errors import ConfigError, did_you_mean
from ae_jax.generation.sampling import check_sampling_options, sample_logits
from ae_jax.generation.transformer import (
  ApplyFn,
  check_class_dropout,
  check_labels,
  check_tokens,
  drop_labels,
  logits_of,
)
from ae_jax.generation.trunk import SequenceTransformer, TokenPrior

MASK_SCHEDULES = ("cosine", "linear", "square")


def _check_schedule(kind: str) -> None:
  if kind not in MASK_SCHEDULES:
    raise ConfigError(
      f"maskgit: unknown mask schedule '{kind}'; {did_you_mean(kind, MASK_SCHEDULES)}"
      f"choose one of {list(MASK_SCHEDULES)}"
    )


def mask_schedule(ratio: float | np.ndarray | jax.Array, kind: str = "cosine") -> np.ndarray | jax.Array:
  """gamma(ratio), the masked fraction, clipped to [0, 1]: float64 numpy for Python/numpy input, a jax
  array (its float dtype) for jax input; elementwise."""
  _check_schedule(kind)
  xp = jnp if isinstance(ratio, jax.Array) else np
  r = xp.asarray(ratio, dtype=None if xp is jnp else np.float64)
  if kind == "cosine":
    value = xp.cos(0.5 * math.pi * r)
  elif kind == "linear":
    value = 1.0 - r
  else:
    value = 1.0 - r * r
  return xp.clip(value, 0.0, 1.0)


def decode_mask_counts(seq_len: int, steps: int, kind: str = "cosine") -> np.ndarray:
  """How many of the `seq_len` positions are still masked after each decoding iteration: int32 [steps].

  n_t = max(1, min(n_{t-1} - 1, floor(L gamma((t+1)/T)))) for t < T-1, n_{T-1} = 0 (module docstring),
  computed in float64 with 1e-9 added before the floor so that exact products (3 * (1 - 1/3)) are not
  rounded down.
  """
  _check_schedule(kind)
  if seq_len < 1 or steps < 1:
    raise ConfigError(f"maskgit: seq_len and steps must be >= 1, got seq_len={seq_len}, steps={steps}")
  counts, previous = [], seq_len
  for t in range(steps):
    if t == steps - 1:
      n = 0
    else:
      n = max(1, min(previous - 1, math.floor(seq_len * float(mask_schedule((t + 1) / steps, kind)) + 1e-9)))
    counts.append(n)
    previous = n
  return np.asarray(counts, np.int32)


def random_mask(
  rng: jax.Array, tokens: jax.Array, *, mask_id: int, kind: str = "cosine"
) -> tuple[jax.Array, jax.Array]:
  """Training masks: tokens [B, L] -> (masked tokens [B, L] int32 with `mask_id` where masked, mask [B, L]
  bool). Per example r ~ U[0, 1) and max(1, ceil(gamma(r) L)) positions, uniformly at random."""
  _check_schedule(kind)
  batch, length = tokens.shape
  ratio_rng, position_rng = jax.random.split(rng)
  ratio = jax.random.uniform(ratio_rng, (batch,))
  count = jnp.clip(jnp.ceil(mask_schedule(ratio, kind) * length), 1, length).astype(jnp.int32)
  # Ranks of i.i.d. uniform scores are a uniform random permutation; the first `count` are masked.
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(position_rng, (batch, length)), axis=-1), axis=-1)
  mask = ranks < count[:, None]
  return jnp.where(mask, mask_id, tokens.astype(jnp.int32)), mask


def masked_token_loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean cross-entropy (nats) over the masked positions of each example: logits [B, L, K], tokens [B, L]
  (the unmasked targets), mask [B, L] bool -> [B] float32; 0 for an example without masked positions."""
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, tokens.astype(jnp.int32)[..., None], axis=-1)[..., 0]
  mask = mask.astype(jnp.float32)
  return jnp.sum(nll * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def fixed_mask(index: jax.Array, seq_len: int, ratio: float, seed: int) -> jax.Array:
  """Masks [B, L] bool with exactly max(1, round(ratio L)) True positions per example, drawn uniformly
  from fold_in(PRNGKey(seed), index[b]): the same example gets the same mask in every batch layout."""
  count = min(seq_len, max(1, round(ratio * seq_len)))
  base = jax.random.PRNGKey(seed)
  scores = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(base, i), (seq_len,)))(index)
  ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  return ranks < count


class MaskGITTransformer(TokenPrior):
  """Bidirectional transformer: tokens [B, L] with ids in [0, K] (K = the mask token) -> {"logits":
  [B, L, K] float32} over the K real tokens at every position.

  Embedding table: the K tokens, the mask token, then one token per class (`num_classes > 0`), then the
  null class's (class_dropout > 0).
  """

  @property
  def mask_id(self) -> int:
    """The mask token's id, K."""
    return self.vocab_size

  @nn.compact
  def __call__(
    self, tokens: jax.Array, *, labels: jax.Array | None = None, train: bool
  ) -> dict[str, jax.Array]:
    check_tokens("maskgit", tokens, self.seq_len)
    check_labels("maskgit", labels, self.num_classes, tokens.shape[0])
    check_class_dropout("maskgit", self.class_dropout, self.num_classes)
    ids = tokens.astype(jnp.int32)
    if labels is not None:
      if train and self.class_dropout > 0:
        labels = drop_labels(self.make_rng("dropout"), labels, self.class_dropout, self.num_classes)
      ids = jnp.concatenate([(self.vocab_size + 1 + labels.astype(jnp.int32))[:, None], ids], axis=1)
    logits = SequenceTransformer(
      num_embeddings=self.vocab_size + 1 + self.num_classes + (1 if self.class_dropout > 0 else 0),
      num_outputs=self.vocab_size,
      max_len=self.seq_len + (1 if self.num_classes else 0),
      causal=False,
      **self.trunk_options(),
      name="net",
    )(ids, train=train)
    return {"logits": logits[:, 1:] if labels is not None else logits}


def maskgit_decode(
  apply_fn: ApplyFn,
  rng: jax.Array,
  num: int,
  *,
  seq_len: int,
  vocab_size: int,
  steps: int = 8,
  temperature: float | jax.Array = 1.0,
  choice_temperature: float | jax.Array = 4.5,
  labels: jax.Array | None = None,
  top_k: int = 0,
  top_p: float = 1.0,
  schedule: str = "cosine",
  history: bool = False,
) -> jax.Array:
  """Iterative parallel decoding (module docstring): `num` sequences int32 [num, seq_len] in [0, K); with
  `history`, the sequences after every iteration, int32 [num, steps, seq_len], the mask token K where a
  position is still masked ([:, -1] is the result and has none).

  `apply_fn(tokens [num, L] with mask token K, labels)` returns the model's logits [num, L, K] (or its
  output dict), e.g. `lambda t, y: model.apply(variables, t, labels=y, train=False)`. Iteration t draws its
  tokens and Gumbel noise from fold_in(rng, t). Jittable (a lax.fori_loop over iterations; `num`,
  `seq_len`, `vocab_size`, `steps`, `top_k`, `top_p`, `schedule` and `history` are static), deterministic
  for an rng.
  """
  check_sampling_options(temperature, top_k, top_p)
  counts = jnp.asarray(decode_mask_counts(seq_len, steps, schedule))
  if labels is not None and tuple(labels.shape) != (num,):
    raise ConfigError(f"maskgit_decode: labels must have shape [{num}], got {list(labels.shape)}")
  mask_id = vocab_size

  def body(t: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    tokens, past = carry
    logits = logits_of(apply_fn(tokens, labels))
    sample_rng, choice_rng = jax.random.split(jax.random.fold_in(rng, t))
    unknown = tokens == mask_id
    sampled = jnp.where(unknown, sample_logits(sample_rng, logits, temperature, top_k, top_p), tokens)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    confidence = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
    noise_scale = jnp.asarray(choice_temperature, jnp.float32) * (1.0 - (t + 1) / steps)
    confidence = confidence + noise_scale * jax.random.gumbel(choice_rng, confidence.shape)
    confidence = jnp.where(unknown, confidence, jnp.inf)
    ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
    tokens = jnp.where(ranks < counts[t], mask_id, sampled)
    if history:
      past = jax.lax.dynamic_update_index_in_dim(past, tokens, t, axis=1)
    return tokens, past

  start = jnp.full((num, seq_len), mask_id, jnp.int32)
  past = jnp.zeros((num, steps, seq_len) if history else (0,), jnp.int32)
  tokens, past = jax.lax.fori_loop(0, steps, body, (start, past))
  return past if history else tokens
