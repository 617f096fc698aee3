"""The `sample_quality` evaluator: draws `num` images from the run being trained or evaluated (a stage-two
prior through its frozen stage one; an autoencoder or VAE through a density over its codes:
`ae_jax.generation.samplers`) and scores them against as many images of `split` in the feature space of a
network
ae-jax trains on the dataset once (`ae_jax.metrics.feature_network`, `ae_jax.metrics.sample_quality`).

Metrics: frechet_feature_distance, precision, recall, floor_frechet_feature_distance (as many training
images against the same split images: what a perfect generator scores), class_accuracy (class-conditional
samples: the feature network's accuracy on the classes they were drawn for), num_samples.

Options: num, seed; a prior run's temperature, top_k, top_p, steps, choice_temperature, label (a class, or
"all" for the classes in turn), guidance (classifier-free guidance W; 1: none) and guidance_schedule
("constant" or "linear"); an autoencoder's or VAE's
prior ("mixture" over its training codes, with components and covariance; "normal": a VAE's N(0, I));
feature_steps and feature_cache (the feature network's training steps, default the dataset's shipped network
(`feature_network.settings_for`), and its cache folder, default $XDG_CACHE_HOME/ae_jax/feature_networks,
else ~/.cache/ae_jax/feature_networks).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.core import parallel
from ae_jax.generation import samplers, stage_one


def run_of(ctx: evaluators.Context, state, step: int, workdir: str) -> stage_one.Run:
  """The state being evaluated as a `stage_one.Run` in `workdir` (where a mixture over its codes is
  cached)."""
  variables = {"params": state.params, **state.model_state}
  example = ctx.dataset.info.example
  return stage_one.Run(
    workdir,
    step,
    False,
    ctx.config,
    ctx.model,
    variables,
    stage_one.fingerprint(step, variables),
    tuple(example.shape),
    str(example.dtype),
  )


def sample_drawer(
  name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context, prefix: str
) -> Callable:
  """`draw(rstate, step) -> samplers.Drawn`: `sec.num` images of the evaluated state, drawn as the section's
  DRAW_OPTIONS say (a prior run's sampling options, or a density over an autoencoder's codes, checked here,
  before training). A run that writes no files caches its mixtures in one temporary folder (`prefix`),
  made when first needed."""
  from ae_jax.generation import generate

  prior = samplers.is_prior_run(ctx.config)
  if not prior:
    samplers.check_latent_prior(ctx.config, sec.prior, f"config.evals.{name}.prior", ctx.workdir or "this")
  options = generate.SampleOptions(
    sec.temperature,
    sec.top_k,
    sec.top_p,
    sec.steps,
    sec.choice_temperature,
    sec.label,
    sec.guidance,
    sec.guidance_schedule,
  )
  scratch: list[str] = []

  def workdir() -> str:
    if ctx.workdir is not None:
      return ctx.workdir
    if not scratch:
      scratch.append(tempfile.mkdtemp(prefix=prefix))
    return scratch[0]

  def draw(rstate, step: int) -> samplers.Drawn:
    return samplers.draw(
      run_of(ctx, parallel.unreplicate(rstate), step, workdir()),
      int(sec.num),
      seed=int(sec.seed),
      options=options if prior else None,
      latent_prior=None if prior else sec.prior,
      components=int(sec.components),
      covariance=sec.covariance,
    )

  return draw


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  draw = sample_drawer(name, sec, ctx, "ae_jax_samples_")

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    drawn = draw(rstate, step)
    quality = samplers.score(
      drawn, feature_steps=sec.feature_steps, feature_cache=sec.feature_cache, reference_split=sec.split
    )
    metrics = {k: float(v) for k, v in quality.items() if isinstance(v, (float, int, np.floating))}
    lines = [f"{name}: {samplers.describe(quality)} ({int(quality['num_samples']):,} samples, {drawn.what})"]
    return evaluators.Result(metrics, {"feature_network": quality["feature_network"]}, lines=lines)

  return evaluate


# How an evaluator of generated images draws them (a prior run's sampling options, or an autoencoder's
# density over its codes): its options and defaults.
DRAW_OPTIONS = {
  "num": 10_000,
  "seed": 0,
  "temperature": 1.0,
  "top_k": 0,
  "top_p": 1.0,
  "steps": 8,
  "choice_temperature": 4.5,
  "label": ml_collections.config_dict.placeholder(str),
  "guidance": 1.0,
  "guidance_schedule": "constant",
  "prior": "mixture",
  "components": 10,
  "covariance": "full",
}

evaluators.register(
  evaluators.EvaluatorSpec(
    name="sample_quality",
    build=_build,
    options={
      **DRAW_OPTIONS,
      "feature_steps": ml_collections.config_dict.placeholder(int),
      "feature_cache": ml_collections.config_dict.placeholder(str),
    },
    needs=lambda spec, data: samplers.quality_unavailable(data),
    description="Fréchet feature distance, precision/recall and the floor of samples the run generates",
  )
)
