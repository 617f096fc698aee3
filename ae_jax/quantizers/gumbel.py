"""Gumbel-softmax quantisation (Jang et al. 2017; as in DALL-E's dVAE and VQGAN's GumbelQuantize): logits
over K codes, a straight-through hard sample in training, the argmax at evaluation, and an annealed
temperature whose step counter is checkpointed state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.quantizers import spec
from ae_jax.quantizers.blocks import (
  EMA_COLLECTION,
  QuantizerOutput,
  code_counts,
  code_entropy_penalty,
  codebook_init,
  example_keys,
  per_example_mean,
  usage_metrics,
)
from ae_jax.quantizers.vq import outputs_dict


def gumbel_temperature(step: jax.Array, start: float, end: float, anneal_steps: int) -> jax.Array:
  """start * (end / start)^min(step / anneal_steps, 1): geometric from `start` at step 0 to `end` at
  `anneal_steps` and after (constant `start` when anneal_steps = 0). step [] -> []."""
  if anneal_steps <= 0:
    return jnp.asarray(start, jnp.float32)
  t = jnp.minimum(step.astype(jnp.float32) / anneal_steps, 1.0)
  return start * (end / start) ** t


def gumbel_kl_to_uniform(logits: jax.Array) -> jax.Array:
  """KL(softmax(logits) || uniform over K) per position, averaged over an example's positions, in nats:
  logits [B, ..., K] -> [B]."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  kl = jnp.sum(jnp.exp(log_q) * (log_q + jnp.log(logits.shape[-1])), axis=-1)
  return per_example_mean(kl)


def gumbel_quantize(
  logits: jax.Array, codebook: jax.Array, temperature: jax.Array | float, noise: jax.Array | None = None
) -> QuantizerOutput:
  """Gumbel-softmax quantisation of logits [B, ..., K] with codebook [K, D].

  With noise (standard Gumbel, the shape of logits): y = one_hot(argmax) + soft - sg(soft), soft =
  softmax((logits + noise) / temperature), so the forward value is exactly the hard one-hot and the
  gradient that of the soft sample; without noise (evaluation): the argmax code. quantized = y @ codebook
  [B, ..., D]; no codebook or commitment terms (zeros); code_logits = logits.
  """
  if noise is None:
    indices = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    y = jax.nn.one_hot(indices, logits.shape[-1], dtype=codebook.dtype)
  else:
    soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
    indices = jnp.argmax(soft, axis=-1).astype(jnp.int32)
    hard = jax.nn.one_hot(indices, logits.shape[-1], dtype=soft.dtype)
    y = hard + soft - jax.lax.stop_gradient(soft)
  quantized = jnp.einsum("...k,kd->...d", y, codebook, precision=jax.lax.Precision.HIGHEST)
  zeros = jnp.zeros(logits.shape[:1], jnp.float32)
  return QuantizerOutput(quantized, indices, zeros, zeros, logits)


@spec.register("gumbel")
class GumbelQuantizer(nn.Module):
  """Gumbel-softmax quantiser: a linear map "logits" (code_dim -> num_codes) and a codebook parameter
  [num_codes, code_dim]. The temperature follows `gumbel_temperature(step, temperature, temperature_min,
  anneal_steps)`, `step` counting this module's training steps in the "vq_ema" collection (checkpointed with
  the rest of the state, so a resumed run continues the schedule). The noise is drawn per example of the
  global batch from device 0's "sample" key. Outputs also hold gumbel_kl [B] (`gumbel_kl_to_uniform`),
  code_logits [B, ..., K] and code_entropy [B]; metrics: usage and the temperature.
  """

  num_codes: int = 512
  code_dim: int = 64
  temperature: float = 1.0
  temperature_min: float = 0.0625
  anneal_steps: int = 10_000
  entropy_temperature: float = 0.01
  diversity: float = 1.0
  axis_name: str | None = None

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code indices int32 [B, ...] -> their codebook rows [B, ..., code_dim] (the evaluation output)."""
    return jnp.take(jnp.asarray(self.variables["params"]["codebook"], jnp.float32), indices, axis=0)

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z [B, ..., code_dim] -> quantized [B, ..., code_dim], indices [B, ...], zero losses, gumbel_kl [B]."""
    if not 0 < self.temperature_min <= self.temperature:
      raise ConfigError(
        f"gumbel: need 0 < temperature_min <= temperature, got {self.temperature_min} and {self.temperature}"
      )
    if z.shape[-1] != self.code_dim:
      raise ConfigError(f"gumbel expects {self.code_dim} channels, got {z.shape}")
    logits = nn.Dense(self.num_codes, dtype=jnp.float32, name="logits")(z)
    codebook = self.param("codebook", codebook_init, (self.num_codes, self.code_dim))
    step = self.variable(EMA_COLLECTION, "step", lambda: jnp.zeros((), jnp.int32))
    tau = gumbel_temperature(step.value, self.temperature, self.temperature_min, self.anneal_steps)
    noise = None
    if train and not self.is_initializing():
      keys = example_keys(self.make_rng("sample"), z.shape[0], self.axis_name)
      noise = jax.vmap(lambda k: jax.random.gumbel(k, logits.shape[1:], jnp.float32))(keys)
      step.value = step.value + 1
    out = gumbel_quantize(logits, codebook, tau, noise)
    counts = code_counts(out.indices, self.num_codes, self.axis_name)
    entropy = code_entropy_penalty(logits, self.entropy_temperature, self.diversity, self.axis_name)
    metrics = {**usage_metrics(counts), "temperature": tau}
    return outputs_dict(out, metrics, gumbel_kl=gumbel_kl_to_uniform(logits), code_entropy=entropy)
