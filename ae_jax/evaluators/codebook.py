"""The `codebook` evaluator: code usage over a whole split (quantized models), not per training batch.

The histogram of the codes chosen for every latent position of every example of the split is summed
exactly over devices and processes; from it: `perplexity` (exp of the entropy of the code frequencies:
K when every code is used equally, 1 for a single code), `codes_used` (the fraction of the K codes chosen
at least once) and `dead_codes` (the number never chosen). A model with several codebooks per position
(residual stages, `codebooks()` of length S, indices [B, ..., S]) gets one set per stage (`_stage{i}`).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.evaluators import batches


def code_histograms(state, batch, *, model, sizes: tuple[int, ...]):
  """This device's code counts per codebook over its valid examples: {"stage_i": [K_i]}."""
  indices = batches.model_outputs(model, state, batch)["indices"]
  if len(sizes) == 1:
    indices = indices[..., None]
  valid = batch["valid"].astype(jnp.float32)
  weight = jnp.broadcast_to(valid.reshape(-1, *(1,) * (indices.ndim - 2)), indices.shape[:-1])
  out = {}
  for i, k in enumerate(sizes):
    out[f"stage_{i}"] = jnp.zeros((k,), jnp.float32).at[indices[..., i].reshape(-1)].add(weight.reshape(-1))
  return out


def usage(counts: np.ndarray) -> dict[str, float]:
  """perplexity, codes_used (fraction) and dead_codes of a code histogram [K]."""
  counts = np.asarray(counts, np.float64)
  p = counts / max(counts.sum(), 1.0)
  entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
  used = int(np.sum(counts > 0))
  return {
    "perplexity": math.exp(entropy),
    "codes_used": used / len(counts),
    "dead_codes": float(len(counts) - used),
  }


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  sizes = tuple(ctx.model.codebooks())
  sums_fn = functools.partial(code_histograms, model=ctx.model, sizes=sizes)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    hist = batches.section_sums(sums_fn, rstate, ctx, sec)
    if len(sizes) == 1:
      return evaluators.Result(usage(hist["stage_0"]))
    metrics = {}
    for i in range(len(sizes)):
      metrics.update({f"{k}_stage{i}": v for k, v in usage(hist[f"stage_{i}"]).items()})
    return evaluators.Result(metrics)

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="codebook",
    build=_build,
    options={"max_examples": ml_collections.config_dict.placeholder(int)},
    abilities=frozenset({"quantized"}),
    description="code usage over a whole split: perplexity, fraction of codes used, dead codes",
  )
)
