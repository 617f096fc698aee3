"""Importance-sampled log-likelihood estimates for latent-variable models (VAEs), pmapped over devices.

For a model with the "likelihood" ability (`encode` and `importance_terms(x, eps)`, see `ae_jax.models.vae`),
with q(z|x) as proposal:

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)

which is also the IWAE bound with K samples (Burda et al. 2015): it increases with K towards log p(x).
Samples are drawn in chunks of `chunk_size` (K = 1000 does not fit in memory at once for a whole batch).

The `likelihood` evaluator's cost is examples x K decoder passes (10,000 x 1,000 for Fashion-MNIST's test
split: minutes on a CPU), which a short trial run should not pay. Its options say when the full estimate
is made: a state trained `full_from_step` steps or more (a config sets it to its own schedule,
`full_from_step=config.total_steps`, so `--config.total_steps=150` is a short run; 0: always) gets
`num_samples` samples for each of the split's examples (or `max_examples` of them); an earlier state
gets a quick estimate, `quick_num_samples` samples for each of the first `quick_max_examples` examples.
Its result line says which ("full estimate" / "quick estimate ..."), and its results hold
"estimate" ("full" / "quick"), "num_examples" and "num_samples". A long estimate logs its progress.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from ae_jax import evaluators, losses
from ae_jax.core.errors import ConfigError
from ae_jax.data import DatasetInfo
from ae_jax.evaluators import batches
from ae_jax.training.train import TrainState

_LIKELIHOOD_STREAM = 0x4C494B  # folded into the state's key: likelihood draws never reuse train/eval keys


def log_importance_weights(
  model: nn.Module, variables: Any, x: jax.Array, rng: jax.Array, num_samples: int, chunk_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Log importance weights for `num_samples` draws z_k ~ q(z|x).

  x [B, ...] -> (log w [K, B], log p(x|z) [K, B], KL [B]), with log w = log p(x|z) + log p(z) - log q(z|x)
  and the closed-form KL(q(z|x) || p(z)), so the ELBO (mean_k log p(x|z_k) - KL) uses the same draws.
  """
  if num_samples % chunk_size:
    raise ValueError(f"num_samples={num_samples} must be a multiple of chunk_size={chunk_size}")
  mean, logvar = model.apply(variables, x, method="encode")

  def chunk(_, i):
    eps = jax.random.normal(jax.random.fold_in(rng, i), (chunk_size, *mean.shape), mean.dtype)
    t = model.apply(variables, x, eps, method="importance_terms")
    return None, (t["log_px_z"] + t["log_pz"] - t["log_qz_x"], t["log_px_z"])

  _, (log_w, log_px_z) = jax.lax.scan(chunk, None, jnp.arange(num_samples // chunk_size))
  kl = losses.gaussian_kl(mean, logvar)
  return log_w.reshape(num_samples, -1), log_px_z.reshape(num_samples, -1), kl


def importance_estimate(log_w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log mean_k w_k, its standard error) per example from log weights [K, B], computed stably.

  The standard error is the delta-method one: std(w) / (sqrt(K) mean(w)), in nats.
  """
  k = log_w.shape[0]
  estimate = jax.nn.logsumexp(log_w, axis=0) - math.log(k)
  w = jnp.exp(log_w - jnp.max(log_w, axis=0))
  stderr = jnp.std(w, axis=0, ddof=1) / (math.sqrt(k) * jnp.mean(w, axis=0))
  return estimate, stderr


def likelihood_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model: nn.Module,
  num_samples: int,
  chunk_size: int,
) -> dict[str, jax.Array]:
  """This device's sums over its valid examples of the IS estimate of log p(x), its squared standard
  error, and the ELBO."""
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, _LIKELIHOOD_STREAM), batch["index"][0])
  variables = {"params": state.params, **state.model_state}
  log_w, log_px_z, kl = log_importance_weights(model, variables, batch["x"], rng, num_samples, chunk_size)
  log_px, stderr = importance_estimate(log_w)
  elbo = jnp.mean(log_px_z, axis=0) - kl
  valid = batch["valid"]
  sums = {
    "log_px": jnp.sum(log_px * valid),
    "log_px_var": jnp.sum(jnp.square(stderr) * valid),
    "elbo": jnp.sum(elbo * valid),
    "count": jnp.sum(valid),
  }
  return sums


def evaluate_likelihood(
  model: nn.Module,
  rstate: TrainState,
  source: Sequence,
  info: DatasetInfo,
  *,
  num_samples: int = 1000,
  chunk_size: int = 100,
  batch_size: int = 100,
  max_examples: int | None = None,
  label: str = "likelihood",
) -> dict[str, float]:
  """Importance-sampled negative log-likelihood of `source` under a trained VAE, over every device.

  Returns nats per example ("nll", with "nll_stderr", the standard error of the dataset mean from the
  sampling), bits per dimension ("bits_per_dim" = nll / (dims * ln 2), meaningful for binary data), the
  negative ELBO ("neg_elbo", closed-form KL) and the number of examples. `rstate` is replicated; `label`
  names it in progress lines.
  """
  step = _likelihood_sums(model, num_samples, chunk_size)
  sums = batches.split_sums(
    step, rstate, source, info, batch_size=batch_size, max_examples=max_examples, label=label
  )
  n = float(sums["count"])
  dims = int(np.prod(info.shape))
  nll = -float(sums["log_px"]) / n
  return {
    "nll": nll,
    "nll_stderr": math.sqrt(float(sums["log_px_var"])) / n,
    "bits_per_dim": nll / (dims * math.log(2)),
    "neg_elbo": -float(sums["elbo"]) / n,
    "num_samples": float(num_samples),
    "num_examples": n,
  }


@functools.lru_cache(maxsize=8)
def _likelihood_sums(model: nn.Module, num_samples: int, chunk_size: int):
  return functools.partial(likelihood_step, model=model, num_samples=num_samples, chunk_size=chunk_size)


def _chunk_for(name: str, key: str, num_samples: int, chunk_size: int) -> int:
  """The chunk K is drawn in: chunk_size, or K itself when smaller; K must be a multiple of it."""
  chunk = min(chunk_size, num_samples)
  if num_samples < 1 or num_samples % chunk:
    raise ConfigError(
      f"config.evals.{name}.{key}={num_samples} must be a positive multiple of chunk_size={chunk_size}"
    )
  return chunk


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  if sec.num_samples % sec.chunk_size:
    raise ConfigError(
      f"config.evals.{name}.num_samples={sec.num_samples} must be a multiple of chunk_size={sec.chunk_size}"
    )
  quick_chunk = _chunk_for(name, "quick_num_samples", sec.quick_num_samples, sec.chunk_size)
  if sec.quick_max_examples < 1:
    raise ConfigError(f"config.evals.{name}.quick_max_examples must be >= 1, got {sec.quick_max_examples}")
  source = ctx.dataset.split(sec.split)
  full_examples = len(source) if sec.max_examples is None else min(len(source), sec.max_examples)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    quick = step < sec.full_from_step
    if quick:
      k, chunk, max_examples = sec.quick_num_samples, quick_chunk, min(sec.quick_max_examples, full_examples)
    else:
      k, chunk, max_examples = sec.num_samples, sec.chunk_size, sec.max_examples
    est = evaluate_likelihood(
      ctx.model,
      rstate,
      source,
      ctx.dataset.info,
      num_samples=k,
      chunk_size=chunk,
      batch_size=sec.batch_size,
      max_examples=max_examples,
      label=f"likelihood on {sec.split} (K = {k:,})",
    )
    which = (
      f"quick estimate: the state has {step:,} of the {sec.full_from_step:,} steps of the full one "
      f"({full_examples:,} examples, K = {sec.num_samples:,})"
      if quick
      else "full estimate"
    )
    line = (
      f"{name}: NLL {est['nll']:.3f} +- {est['nll_stderr']:.3f} nats ({est['bits_per_dim']:.4f} bits/dim), "
      f"negative ELBO {est['neg_elbo']:.3f} nats, {int(est['num_examples']):,} examples, K = {k:,}; {which}"
    )
    return evaluators.Result(est, {"estimate": "quick" if quick else "full"}, lines=[line])

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="likelihood",
    build=_build,
    options={
      "num_samples": 1000,
      "chunk_size": 100,
      "batch_size": 100,
      "max_examples": ml_collections.config_dict.placeholder(int),
      "full_from_step": 0,  # states trained fewer steps get the quick estimate (0: always the full one)
      "quick_max_examples": 1000,
      "quick_num_samples": 100,
    },
    abilities=frozenset({"likelihood"}),
    description="importance-sampled log-likelihood (nats, bits/dim) and ELBO of a split",
  )
)
