"""The `latent_activity` evaluator: how many latent dimensions a VAE uses (active units, Burda et al. 2015).

A dimension u is active when the posterior mean E_q(z|x)[z_u] varies across the data: its variance over
the split, Cov_x(E_q[z_u]), exceeds `threshold` (0.01, as Burda et al.). A collapsed dimension has the
prior as posterior for every x, so its mean is constant and its variance near 0. The mean and the second
moment of the posterior means are summed exactly over the whole split (every device and process): in
float32 per evaluation batch on the devices, then in float64 on the host.

Metrics: `active_dims` (the count), `latent_dims` (D), and `mean_variance` (of the posterior means,
averaged over dimensions).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.evaluators import batches


def posterior_moments(state, batch, *, model) -> dict[str, jax.Array]:
  """This device's sums over its valid examples of m and m^2, m = E_q(z|x)[z] [B, D], and their count."""
  mean, _ = model.apply({"params": state.params, **state.model_state}, batch["x"], method="encode")
  m = mean.reshape(mean.shape[0], -1).astype(jnp.float32)
  valid = batch["valid"].astype(jnp.float32)[:, None]
  return {"sum": jnp.sum(valid * m, 0), "sum_sq": jnp.sum(valid * m * m, 0), "count": jnp.sum(valid)}


def activity(sums: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
  """active_dims, latent_dims and mean_variance from `posterior_moments` summed over a split."""
  n = max(float(sums["count"]), 1.0)
  mean = np.asarray(sums["sum"], np.float64) / n
  variance = np.maximum(np.asarray(sums["sum_sq"], np.float64) / n - mean**2, 0.0)
  return {
    "active_dims": float(np.sum(variance > threshold)),
    "latent_dims": float(variance.size),
    "mean_variance": float(variance.mean()),
  }


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  sums_fn = functools.partial(posterior_moments, model=ctx.model)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    return evaluators.Result(activity(batches.section_sums(sums_fn, rstate, ctx, sec), float(sec.threshold)))

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="latent_activity",
    build=_build,
    options={"threshold": 0.01, "max_examples": ml_collections.config_dict.placeholder(int)},
    abilities=frozenset({"likelihood"}),
    description="active latent dimensions: variance over the split of the posterior mean above a threshold",
  )
)
