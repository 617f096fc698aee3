"""Anomaly detection from reconstruction errors (Malhotra et al. 2016, EncDec-AD, arXiv 1607.00148).

After a sequence autoencoder has been trained on the normal windows of a series dataset
(`ae_jax.data.series_file`; its `Dataset.anomaly` holds the segments by role):

Semi-supervised (the dataset gives train / validation / threshold / test ranges):
1. Error vectors. Unit "point" (a series): the windows that overlap a segment, every `stride` points
   (the anomaly evaluator's option), are reconstructed (they may reach past the segment's ends into the
   rest of the series); point i's error vector e_i [d] is the mean of |x_i - x'_i| over the windows that
   cover it (stride = window length: one window per point, the paper's e_i). With `normalise_positions`,
   |x - x'| is first divided by its mean at each window position on the validation split: a point near a
   series' end is covered only at a few positions, and EncDec-AD reconstructs the positions it decodes
   last much worse, which would otherwise flag series ends. Unit "window" (rows that are windows, e.g.
   ECG5000 beats): e = |x - x'| of the whole window, flattened [L * d].
2. A Gaussian N(mu, Sigma) is fitted to the errors of the normal validation split (the paper's vN1);
   `shrinkage` pulls Sigma towards its diagonal (1.0: diagonal), for error vectors longer than the data.
3. Score a_i = (e_i - mu)^T Sigma^-1 (e_i - mu) (squared Mahalanobis distance, the paper's) or the
   negative log-density; a unit is anomalous when a_i > tau.
4. tau maximises F-beta (beta = 0.1 by default, as in the paper) over the threshold split (vN2 + vA). A
   threshold split without anomalies falls back to tau = its largest score (no false alarm there).
5. Precision, recall and F-beta of the test split's units against the labels (per point for a series: a
   point is a true positive when it is labelled anomalous and scores above tau), ROC-AUC of the scores,
   and a plot of the series with scores, threshold and labelled intervals.
6. The series are also counted as the paper counts them, per sequence: consecutive windows of the model's
   length (a week of power demand, a valve cycle) with the largest point score as the sequence's score,
   a threshold of their own chosen on the threshold split's sequences, and sequence-level precision,
   recall and F-beta ("seq_..." metrics).

Unsupervised (no ranges: the model was trained on the whole series, with the largest training errors left
out of the loss by `config.trim`): every point is scored as above against a Gaussian fitted to all points
but the `contamination` share with the largest errors, and the `top_k` highest-scoring windows that do
not overlap are reported as discords (start, end, score, in rows of the original file; with a time column
also the times of their first and last points). With labels, the points inside the discords are the
predicted anomalies (precision, recall, F-beta, and ROC-AUC of the point scores), and each labelled
interval counts as found when a discord overlaps it.

After a normal prefix (`config.data.train_end`, the UCR anomaly archive's protocol): the error model is
fitted on the prefix's held-out end (normal points the model did not train on), only the points after the
prefix are scored, and the top-k discords after it are reported; with labels also how many labelled
intervals the best discord of their series (top-1) or any of its k best (top-k) finds by the archive's
rule (the discord's centre within 100 rows of the interval). `methods` adds the profiles of
`prefix_detector` (the matrix profile, the window autoencoder's latent discords, ...) to the model's, each
divided by its largest value.

Everything but the reconstruction is numpy; `detect` runs the whole procedure for a trained model.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np
from flax import linen as nn

from ae_jax.anomaly import prefix_detector, ucr
from ae_jax.anomaly.plot import save_anomaly_plot, save_discord_plot
from ae_jax.anomaly.reconstruction import (
  UnitErrors,
  position_scale,
  sequence_scores,
  unit_errors,
  window_errors,
)
from ae_jax.anomaly.scores import SCORES, best_threshold, fit_gaussian, precision_recall_fbeta, roc_auc
from ae_jax.core.errors import ConfigError
from ae_jax.data.dataset import Dataset
from ae_jax.data.series_file import AnomalySplits, Segment
from ae_jax.data.series_table import format_time
from ae_jax.training.outputs import reconstruct as reconstruct_batches
from ae_jax.training.train import TrainState


@dataclasses.dataclass(frozen=True)
class AnomalyReport:
  """Metrics (floats, and lists such as the discords), the plot's path, and a summary."""

  metrics: dict[str, object]
  plot: str | None
  summary: str


