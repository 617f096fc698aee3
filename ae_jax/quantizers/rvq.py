"""Residual vector quantisation (SoundStream, Zeghidour et al. 2021; EnCodec, Defossez et al. 2022): S
stages, each quantising what the previous stages left, with independent or shared, EMA or trained
codebooks, and quantizer dropout (each training example uses a random number of stages)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.quantizers import spec
from ae_jax.quantizers.blocks import (
  EMA_COLLECTION,
  QuantizerOutput,
  broadcast_from_first,
  code_counts,
  code_entropy_penalty,
  codebook_init,
  example_keys,
  gather_rows,
  global_sum,
  nearest_code_and_distances,
  straight_through,
  usage_metrics,
  vq_losses,
)
from ae_jax.quantizers.ema import EMAStats, assigned_sums, ema_update, initial_stats, reseed_if_dead
from ae_jax.quantizers.vq import CodebookOptions, outputs_dict


def residual_quantize(
  z_e: jax.Array, codebooks: jax.Array, beta: float = 0.25, active: jax.Array | None = None
) -> tuple[QuantizerOutput, jax.Array]:
  """Residual quantisation of z_e [B, ..., D] with codebooks [S, K, D], one per stage (a shared codebook
  repeated S times).

  Stage s looks up r_s = z_e - sum_{j<s} sg(q_j) (r_0 = z_e). active [B, S] (1 = the example uses stage s;
  default all) sets which stages each example's output sums; the loss terms are the means over an example's
  active stages of `vq_losses(r_s, q_s)`, so they compare each code with its stage's input before
  substitution. Returns (QuantizerOutput with quantized = straight_through(z_e, sum of active codes),
  indices [B, ..., S], code_logits [B, ..., S, K]; the stage inputs r [S, B, ..., D], gradient-free).
  """
  stages = codebooks.shape[0]
  active = jnp.ones((z_e.shape[0], stages), jnp.float32) if active is None else active.astype(jnp.float32)
  expand = lambda a: a.reshape(a.shape[0], *(1,) * (z_e.ndim - 1))
  residual, total = z_e, jnp.zeros_like(z_e)
  indices, logits, inputs, code_terms, commit_terms = [], [], [], [], []
  for s in range(stages):
    idx, d2 = nearest_code_and_distances(residual, codebooks[s])
    q = jnp.take(codebooks[s], idx, axis=0)
    codebook_loss, commitment_loss = vq_losses(residual, q, beta)
    total = total + expand(active[:, s]) * jax.lax.stop_gradient(q)
    indices.append(idx)
    logits.append(-d2)
    inputs.append(jax.lax.stop_gradient(residual))
    code_terms.append(codebook_loss)
    commit_terms.append(commitment_loss)
    residual = residual - jax.lax.stop_gradient(q)
  used = jnp.sum(active, axis=1)
  mean_active = lambda terms: jnp.sum(jnp.stack(terms, 1) * active, 1) / jnp.maximum(used, 1.0)
  out = QuantizerOutput(
    straight_through(z_e, total),
    jnp.stack(indices, -1),
    mean_active(code_terms),
    mean_active(commit_terms),
    jnp.stack(logits, -2),
  )
  return out, jnp.stack(inputs)


def dropout_stages(keys: jax.Array, stages: int) -> jax.Array:
  """Quantizer dropout: example b uses its first n_b ~ U{1, ..., S} stages, n_b drawn from keys[b]. keys
  [B] -> active [B, S] float (1 = used)."""
  n = jax.vmap(lambda k: jax.random.randint(k, (), 1, stages + 1))(keys)
  return (jnp.arange(stages)[None] < n[:, None]).astype(jnp.float32)


@spec.register("rvq", codebooks=lambda o: (int(o["num_codes"]),) * int(o["num_stages"]), staged=True)
class ResidualVectorQuantizer(CodebookOptions):
  """`num_stages` vector quantisers in series on the residuals, codebooks [S, num_codes, code_dim] (or one
  [1, K, D] with shared_codebook), trained by gradients or (ema=True, collection "vq_ema") by EMA, with the
  same data-dependent options as `VectorQuantizer` (applied stage by stage: stage s is seeded from the
  residuals the already seeded stages leave).

  quantizer_dropout: in training, each example uses a random number of stages in [1, S] (from the "sample"
  rng, drawn per example of the global batch from device 0's key, so the draw does not depend on the
  device count); evaluation uses the first `eval_stages` stages (0 = all). `indices` are [B, ..., S] for
  every stage (a dropped stage's index is still the code nearest its residual); EMA updates, losses and
  usage metrics count only the stages an example uses. Metrics: perplexity and codes_used per stage
  (`_stage{i}`) and their means over stages.
  """

  num_stages: int = 4
  shared_codebook: bool = False
  quantizer_dropout: bool = False
  eval_stages: int = 0

  def _check(self) -> None:
    self.check_codebook()
    if self.num_stages < 1:
      raise ConfigError(f"rvq: num_stages must be >= 1, got {self.num_stages}")
    if not 0 <= self.eval_stages <= self.num_stages:
      raise ConfigError(
        f"rvq: eval_stages must be in [0, num_stages={self.num_stages}], got {self.eval_stages}"
      )

  def _active(self, batch: int, train: bool, key: jax.Array | None) -> jax.Array:
    stages = self.num_stages
    if train and self.quantizer_dropout:
      return dropout_stages(example_keys(key, batch, self.axis_name), stages)
    used = self.eval_stages if (self.eval_stages and not train) else stages
    return jnp.broadcast_to((jnp.arange(stages) < used).astype(jnp.float32), (batch, stages))

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code indices int32 [B, ..., S] -> the quantized vectors [B, ..., code_dim] float32 of evaluation:
    the sum of the codes of the first `eval_stages` stages (0: all). Reads the variables only."""
    variables = self.variables
    codebooks = variables[EMA_COLLECTION]["codebook"] if self.ema else variables["params"]["codebook"]
    codebooks = jnp.asarray(codebooks, jnp.float32)
    used = int(self.eval_stages) or int(self.num_stages)
    total = jnp.zeros((*indices.shape[:-1], codebooks.shape[-1]), jnp.float32)
    for s in range(used):
      total = total + jnp.take(codebooks[min(s, codebooks.shape[0] - 1)], indices[..., s], axis=0)
    return total

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z_e [B, ..., code_dim] -> quantized [B, ..., code_dim], indices [B, ..., S], codebook_loss and
    commitment_loss [B], code_logits [B, ..., S, K], code_entropy [B], metrics."""
    self._check()
    stages, books = self.num_stages, 1 if self.shared_codebook else self.num_stages
    shape = (books, self.num_codes, self.code_dim)
    update = train and not self.is_initializing() and self.ema
    needs_key = update or (train and self.quantizer_dropout and not self.is_initializing())
    key = self.make_rng("sample") if needs_key else None
    drop_key, init_key, reseed_key = jax.random.split(key, 3) if needs_key else (None,) * 3
    active = self._active(z_e.shape[0], train and not self.is_initializing(), drop_key)
    stage_books = np.minimum(np.arange(stages), books - 1)  # the codebook of each stage
    extra = {}
    if not self.ema:
      codebooks = self.param("codebook", codebook_init, shape)
      out, inputs = residual_quantize(z_e, codebooks[stage_books], self.beta, active)
    else:
      variables = EMAStats(
        self.variable(EMA_COLLECTION, "codebook", lambda: codebook_init(self.make_rng("params"), shape)),
        self.variable(EMA_COLLECTION, "cluster_size", jnp.zeros, shape[:2]),
        self.variable(EMA_COLLECTION, "embed_sum", jnp.zeros, shape),
      )
      started = self.variable(EMA_COLLECTION, "started", lambda: jnp.zeros((), jnp.int32))
      stats = EMAStats(*(v.value for v in variables))
      devices = 1 if self.axis_name is None else jax.lax.axis_size(self.axis_name)
      rows = z_e.size // z_e.shape[-1] * devices
      share = rows * (stages // books) / self.num_codes
      if update:
        init_key, reseed_key = (broadcast_from_first(k, self.axis_name) for k in (init_key, reseed_key))
        stats = jax.lax.cond(
          started.value == 0, lambda: self._first_stats(init_key, stats, z_e, share), lambda: stats
        )
      out, inputs = residual_quantize(
        z_e, jax.lax.stop_gradient(stats.codebook)[stage_books], self.beta, active
      )
      out = out._replace(codebook_loss=jnp.zeros_like(out.codebook_loss))
    weights = [
      jnp.broadcast_to(active[:, s].reshape(-1, *(1,) * (z_e.ndim - 2)), z_e.shape[:-1])
      for s in range(stages)
    ]
    counts = [
      code_counts(out.indices[..., s], self.num_codes, self.axis_name, weights[s]) for s in range(stages)
    ]
    if update:
      stats, reseeded = self._ema_step(stats, out.indices, inputs, weights, counts, reseed_key, share)
      for var, value in zip(variables, stats, strict=True):
        var.value = value
      started.value = jnp.ones((), jnp.int32)
      if self.dead_code_threshold > 0:
        extra["codes_reseeded"] = reseeded
    metrics = {}
    for s in range(stages):
      metrics.update({f"{k}_stage{s}": v for k, v in usage_metrics(counts[s]).items()})
    for k in ("perplexity", "codes_used"):
      metrics[k] = jnp.mean(jnp.stack([metrics[f"{k}_stage{s}"] for s in range(stages)]))
    metrics["stages_used"] = global_sum(jnp.sum(active), self.axis_name) / global_sum(
      jnp.asarray(active.shape[0], jnp.float32), self.axis_name
    )
    penalty = functools.partial(
      code_entropy_penalty,
      temperature=self.entropy_temperature,
      diversity=self.diversity,
      axis_name=self.axis_name,
    )
    entropy = sum(penalty(out.code_logits[..., s, :], weights=weights[s]) for s in range(stages)) / stages
    return outputs_dict(out, {**metrics, **extra}, code_entropy=entropy)

  def _first_stats(self, key: jax.Array, stats: EMAStats, z_e: jax.Array, share: float) -> EMAStats:
    """Seeds stage after stage: each codebook from the global batch's residuals of the stages before it."""
    books = stats.codebook.shape[0]
    residual = jax.lax.stop_gradient(z_e).reshape(-1, z_e.shape[-1])
    seeded = []
    for b, k in enumerate(jax.random.split(key, books)):
      data = gather_rows(residual, self.axis_name) if self.codebook_init != "uniform" else None
      book = initial_stats(k, stats.codebook[b], data, self.codebook_init, share)
      seeded.append(book)
      if b < books - 1:
        residual = residual - jnp.take(
          book.codebook, nearest_code_and_distances(residual, book.codebook)[0], 0
        )
    return EMAStats(*(jnp.stack(parts) for parts in zip(*seeded, strict=True)))

  def _ema_step(
    self,
    stats: EMAStats,
    indices: jax.Array,
    inputs: jax.Array,
    weights: list[jax.Array],
    counts: list[jax.Array],
    key: jax.Array,
    share: float,
  ) -> tuple[EMAStats, jax.Array]:
    """EMA update of each codebook [books, K, D] from the (weighted) stage inputs r [S, B, ..., D] its
    stages were given (indices [B, ..., S], psum'd counts [K] per stage), then re-seeding from those inputs.
    Returns (stats, the number of codes re-seeded)."""
    books, stages = stats.codebook.shape[0], indices.shape[-1]
    new, reseeded = [], jnp.zeros((), jnp.float32)
    for b, k in enumerate(jax.random.split(key, books)):
      mine = [s for s in range(stages) if min(s, books - 1) == b]
      book_counts = sum(counts[s] for s in mine)
      sums = sum(assigned_sums(inputs[s], indices[..., s], self.num_codes, weights[s]) for s in mine)
      book = ema_update(
        EMAStats(*(x[b] for x in stats)),
        book_counts,
        global_sum(sums, self.axis_name),
        self.decay,
        self.epsilon,
      )
      if self.dead_code_threshold > 0:
        candidates = jnp.concatenate([gather_rows(inputs[s], self.axis_name) for s in mine])
        book, dead = reseed_if_dead(k, book, candidates, self.dead_code_threshold, share)
        reseeded = reseeded + jnp.sum(dead).astype(jnp.float32)
      new.append(book)
    return EMAStats(*(jnp.stack(parts) for parts in zip(*new, strict=True))), reseeded
