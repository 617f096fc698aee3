"""The `losses` evaluator: the exact mean of every loss term over a whole split (padding excluded).

A per-example mean is one thing everywhere: the sum over the split's examples (a last partial batch's
padding weighs 0) divided by their number. The model metrics that are functions of a loss term's
per-example mean (a prior's bits_per_code of code_nll: the model's `term_metrics`) are computed from that
exact mean, not averaged from batch values, which would count a last batch's padding.

Options: `baseline` adds, after training, the MSE of always predicting the training split's mean example
(`<name>/mse_of_mean_image`), the number a reconstruction has to beat; `max_examples` caps the examples.
"""

from __future__ import annotations

import functools

import ml_collections

from ae_jax import evaluators
from ae_jax.evaluators import batches
from ae_jax.training import train


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  dataset = ctx.dataset
  source = dataset.split(sec.split)
  sums_fn = functools.partial(train.eval_sums, model=ctx.model, objective=ctx.objective)

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    sums = batches.section_sums(sums_fn, rstate, ctx, sec)
    count = sums.pop("count")
    metrics = {k: float(v) / float(count) for k, v in sums.items()}
    term_metrics = getattr(ctx.model, "term_metrics", None)
    if term_metrics is not None:
      metrics.update({k: float(v) for k, v in term_metrics(metrics).items()})
    if final and sec.baseline and "mse" in metrics:
      metrics["mse_of_mean_image"] = batches.mean_image_mse(dataset.split("train"), source, dataset.info)
    return evaluators.Result(metrics)

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="losses",
    build=_build,
    options={"baseline": True, "max_examples": ml_collections.config_dict.placeholder(int)},
    description="exact means of every loss term over a split",
  )
)