def _methods(a: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The prefix detector methods the `methods` option names ("mp,ae_latent" -> ("mp", "ae_latent"))."""
  return tuple(m for m in str(a.get("methods", "")).split(",") if m)


def check_options(
  a: ml_collections.ConfigDict, where: str = "config.evals.anomaly", splits: AnomalySplits | None = None
) -> None:
  """Raises ConfigError for anomaly options that cannot work (before any training); with the dataset's
  `splits`, also for options its mode cannot use."""
  methods = _methods(a)
  unknown = [m for m in methods if m not in prefix_detector.METHODS]
  if unknown:
    raise ConfigError(f"{where}.methods: unknown {unknown}; choose from {list(prefix_detector.METHODS)}")
  if methods and splits is not None and not splits.prefix:
    raise ConfigError(f"{where}.methods needs a normal prefix: set config.data.train_end, or methods=''")
  if methods and splits is not None and splits.segments["score"][0].values.shape[1] != 1:
    raise ConfigError(f"{where}.methods scores univariate series; pick one column (config.data.columns)")
  if a.score not in SCORES:
    raise ConfigError(f"unknown {where}.score '{a.score}'; choose one of {sorted(SCORES)}")
  if not 0.0 <= a.shrinkage <= 1.0 or a.beta <= 0 or a.stride < 1 or a.batch_size < 1:
    raise ConfigError(f"{where} needs 0 <= shrinkage <= 1, beta > 0, stride >= 1 and batch_size >= 1")
  if not 0.0 <= a.contamination < 1.0 or a.top_k < 1:
    raise ConfigError(f"{where} needs 0 <= contamination < 1 and top_k >= 1")


def threshold_and_test(
  val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], beta: float, prefix: str
) -> tuple[float, dict[str, float], str]:
  """Steps 4-5 for (scores [n], labels [n]) of the threshold and test units: (tau, metrics under `prefix`,
  and a summary phrase). Without an anomaly in the threshold split, tau is its largest score."""
  (val_scores, val_labels), (test_scores, test_labels) = val, test
  if val_labels.any():
    tau, val_f = best_threshold(val_scores, val_labels, beta)
    rule = f"max F{beta:g} on the threshold split ({val_f:.3f})"
  else:
    tau, val_f = float(val_scores.max()), float("nan")
    rule = "largest score of the threshold split (it has no anomaly)"
  counts = precision_recall_fbeta(test_scores > tau, test_labels, beta)
  metrics = {f"{prefix}test_{k}": float(v) for k, v in counts.items()}
  metrics.update(
    {
      f"{prefix}test_roc_auc": roc_auc(test_scores, test_labels),
      f"{prefix}threshold_roc_auc": roc_auc(val_scores, val_labels),
      f"{prefix}threshold_fbeta": val_f,
      f"{prefix}threshold": tau,
    }
  )
  metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}  # no ROC-AUC without both classes
  phrase = (
    f"precision {counts['precision']:.3f} recall {counts['recall']:.3f} F{beta:g} {counts['fbeta']:.3f} "
    f"ROC-AUC {metrics.get(f'{prefix}test_roc_auc', float('nan')):.3f}; normal right "
    f"{counts['tn']}/{counts['tn'] + counts['fp']}, anomalous found "
    f"{counts['tp']}/{counts['tp'] + counts['fn']}; threshold {tau:.4g} = {rule}"
  )
  return tau, metrics, phrase


def _semi_supervised(reconstruct, a, splits: AnomalySplits, name: str, path: str | None) -> AnomalyReport:
  stride = splits.window if splits.unit == "window" else a.stride
  roles = ("validation", "threshold", "test")
  errors = {r: window_errors(splits.segments[r], reconstruct, splits.window, stride) for r in roles}
  scale = position_scale(errors["validation"]) if a.normalise_positions and splits.unit == "point" else None
  units = {r: unit_errors(e, splits.unit, scale) for r, e in errors.items()}
  gaussian = fit_gaussian(units["validation"].errors, a.shrinkage)
  scores = {r: SCORES[a.score](u.errors, gaussian) for r, u in units.items()}
  tau, metrics, phrase = threshold_and_test(
    (scores["threshold"], units["threshold"].labels),
    (scores["test"], units["test"].labels),
    a.beta,
    "",
  )
  metrics.update({"beta": float(a.beta), "num_validation_units": float(len(units["validation"].errors))})
  what = "window" if splits.unit == "window" else "point"
  summary = f"anomaly detection ({name}, {a.score}): per {what}: {phrase}"
  if splits.unit == "point":
    val, test = (sequence_scores(units[r], scores[r], splits.window) for r in ("threshold", "test"))
    _, seq_metrics, seq_phrase = threshold_and_test(val, test, a.beta, "seq_")
    metrics.update(seq_metrics)
    summary += f"\n  per sequence of {splits.window} points: {seq_phrase}"
  plot = None if path is None else save_anomaly_plot(path, units, scores, tau, splits, summary.split(":")[0])
  return AnomalyReport(metrics, plot, summary)


def top_discords(
  segments: list[Segment], scores: list[np.ndarray], length: int, k: int
) -> list[tuple[int, int, int, float]]:
  """The k windows of `length` points with the highest mean point score that do not overlap (greedy,
  highest first), over all segments: [(segment index, start, end, mean score)], start/end in points."""
  means = []
  for point_scores in scores:
    c = np.concatenate([[0.0], np.cumsum(np.nan_to_num(point_scores, nan=0.0))])
    means.append((c[length:] - c[:-length]) / length if len(point_scores) >= length else np.zeros(0))
  out = []
  for _ in range(k):
    best = max(
      (
        (i, int(np.argmax(m)), float(np.max(m)))
        for i, m in enumerate(means)
        if len(m) and np.isfinite(m).any()
      ),
      key=lambda t: t[2],
      default=None,
    )
    if best is None or not np.isfinite(best[2]):
      break
    i, start, value = best
    out.append((i, start, start + length, value))
    means[i][max(start - length + 1, 0) : start + length] = -np.inf  # windows overlapping this one
  return out


def _intervals(labels: np.ndarray) -> list[tuple[int, int]]:
  runs = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0]))
  return list(zip(runs[::2].tolist(), runs[1::2].tolist(), strict=True))


def _discord(seg: Segment, lo: int, hi: int, score: float, factor: int) -> dict[str, object]:
  """A discord's record: points [lo, hi) of a segment as rows [start, end) of the original file, its score,
  and with a time column the times of its first and last point (block starts when downsampled)."""
  out: dict[str, object] = {
    "series": seg.series,
    "start": (seg.lo + lo) * factor,
    "end": (seg.lo + hi) * factor,
    "score": score,
  }
  if seg.times is not None:
    out["start_time"] = format_time(seg.times[seg.lo + lo])
    out["last_time"] = format_time(seg.times[seg.lo + hi - 1])
  return out


def _unsupervised(reconstruct, a, splits: AnomalySplits, name: str, path: str | None) -> AnomalyReport:
  segments = splits.segments["score"]
  errors = window_errors(segments, reconstruct, splits.window, a.stride)
  scale = position_scale(errors) if a.normalise_positions else None
  units = unit_errors(errors, "point", scale)
  norms = np.linalg.norm(units.errors, axis=1)
  keep = norms <= np.quantile(norms, 1.0 - a.contamination) if a.contamination else np.ones(len(norms), bool)
  gaussian = fit_gaussian(units.errors[keep], a.shrinkage)
  scores = SCORES[a.score](units.errors, gaussian)
  return _discords_report(a, splits, units, scores, f"{name}, unsupervised, {a.score}", path)


def _after_prefix(reconstruct, a, splits: AnomalySplits, name: str, path: str | None) -> AnomalyReport:
  """The UCR archive's protocol: the error model is fitted on the prefix's held-out end (normal points the
  model did not train on), and only the points after the prefix are scored; with `methods`, the
  prefix detectors' profiles are added to the model's (each divided by its largest value)."""
  held = window_errors(splits.segments["validation"], reconstruct, splits.window, a.stride)
  scale = position_scale(held) if a.normalise_positions else None
  gaussian = fit_gaussian(unit_errors(held, "point", scale).errors, a.shrinkage)
  units = unit_errors(
    window_errors(splits.segments["score"], reconstruct, splits.window, a.stride), "point", scale
  )
  scores = SCORES[a.score](units.errors, gaussian)
  methods = _methods(a)
  if methods:
    options = prefix_detector.DetectorOptions(methods=methods, window=splits.window)
    combined = []
    for seg, part in units.parts:
      own = scores[part] / max(float(np.max(scores[part])), 1e-12)
      values = seg.values[:, 0].astype(np.float64)
      profile = prefix_detector.score_profile(values, seg.lo, splits.window, options)[seg.lo : seg.hi]
      combined.append(own + np.nan_to_num(profile, nan=0.0))
    scores = np.concatenate(combined)
  how = f"{a.score}" + (f" + {','.join(methods)}" if methods else "")
  head = f"{name}, after the normal prefix, {how}; window {splits.window} = {splits.window_rule}"
  report = _discords_report(a, splits, units, scores, head, path)
  report.metrics.update({"window": float(splits.window), "window_rule": splits.window_rule})
  return report


def _discords_report(
  a, splits: AnomalySplits, units: UnitErrors, scores: np.ndarray, head: str, path: str | None
) -> AnomalyReport:
  """The top-k discords of point scores [N] over the units' segments, and with labels how many labelled
  intervals they find (in the prefix mode also by the UCR archive's rule: the centre of the best discord,
  or of any of the k, within its slack of the interval)."""
  segments = [seg for seg, _ in units.parts]
  per_segment = [scores[part] for _, part in units.parts]
  found = top_discords(segments, per_segment, splits.window, a.top_k)
  f = splits.downsample
  discords = [_discord(segments[i], lo, hi, v, f) for i, lo, hi, v in found]
  metrics: dict[str, object] = {"discords": discords, "num_points": float(len(scores))}
  lines = [
    f"  {d['series']} [{d['start']}, {d['end']}) score {d['score']:.4g}"
    + (f" ({d['start_time']} to {d['last_time']})" if "start_time" in d else "")
    for d in discords
  ]
  summary = f"anomaly detection ({head}): top {len(discords)} discords\n" + "\n".join(lines)
  if splits.labelled:
    predicted = np.zeros(len(scores), bool)
    for i, lo, hi, _ in found:
      predicted[units.parts[i][1].start + lo : units.parts[i][1].start + hi] = True
    counts = precision_recall_fbeta(predicted, units.labels, a.beta)
    metrics.update({k: float(v) for k, v in counts.items()})
    auc = roc_auc(scores, units.labels)
    if not math.isnan(auc):
      metrics["roc_auc"] = auc
    hits = []
    for index, (seg, part) in enumerate(units.parts):
      own = [(lo, hi) for i, lo, hi, _ in found if i == index]
      for lo, hi in _intervals(units.labels[part]):
        hit = {"series": seg.series, "start": (seg.lo + lo) * f, "end": (seg.lo + hi) * f}
        hit["found"] = any(d_lo < hi and lo < d_hi for d_lo, d_hi in own)
        if splits.prefix:  # this series' own top k, as the archive scores each series alone
          mine = top_discords([seg], [per_segment[index]], splits.window, a.top_k)
          slack = -(-ucr.SLACK // f)
          right = [ucr.is_correct((d_lo + d_hi) // 2, lo, hi, slack) for _, d_lo, d_hi, _ in mine]
          hit.update({"top1": bool(right[:1] and right[0]), "topk": any(right)})
        hits.append(hit)
    metrics.update({"intervals": hits, "intervals_found": float(sum(h["found"] for h in hits))})
    summary += f"\n  labelled intervals found {sum(h['found'] for h in hits)}/{len(hits)}"
    if splits.prefix:
      metrics.update({k: float(sum(h[k] for h in hits)) for k in ("top1", "topk")})
      summary += (
        f" (UCR rule, within {ucr.SLACK} rows: top-1 {sum(h['top1'] for h in hits)}, top-{a.top_k} "
        f"{sum(h['topk'] for h in hits)})"
      )
    summary += (
      f"; per point: precision {counts['precision']:.3f} recall {counts['recall']:.3f} F{a.beta:g} "
      f"{counts['fbeta']:.3f} ROC-AUC {auc:.3f}"
    )
  plot = (
    None if path is None else save_discord_plot(path, units, scores, found, splits, summary.split(":")[0])
  )
  return AnomalyReport(metrics, plot, summary)


def detect(
  model: nn.Module,
  state: TrainState,
  options: ml_collections.ConfigDict,
  dataset: Dataset,
  plot_path: str | None = None,
) -> AnomalyReport:
  """Runs the procedure of the module docstring for a trained model (unreplicated `state`) with the
  `anomaly` evaluator's options; writes the plot to `plot_path` when given."""
  check_options(options)

  def reconstruct(windows: np.ndarray) -> np.ndarray:
    return reconstruct_batches(model, state, windows, options.batch_size)["recon"]

  splits = dataset.anomaly
  run = _semi_supervised if splits.supervised else _after_prefix if splits.prefix else _unsupervised
  return run(reconstruct, options, splits, dataset.name, plot_path)
