"""Picture evaluators: a reconstruction grid, samples from the prior, and a scatter of the codes.

* `reconstructions`: the first `num` examples of the split above their reconstructions
  (WORKDIR/<name>.png; datasets that can be drawn).
* `samples`: E[x|z] for `num` draws z ~ N(0, I) (models with the "generative" ability).
* `latents`: the codes of the first `num` examples, or their first two principal components, coloured by
  label (datasets with class names).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from ae_jax import evaluators
from ae_jax.core import parallel, visualize
from ae_jax.data import DatasetInfo
from ae_jax.data.dataset import stack_examples
from ae_jax.training.outputs import reconstruct
from ae_jax.training.train import TrainState


def save_reconstruction_grid(
  path: str, model: nn.Module, state: TrainState, source: Sequence, info: DatasetInfo, num: int = 16
) -> str:
  """PNG of the first `num` examples of `source` above their reconstructions; returns the path."""
  x = stack_examples(source, info, range(min(num, len(source))))["x"]
  recon = reconstruct(model, state, x)["recon"]
  return visualize.save_reconstructions(path, info.to_image(x), info.to_image(recon))


def save_prior_samples(
  path: str, model: nn.Module, state: TrainState, info: DatasetInfo, num: int = 64
) -> str:
  """PNG grid of E[x|z] for z ~ N(0, I) drawn from the state's key (models with the "generative" ability)."""
  variables = {"params": state.params, **state.model_state}
  z = jax.random.normal(jax.random.fold_in(state.rng, 0x5A), (num, model.latent_dim))
  generate = parallel.with_named_axis(lambda v, z: model.apply(v, z, method="generate"))
  images = jax.device_get(jax.jit(generate)(variables, z))
  return visualize.save_png(path, visualize.image_grid(info.to_image(images), ncols=8))


def latent_points(codes: np.ndarray) -> tuple[np.ndarray, str]:
  """2-D view of codes [N, D]: the codes themselves when D == 2, else their first two principal components."""
  codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
  if codes.shape[1] == 2:
    return codes, "latent code"
  centred = codes - codes.mean(0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  explained = s[:2] ** 2 / np.sum(s**2)
  return centred @ vt[:2].T, f"first two principal components of the code ({explained.sum():.0%} of variance)"


def save_latent_scatter(
  path: str, model: nn.Module, state: TrainState, source: Sequence, info: DatasetInfo, num: int = 2000
) -> str:
  """Scatter PNG of the codes of the first `num` examples of `source`, coloured by label."""
  batch = stack_examples(source, info, range(min(num, len(source))))
  codes = reconstruct(model, state, batch["x"], label="latent codes")["code"]
  points, title = latent_points(codes)
  return visualize.save_scatter(path, points, batch["label"], info.class_names, title)


def _picture(save, needs_source: bool = True):
  """A builder whose evaluation writes WORKDIR/<name>.png (`Context.output_path`):
  save(path, model, state, [source,] info, num)."""

  def build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
    def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
      path = ctx.output_path(name)
      if path is None:
        return evaluators.Result()
      state = parallel.unreplicate(rstate)
      source = (ctx.dataset.split(sec.split),) if needs_source else ()
      return evaluators.Result(files=[save(path, ctx.model, state, *source, ctx.dataset.info, sec.num)])

    return evaluate

  return build


def _drawable(spec, data) -> str | None:
  return None if spec.drawable else "its examples cannot be drawn as images"


def _labelled(spec, data) -> str | None:
  return None if spec.class_names or spec.name in ("image_folder", "tfds") else "it has no class labels"


for type_, save, options, extra in (
  ("reconstructions", save_reconstruction_grid, {"num": 16}, dict(needs=_drawable)),
  ("samples", save_prior_samples, {"num": 64}, dict(needs=_drawable, abilities=frozenset({"generative"}))),
  ("latents", save_latent_scatter, {"num": 2000}, dict(needs=_labelled)),
):
  evaluators.register(
    evaluators.EvaluatorSpec(
      name=type_,
      build=_picture(save, needs_source=type_ != "samples"),
      options=options,
      uses_split=type_ != "samples",
      description=__doc__.split(f"`{type_}`: ")[1].split("\n*")[0].strip(),
      **extra,
    )
  )
