"""The `prior_likelihood` evaluator: how well a stage-two prior (a model with the "code_prior" ability)
models a split's codes, summed exactly over every example, device and process.

What a prior's `eval_nats` measures is its `score` ("code_prior" ability, `ae_jax.models.interface`):

* "nll" (`ar_prior`, a likelihood): "nll" (nats per image, -log p(x) of the L codes), "bits_per_code" (nll /
  (L ln 2)), "bits_per_image" (nll / ln 2), and "uniform_bits_per_code" = log2 K, the uniform prior's, to
  compare with (a prior that learnt nothing scores about that; fewer bits are better).
* "masked_xent" (`maskgit_prior`, NOT a likelihood): "masked_xent_bits_per_code", the cross-entropy in
  bits of the masked positions at the fixed mask ratio `mask_ratio` (round(ratio L) positions, at least
  1, chosen per example from `mask_seed` and the example's index, so every evaluation masks the same
  positions), and "uniform_bits_per_code". It measures denoising of a partly masked sequence, not
  log p(x), so it is not comparable with an AR prior's bits per code.

Options: mask_ratio (MaskGIT, in (0, 1]), mask_seed, max_examples.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from ae_jax import evaluators, models
from ae_jax.core.errors import ConfigError
from ae_jax.evaluators import batches


def prior_sums(state, batch, *, model, settings: dict) -> dict[str, jax.Array]:
  """This device's sums over its valid examples: "nats" (the prior's `eval_nats`: -log p(x) of an exact
  prior, MaskGIT's masked cross-entropy per masked code) and "count"."""
  variables = {"params": state.params, **state.model_state}
  valid = batch["valid"].astype(jnp.float32)
  labels = models.model_inputs(model, batch).get("labels")  # a class-conditional prior's labels
  nats = model.apply(variables, batch["x"], batch["index"], labels, settings, method="eval_nats")
  return {"nats": jnp.sum(nats * valid), "count": jnp.sum(valid)}


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  model = ctx.model
  if "code_prior" not in models.abilities(model):
    priors = models.with_ability("code_prior")
    raise ConfigError(
      f"config.evals.{name} (type 'prior_likelihood') needs a prior over codes ({', '.join(priors)}), not "
      f"'{ctx.config.model.name}'"
    )
  vocab = getattr(ctx.dataset.info, "vocab_size", 0)
  if vocab and vocab != model.vocab_size:
    raise ConfigError(
      f"config.model.vocab_size={model.vocab_size}, but the stage one's codes have {vocab} tokens; set "
      f"--config.model.vocab_size={vocab} (the prior configs read it from the stage one)"
    )
  if not 0.0 < float(sec.mask_ratio) <= 1.0:
    raise ConfigError(f"config.evals.{name}.mask_ratio must be in (0, 1], got {sec.mask_ratio}")
  masked = model.score == "masked_xent"  # else "nll", an exact likelihood
  seq_len = int(model.input_shape[0])
  settings = {"mask_ratio": float(sec.mask_ratio), "mask_seed": int(sec.mask_seed)}
  sums_fn = functools.partial(prior_sums, model=model, settings=settings)
  uniform = math.log2(model.vocab_size)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    sums = batches.section_sums(sums_fn, rstate, ctx, sec)
    nats = float(sums["nats"]) / max(float(sums["count"]), 1.0)
    if masked:
      bits = nats / math.log(2.0)
      metrics = {"masked_xent_bits_per_code": bits, "uniform_bits_per_code": uniform}
      line = (
        f"{name}: masked-token cross-entropy {bits:.4f} bits per masked code at mask ratio {sec.mask_ratio} "
        f"(not a likelihood; uniform: {uniform:.4f}), {int(sums['count']):,} {sec.split} examples"
      )
    else:
      bits = nats / (seq_len * math.log(2.0))
      metrics = {
        "nll": nats,
        "bits_per_code": bits,
        "bits_per_image": nats / math.log(2.0),
        "uniform_bits_per_code": uniform,
      }
      line = (
        f"{name}: {bits:.4f} bits per code, {nats / math.log(2.0):.1f} bits per image ({seq_len} codes; "
        f"uniform prior: {uniform:.4f} bits per code), {int(sums['count']):,} {sec.split} examples"
      )
    return evaluators.Result(metrics, lines=[line])

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="prior_likelihood",
    build=_build,
    options={
      "mask_ratio": 0.5,
      "mask_seed": 0,
      "max_examples": ml_collections.config_dict.placeholder(int),
    },
    description="a code prior's test NLL (bits per code and per image; MaskGIT: masked cross-entropy)",
  )
)
