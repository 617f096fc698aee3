"""`VectorQuantizer`: nearest-code quantisation with a trained or EMA codebook, l2-normalised (cosine) or
low-dimensional (factorised) codes, and the straight-through or rotation-trick gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.quantizers import spec
from ae_jax.quantizers.blocks import (
  EMA_COLLECTION,
  GRADIENTS,
  QuantizerOutput,
  broadcast_from_first,
  code_counts,
  code_entropy_penalty,
  codebook_init,
  gather_rows,
  global_sum,
  l2_normalize,
  usage_metrics,
  vector_quantize,
)
from ae_jax.quantizers.ema import (
  CODEBOOK_INITS,
  EMAStats,
  assigned_sums,
  ema_update,
  initial_stats,
  reseed_if_dead,
)


def outputs_dict(out: QuantizerOutput, metrics: dict, **extra: jax.Array) -> dict[str, jax.Array]:
  """A module's one output dict: the fields of `out` that are set, `extra` per-example terms, metrics."""
  return {**{k: v for k, v in out._asdict().items() if v is not None}, **extra, "metrics": metrics}


def check_codebook_options(ema: bool, codebook_init: str, dead_code_threshold: float) -> None:
  if codebook_init not in CODEBOOK_INITS:
    raise ConfigError(f"unknown codebook_init '{codebook_init}'; choose one of {CODEBOOK_INITS}")
  if not ema and (codebook_init != "uniform" or dead_code_threshold > 0):
    raise ConfigError(
      "codebook_init from data and dead-code re-seeding need ema=True (a trained codebook is a parameter, "
      "which the forward pass cannot overwrite); set ema=True or codebook_init='uniform' and "
      "dead_code_threshold=0"
    )


class CodebookOptions(nn.Module):
  """The options of a learned codebook (`VectorQuantizer`, and each stage of `ResidualVectorQuantizer`):
  num_codes codes of code_dim, the commitment weight beta, EMA training (decay, epsilon), seeding
  (codebook_init), dead-code re-seeding (dead_code_threshold), the code-entropy penalty's temperature and
  diversity, and the device axis of the EMA statistics."""

  num_codes: int = 512
  code_dim: int = 64
  beta: float = 0.25
  ema: bool = True
  decay: float = 0.99
  epsilon: float = 1e-5
  codebook_init: str = "uniform"
  dead_code_threshold: float = 0.0
  entropy_temperature: float = 0.01
  diversity: float = 1.0
  axis_name: str | None = None

  def check_codebook(self) -> None:
    """Raises ConfigError for an unknown seeding or data-dependent options without EMA."""
    check_codebook_options(self.ema, self.codebook_init, self.dead_code_threshold)


