"""Logit filters and one categorical draw, shared by the autoregressive sampler and MaskGIT's decoder.

The order is the one of taming-transformers' and Hugging Face's samplers: divide the logits by the
temperature, keep the `top_k` largest (`filter_top_k`), then keep the smallest set of most probable tokens
whose probability mass reaches `top_p` (nucleus sampling, `filter_top_p`), then draw. Filtered logits are
-inf; both filters always keep the most probable token, so a draw never sees an all -inf row. Ties at the
cut-off are kept (a filter may keep more than k tokens, or a little more mass than needed, but never
less). A temperature below `GREEDY_TEMPERATURE` (0 included) means argmax (greedy) and divides by nothing.
All functions are pure and jittable; `top_k` and `top_p` are Python numbers (they decide the program),
`temperature` may be traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ae_jax.core.errors import ConfigError

# Temperatures below this are greedy: logits / 1e-5 stays finite in float32 for |logits| < 3e33.
GREEDY_TEMPERATURE = 1e-5


def filter_top_k(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits of each row (last axis), the others -inf: [..., K] -> [..., K] float32.

  k <= 0 or k >= K keeps everything. Logits equal to the k-th largest are all kept.
  """
  logits = jnp.asarray(logits, jnp.float32)
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)


def filter_top_p(logits: jax.Array, p: float) -> jax.Array:
  """Nucleus filter: keeps the smallest set of most probable tokens of each row whose softmax mass is >= p,
  the others -inf: [..., K] -> [..., K] float32.

  A token is kept when the mass of the tokens more probable than it is < p, so the most probable token is
  always kept (p <= 0 keeps only it) and p >= 1 keeps everything. -inf logits (already filtered) stay -inf.
  """
  logits = jnp.asarray(logits, jnp.float32)
  if p >= 1.0:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = (mass_before < p).at[..., 0].set(True)
  # The kept tokens are a prefix of the sorted row: the cut-off is the last kept logit.
  num_kept = jnp.sum(keep, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)
  return jnp.where(logits < cutoff, -jnp.inf, logits)


def sample_logits(
  rng: jax.Array, logits: jax.Array, temperature: float | jax.Array = 1.0, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
  """One token per row of `logits` [..., K] (unnormalised log-probabilities): int32 [...].

  Draws from softmax(filter_top_p(filter_top_k(logits / temperature, top_k), top_p)); a temperature below
  GREEDY_TEMPERATURE returns argmax(logits) (which every filter keeps).
  """
  logits = jnp.asarray(logits, jnp.float32)
  temperature = jnp.asarray(temperature, jnp.float32)
  scaled = logits / jnp.maximum(temperature, GREEDY_TEMPERATURE)
  filtered = filter_top_p(filter_top_k(scaled, top_k), top_p)
  drawn = jax.random.categorical(rng, filtered, axis=-1)
  greedy = jnp.argmax(logits, axis=-1)
  return jnp.where(temperature < GREEDY_TEMPERATURE, greedy, drawn).astype(jnp.int32)


def guide_logits(cond: jax.Array, uncond: jax.Array, guidance: float | jax.Array) -> jax.Array:
  """Classifier-free guidance on logits (LlamaGen's and MUSE's form): uncond + W (cond - uncond), float32
  [..., K]; W a number or an array that broadcasts against [...] (one weight per position: pass it with a
  trailing axis of 1). W = 0 gives `uncond` exactly, W = 1 `cond` (up to rounding)."""
  cond, uncond = jnp.asarray(cond, jnp.float32), jnp.asarray(uncond, jnp.float32)
  return uncond + jnp.asarray(guidance, jnp.float32) * (cond - uncond)


# How the guidance weight varies over a sequence's positions (the prior's sampling order).
GUIDANCE_SCHEDULES = ("constant", "linear")


def guidance_weights(guidance: float, schedule: str, length: int) -> jax.Array:
  """The guidance weight of each of `length` positions in sampling order: float32 [length].

  "constant": W everywhere. "linear": from 1 (the conditional prior) at the first position to W at the
  last, 1 + (W - 1) t / (length - 1), the linearly increasing weight of MUSE and VAR: the first tokens are
  drawn close to the conditional prior, with less of the push towards the class that costs diversity.
  """
  if schedule not in GUIDANCE_SCHEDULES:
    raise ConfigError(f"guidance schedule must be one of {list(GUIDANCE_SCHEDULES)}, got '{schedule}'")
  if schedule == "constant" or length == 1:
    return jnp.full((length,), guidance, jnp.float32)
  ramp = jnp.arange(length, dtype=jnp.float32) / (length - 1)
  return 1.0 + (jnp.float32(guidance) - 1.0) * ramp


def check_sampling_options(temperature: float | jax.Array, top_k: int, top_p: float) -> None:
  """Raises ConfigError for a negative top_k or a top_p outside [0, 1] (a concrete temperature < 0 is
  greedy, like 0)."""
  if not isinstance(top_k, int) or top_k < 0:
    raise ConfigError(f"sampling: top_k must be a non-negative int (0: no top-k filter), got {top_k!r}")
  if not 0.0 <= float(top_p) <= 1.0:
    raise ConfigError(f"sampling: top_p must be in [0, 1] (1: no nucleus filter), got {top_p!r}")
