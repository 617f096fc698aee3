"""The `image_quality` evaluator: PSNR and SSIM of the reconstructions of a split, in pure JAX over every
device (`ae_jax.metrics.image_metrics`), on images mapped to [0, 1].

Metrics: `psnr` (dB, the mean over examples of each example's PSNR; an exact reconstruction, whose PSNR
is infinite, is left out of that mean and counted in `exact`), `psnr_of_mean_mse` (the PSNR of the split's
mean MSE) and `ssim` (Gaussian-window SSIM, the mean over examples).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.evaluators import batches
from ae_jax.metrics import image_metrics


def quality_sums(state, batch, *, model, to_unit):
  """This device's sums over its valid examples of finite PSNR, SSIM, MSE (in [0, 1] units) and counts."""
  recon = batches.model_outputs(model, state, batch)["recon"].astype(jnp.float32)
  x, y = jnp.clip(to_unit(batch["x"].astype(jnp.float32)), 0.0, 1.0), jnp.clip(to_unit(recon), 0.0, 1.0)
  valid = batch["valid"].astype(jnp.float32)
  psnr = image_metrics.psnr(x, y)
  finite = jnp.isfinite(psnr).astype(jnp.float32) * valid
  return {
    "psnr": jnp.sum(jnp.where(finite > 0, psnr, 0.0)),
    "finite": jnp.sum(finite),
    "ssim": jnp.sum(image_metrics.ssim(x, y) * valid),
    "mse": jnp.sum(image_metrics.mse(x, y) * valid),
    "count": jnp.sum(valid),
  }


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  info = ctx.dataset.info
  sums_fn = functools.partial(quality_sums, model=ctx.model, to_unit=info.to_unit)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    s = batches.section_sums(sums_fn, rstate, ctx, sec)
    count, mse = float(s["count"]), float(s["mse"]) / float(s["count"])
    return evaluators.Result(
      {
        "psnr": float(s["psnr"]) / max(float(s["finite"]), 1.0),
        "psnr_of_mean_mse": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"),
        "ssim": float(s["ssim"]) / count,
        "exact": count - float(s["finite"]),
      }
    )

  return evaluate


def _images(spec, data) -> str | None:
  if not spec.bits_per_value or spec.name == "spoken_digit":
    return "its examples are not images with a known pixel range"
  h, w = spec.example(data).shape[:2]
  size = image_metrics.ssim_window_size()
  if min(h, w) < size:
    return f"SSIM's Gaussian window needs images of at least {size}x{size} pixels; these are {h}x{w}"
  return None


evaluators.register(
  evaluators.EvaluatorSpec(
    name="image_quality",
    build=_build,
    options={"max_examples": ml_collections.config_dict.placeholder(int)},
    needs=_images,
    description="PSNR and SSIM of the reconstructions of a split, images in [0, 1]",
  )
)