@spec.register("vq")
class VectorQuantizer(CodebookOptions):
  """Nearest-code quantiser with a codebook [num_codes, D], trained by gradients or by EMA.

  ema=True keeps the codebook in the "vq_ema" collection (no gradient reaches it; `codebook_loss` is zero).
  At the first training step its statistics start as if each code had been used by an equal share of the
  global batch, and `codebook_init` may replace it by encoder outputs of that batch: "random_data" rows or
  "kmeans++" seeding ("uniform" keeps the random initialisation, as the reference does). After every
  update, codes whose EMA count (assignments per step) is below `dead_code_threshold` are re-seeded from
  this batch's encoder outputs (0 disables). Data-dependent options need ema=True.

  codebook_dim > 0: codes live in a codebook_dim space, reached by a linear "project_in" (code_dim ->
  codebook_dim) before the lookup and left by "project_out" after it (ViT-VQGAN's factorised codes).
  cosine: inputs and codes are l2-normalised before distances (EMA statistics then average unit vectors).
  gradient: "straight_through" or "rotation" (`rotation_trick`). The loss terms compare the codes with the
  vector looked up (projected, normalised), before substitution. Outputs also hold code_logits [B, ..., K]
  (-squared distances) and code_entropy [B] (`code_entropy_penalty` with entropy_temperature, diversity).
  """

  gradient: str = "straight_through"
  cosine: bool = False
  codebook_dim: int = 0

  def _check(self) -> None:
    self.check_codebook()
    if self.gradient not in GRADIENTS:
      raise ConfigError(f"unknown gradient estimator '{self.gradient}'; choose one of {GRADIENTS}")
    if self.codebook_dim < 0:
      raise ConfigError(f"codebook_dim must be >= 0 (0 = codes of code_dim), got {self.codebook_dim}")

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code indices int32 [B, ...] -> the quantized vectors [B, ..., code_dim] float32 that `__call__`
    outputs (forward value, evaluation) for the inputs those indices came from. Reads the variables only."""
    variables = self.variables
    params = variables.get("params", {})
    codebook = variables[EMA_COLLECTION]["codebook"] if self.ema else params["codebook"]
    codebook = jnp.asarray(codebook, jnp.float32)
    z = jnp.take(l2_normalize(codebook) if self.cosine else codebook, indices, axis=0)
    if self.codebook_dim:
      project = params["project_out"]
      z = jnp.dot(z, project["kernel"]) + project["bias"]
    return z

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z_e [B, ..., code_dim] -> quantized [B, ..., code_dim], indices [B, ...], codebook_loss and
    commitment_loss [B], code_logits [B, ..., K], code_entropy [B], metrics (usage over the global batch)."""
    self._check()
    z = z_e
    if self.codebook_dim:
      z = nn.Dense(self.codebook_dim, dtype=jnp.float32, name="project_in")(z_e)
    z = l2_normalize(z) if self.cosine else z
    dim = z.shape[-1]
    shape = (self.num_codes, dim)
    lookup = l2_normalize if self.cosine else (lambda c: c)
    extra = {}
    if not self.ema:
      out = vector_quantize(z, lookup(self.param("codebook", codebook_init, shape)), self.beta, self.gradient)
      counts = code_counts(out.indices, self.num_codes, self.axis_name)
    else:
      out, counts, extra = self._ema_quantize(z, shape, lookup, train)
    quantized = out.quantized
    if self.codebook_dim:
      quantized = nn.Dense(self.code_dim, dtype=jnp.float32, name="project_out")(quantized)
    entropy = code_entropy_penalty(out.code_logits, self.entropy_temperature, self.diversity, self.axis_name)
    return outputs_dict(
      out._replace(quantized=quantized), {**usage_metrics(counts), **extra}, code_entropy=entropy
    )

  def _ema_quantize(self, z: jax.Array, shape: tuple[int, int], lookup, train: bool):
    variables = EMAStats(
      self.variable(EMA_COLLECTION, "codebook", lambda: codebook_init(self.make_rng("params"), shape)),
      self.variable(EMA_COLLECTION, "cluster_size", jnp.zeros, (self.num_codes,)),
      self.variable(EMA_COLLECTION, "embed_sum", jnp.zeros, shape),
    )
    started = self.variable(EMA_COLLECTION, "started", lambda: jnp.zeros((), jnp.int32))
    stats = EMAStats(*(v.value for v in variables))
    update = train and not self.is_initializing()
    extra = {}
    if update:
      flat = jax.lax.stop_gradient(z).reshape(-1, shape[1])
      devices = 1 if self.axis_name is None else jax.lax.axis_size(self.axis_name)
      share = flat.shape[0] * devices / self.num_codes  # vectors per code in one global batch
      from_data = self.codebook_init != "uniform" or self.dead_code_threshold > 0
      # every device sees the global batch's encoder outputs in global order, and device 0's key
      gathered = gather_rows(flat, self.axis_name) if from_data else None
      init_key, reseed_key = jax.random.split(broadcast_from_first(self.make_rng("sample"), self.axis_name))
      stats = jax.lax.cond(
        started.value == 0,
        lambda: initial_stats(init_key, stats.codebook, gathered, self.codebook_init, share),
        lambda: stats,
      )
    out = vector_quantize(z, jax.lax.stop_gradient(lookup(stats.codebook)), self.beta, self.gradient)
    counts = code_counts(out.indices, self.num_codes, self.axis_name)
    if update:
      sums = global_sum(assigned_sums(flat, out.indices, self.num_codes), self.axis_name)
      stats = ema_update(stats, counts, sums, self.decay, self.epsilon)
      if self.dead_code_threshold > 0:
        stats, dead = reseed_if_dead(reseed_key, stats, gathered, self.dead_code_threshold, share)
        extra["codes_reseeded"] = jnp.sum(dead).astype(jnp.float32)
      for var, value in zip(variables, stats, strict=True):
        var.value = value
      started.value = jnp.ones((), jnp.int32)
    return out._replace(codebook_loss=jnp.zeros_like(out.codebook_loss)), counts, extra
