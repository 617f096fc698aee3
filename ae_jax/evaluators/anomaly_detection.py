"""The `anomaly` evaluator: reconstruction-error anomaly detection on a series dataset's own segments
(`ae_jax.anomaly`), semi-supervised (threshold on the threshold split, report on the test split),
unsupervised (top-k discords), or after a normal prefix (top-k discords after it, the UCR archive's
rule). Writes WORKDIR/<name>.png (`Context.output_path`)."""

from __future__ import annotations

import ml_collections

from ae_jax import anomaly, evaluators
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError

OPTIONS = {
  "beta": 0.1,  # the threshold maximises F-beta on the threshold split (0.1: the paper's)
  "score": "mahalanobis",  # mahalanobis | neg_log_density, of the Gaussian of normal errors
  "shrinkage": 0.0,  # covariance blended towards its diagonal (1.0: diagonal)
  "stride": 1,  # between the windows whose errors are averaged into each point's error vector
  "normalise_positions": True,  # divide errors by their mean at each window position first
  "batch_size": 512,
  "contamination": 0.05,  # unsupervised: share of points with the largest errors left out of the fit
  "top_k": 3,  # unsupervised and after a prefix: discords reported
  # after a normal prefix (config.data.train_end): prefix_detector methods added to the model's score,
  # e.g. "mp,ae_latent" (univariate series); "": the model's reconstruction errors alone
  "methods": "",
}


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  anomaly.check_options(sec, f"config.evals.{name}", ctx.dataset.anomaly)
  if ctx.config.model.get("vocab_size", 0):
    raise ConfigError("anomaly detection scores real-valued reconstructions: set config.model.vocab_size=0")

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    path = ctx.output_path(name)
    report = anomaly.detect(ctx.model, parallel.unreplicate(rstate), sec, ctx.dataset, path)
    scalars = {k: v for k, v in report.metrics.items() if isinstance(v, float)}
    details = {k: v for k, v in report.metrics.items() if not isinstance(v, float)}
    return evaluators.Result(scalars, details, [report.plot] if report.plot else [], [report.summary])

  return evaluate


evaluators.register(
  evaluators.EvaluatorSpec(
    name="anomaly",
    build=_build,
    options=OPTIONS,
    needs=lambda spec, data: None if spec.anomaly_labels else "it has no anomaly segments (use series_file)",
    uses_split=False,
    description="anomaly detection from reconstruction errors (thresholds, F-beta, ROC-AUC, discords)",
  )
)
