"""Anomaly detection from reconstruction errors (Malhotra et al. 2016, EncDec-AD, arXiv 1607.00148).

After a sequence autoencoder has been trained on normal windows (`ae_jax.data.timeseries`):

1. Error vectors. Unit "point" (the discord series): the windows that overlap a segment, every
   `config.anomaly.stride` points, are reconstructed (they may reach past the segment's ends into the
   rest of the series); point i's error vector e_i [d] is the mean of |x_i - x'_i| over the windows that
   cover it (stride = window length: one window per point, the paper's e_i). With `normalise_positions`,
   |x - x'| is first divided by its mean at each window position on the fit split: a point near a
   series' end is covered only at a few positions, and EncDec-AD reconstructs the positions it decodes
   last much worse, which would otherwise flag series ends. Unit "window" (ECG5000 beats): e = |x - x'|
   of the whole beat, flattened [L * d].
2. A Gaussian N(mu, Sigma) is fitted to the errors of the normal "fit" split (the paper's vN1);
   `shrinkage` pulls Sigma towards its diagonal (1.0: diagonal), for error vectors longer than the data.
3. Score a_i = (e_i - mu)^T Sigma^-1 (e_i - mu) (squared Mahalanobis distance, the paper's) or the
   negative log-density; a unit is anomalous when a_i > tau.
4. tau maximises F-beta (beta = 0.1 by default, as in the paper) over the "val" split (vN2 + vA). A val
   split without anomalies falls back to tau = its largest score (no false alarm on validation).
5. Precision, recall and F-beta of the "test" split's units against the labels (per point for the
   series: a point is a true positive when it is labelled anomalous and scores above tau), ROC-AUC of the
   scores, and a plot of the series with scores, threshold and labelled intervals.
6. The series are also counted as the paper counts them, per sequence: consecutive windows of the model's
   length (a week of power demand, a valve cycle, a beat) with the largest point score as the sequence's
   score, a threshold of their own chosen on the validation sequences, and sequence-level precision,
   recall and F-beta ("anomaly/seq_..." metrics).

Everything but the reconstruction is numpy; `detect` runs the whole procedure for a trained model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import ml_collections
import numpy as np
from flax import linen as nn

from ae_jax import evaluate
from ae_jax.data import timeseries
from ae_jax.train import TrainState

# ----------------------------------------------------------------------------- Gaussian scores


@dataclasses.dataclass(frozen=True)
class Gaussian:
  """N(mean [D], cov [D, D]) of error vectors."""

  mean: np.ndarray
  cov: np.ndarray

  def _eigh(self) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(self.cov)
    return np.maximum(w, 1e-12 + 1e-9 * max(float(w.max()), 0.0)), v  # floor: a singular Sigma stays usable


def fit_gaussian(errors: np.ndarray, shrinkage: float = 0.0) -> Gaussian:
  """Maximum-likelihood mean and unbiased covariance of errors [n, D]; `shrinkage` in [0, 1] blends the
  covariance with its diagonal: (1 - s) * S + s * diag(S)."""
  errors = np.asarray(errors, np.float64)
  if errors.ndim != 2 or len(errors) < 2:
    raise ValueError(f"fit_gaussian needs errors [n >= 2, D], got shape {errors.shape}")
  cov = np.atleast_2d(np.cov(errors, rowvar=False))
  cov = (1.0 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
  return Gaussian(errors.mean(axis=0), cov)


def mahalanobis(errors: np.ndarray, g: Gaussian) -> np.ndarray:
  """Squared Mahalanobis distance (e - mu)^T Sigma^-1 (e - mu) of errors [n, D]: [n]."""
  w, v = g._eigh()
  z = (np.asarray(errors, np.float64) - g.mean) @ v
  return np.sum(z * z / w, axis=1)


def neg_log_density(errors: np.ndarray, g: Gaussian) -> np.ndarray:
  """-log N(e; mu, Sigma) of errors [n, D] in nats: [n]."""
  w, _ = g._eigh()
  return 0.5 * (mahalanobis(errors, g) + np.sum(np.log(w)) + len(w) * math.log(2 * math.pi))


SCORES: dict[str, Callable[[np.ndarray, Gaussian], np.ndarray]] = {
  "mahalanobis": mahalanobis,
  "neg_log_density": neg_log_density,
}

# ----------------------------------------------------------------------------- thresholds and metrics


def fbeta_from_counts(tp: float, fp: float, fn: float, beta: float) -> float:
  """F-beta = (1 + b^2) P R / (b^2 P + R) from counts; 0 when there is no true positive."""
  b2 = beta * beta
  return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp) if tp > 0 else 0.0


def precision_recall_fbeta(pred: np.ndarray, labels: np.ndarray, beta: float) -> dict[str, float]:
  """Precision, recall, F-beta and the confusion counts of predictions [n] (bool) against labels [n]."""
  pred, labels = np.asarray(pred, bool), np.asarray(labels, bool)
  tp, fp = int(np.sum(pred & labels)), int(np.sum(pred & ~labels))
  fn, tn = int(np.sum(~pred & labels)), int(np.sum(~pred & ~labels))
  return {
    "precision": tp / (tp + fp) if tp + fp else 0.0,
    "recall": tp / (tp + fn) if tp + fn else 0.0,
    "fbeta": fbeta_from_counts(tp, fp, fn, beta),
    "tp": tp,
    "fp": fp,
    "fn": fn,
    "tn": tn,
  }


def best_threshold(scores: np.ndarray, labels: np.ndarray, beta: float) -> tuple[float, float]:
  """(tau, F-beta): the threshold that maximises F-beta of `scores > tau` against labels [n] (bool).

  Every distinct cut is tried: tau is halfway between neighbouring distinct scores (or just below the
  smallest). Among equal F-beta the highest tau wins. Raises ValueError without any positive label.
  """
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  if not labels.any():
    raise ValueError("best_threshold needs at least one anomalous unit among the labels")
  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], labels[order]
  last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # top-k cuts only where the score changes
  tp = np.cumsum(y)[last]
  k = last + 1
  b2 = beta * beta
  f = np.where(tp > 0, (1 + b2) * tp / np.maximum((1 + b2) * tp + b2 * (y.sum() - tp) + (k - tp), 1), 0.0)
  best = int(np.argmax(f))  # the first maximum: the fewest predicted anomalies
  i = last[best]
  below = s[i + 1] if i + 1 < len(s) else s[i] - max(1.0, abs(s[i]))
  return float((s[i] + below) / 2), float(f[best])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with a single class."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pos, neg = int(labels.sum()), int((~labels).sum())
  if pos == 0 or neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank, averaged over each tie
  ranks = average_rank[inverse]
  return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


# ----------------------------------------------------------------------------- error vectors


def point_errors(num_points: int, errors: np.ndarray, starts: np.ndarray) -> np.ndarray:
  """Per-point error vectors [num_points, d]: point i's mean of errors [W, L, d] (e.g. |x - x'|) over the
  windows (starting at `starts` [W]) that cover it. Points no window covers are NaN."""
  sums, counts = np.zeros((num_points, errors.shape[2])), np.zeros(num_points)
  for j in range(errors.shape[1]):  # starts are distinct, so starts + j has no repeated index
    sums[starts + j] += errors[:, j]
    counts[starts + j] += 1
  with np.errstate(invalid="ignore"):
    return sums / counts[:, None]


@dataclasses.dataclass(frozen=True)
class WindowErrors:
  """|x - x'| [W, L, d] of the windows (starting at `starts` [W]) that overlap a segment's points."""

  segment: timeseries.Segment
  starts: np.ndarray
  errors: np.ndarray


def window_errors(
  segments: list[timeseries.Segment],
  reconstruct: Callable[[np.ndarray], np.ndarray],
  window: int,
  stride: int,
) -> list[WindowErrors]:
  """Reconstructs every window that overlaps a segment's points [lo, hi) (one batched pass)."""
  short = [s.series for s in segments if len(s.values) < window]
  if short:
    raise ValueError(f"series {short} are shorter than one window ({window}): their points cannot be scored")
  cut = [timeseries.windows(s.values, window, stride, s.lo, s.hi) for s in segments]
  recon = np.split(reconstruct(np.concatenate([w for w, _ in cut])), np.cumsum([len(w) for w, _ in cut])[:-1])
  return [
    WindowErrors(s, starts, np.abs(w - r)) for s, (w, starts), r in zip(segments, cut, recon, strict=True)
  ]


def position_scale(errors: list[WindowErrors]) -> np.ndarray:
  """Mean error at each window position [L, d] over all windows of `errors`."""
  return np.concatenate([e.errors for e in errors]).mean(axis=0) + 1e-12


@dataclasses.dataclass(frozen=True)
class UnitErrors:
  """Error vectors [N, D] and labels [N] of one split's units; `parts` gives each segment's slice of them."""

  errors: np.ndarray
  labels: np.ndarray
  parts: list[tuple[timeseries.Segment, slice]]


def unit_errors(errors: list[WindowErrors], unit: str, scale: np.ndarray | None = None) -> UnitErrors:
  """Error vectors and labels of the points [lo, hi) of each segment (unit "point": the mean over the
  covering windows of |x - x'|, divided by `scale` [L, d] when given) or of each segment as one window
  (unit "window": |x - x'| flattened [L * d])."""
  vectors, labels, parts, offset = [], [], [], 0
  for w in errors:
    s = w.segment
    if unit == "window":  # each segment is exactly one window
      e, y = w.errors.reshape(len(w.errors), -1), s.labels[:1]
    else:
      scaled = w.errors if scale is None else w.errors / scale
      e, y = point_errors(len(s.values), scaled, w.starts)[s.lo : s.hi], s.labels[s.lo : s.hi]
    vectors.append(e)
    labels.append(y)
    parts.append((s, slice(offset, offset + len(e))))
    offset += len(e)
  return UnitErrors(np.concatenate(vectors), np.concatenate(labels), parts)


# ----------------------------------------------------------------------------- the procedure


def sequence_scores(units: UnitErrors, scores: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """The paper's sequences: each segment's points cut into consecutive runs of `length` from its start
  (a shorter last run kept). A sequence scores the largest score of its points, so it is flagged when any
  of its points is, and it is anomalous when any of its points is. Returns (scores [S], labels [S])."""
  out_scores, out_labels = [], []
  for _, part in units.parts:
    s, y = scores[part], units.labels[part]
    for i in range(0, len(s), length):
      out_scores.append(s[i : i + length].max())
      out_labels.append(y[i : i + length].any())
  return np.asarray(out_scores, np.float64), np.asarray(out_labels, bool)


@dataclasses.dataclass(frozen=True)
class AnomalyReport:
  """Metrics ("anomaly/..." keys, for results.json), the plot's path, and a one-line summary."""

  metrics: dict[str, float]
  plot: str | None
  summary: str


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (before any training) when anomaly detection cannot run for this config."""
  a = config.anomaly
  if config.data.name not in timeseries.ANOMALY_DATASETS:
    raise ValueError(
      f"config.anomaly.enabled needs a data set with labelled anomalies {list(timeseries.ANOMALY_DATASETS)},"
      f" not '{config.data.name}'"
    )
  if a.score not in SCORES:
    raise ValueError(f"unknown config.anomaly.score '{a.score}'; choose one of {sorted(SCORES)}")
  if not 0.0 <= a.shrinkage <= 1.0 or a.beta <= 0 or a.stride < 1 or a.batch_size < 1:
    raise ValueError("config.anomaly needs 0 <= shrinkage <= 1, beta > 0, stride >= 1 and batch_size >= 1")
  if config.model.get("vocab_size", 0):
    raise ValueError("anomaly detection scores real-valued reconstructions: set config.model.vocab_size=0")


def threshold_and_test(
  val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], beta: float, prefix: str
) -> tuple[float, dict[str, float], str]:
  """Steps 4-5 for (scores [n], labels [n]) of the val and test units: (tau, metrics under `prefix`, and
  a summary phrase). Without a validation anomaly, tau is the largest validation score."""
  (val_scores, val_labels), (test_scores, test_labels) = val, test
  if val_labels.any():
    tau, val_f = best_threshold(val_scores, val_labels, beta)
    rule = f"max F{beta:g} on validation ({val_f:.3f})"
  else:
    tau, val_f = float(val_scores.max()), float("nan")
    rule = "largest validation score (validation has no anomaly)"
  counts = precision_recall_fbeta(test_scores > tau, test_labels, beta)
  metrics = {f"{prefix}test_{k}": float(v) for k, v in counts.items()}
  metrics.update(
    {
      f"{prefix}test_roc_auc": roc_auc(test_scores, test_labels),
      f"{prefix}val_roc_auc": roc_auc(val_scores, val_labels),
      f"{prefix}val_fbeta": val_f,
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


def detect(
  model: nn.Module, state: TrainState, config: ml_collections.ConfigDict, workdir: str | None = None
) -> AnomalyReport:
  """Runs steps 1-6 of the module docstring for a trained model; writes WORKDIR/anomalies.png."""
  check_config(config)
  a = config.anomaly
  splits = timeseries.anomaly_splits(config.data)

  def reconstruct(windows: np.ndarray) -> np.ndarray:
    return evaluate.reconstruct(model, state, windows, a.batch_size)["recon"]

  stride = splits.window if splits.unit == "window" else a.stride
  errors = {
    r: window_errors(splits.segments[r], reconstruct, splits.window, stride) for r in ("fit", "val", "test")
  }
  scale = position_scale(errors["fit"]) if a.normalise_positions and splits.unit == "point" else None
  units = {r: unit_errors(e, splits.unit, scale) for r, e in errors.items()}
  gaussian = fit_gaussian(units["fit"].errors, a.shrinkage)
  scores = {r: SCORES[a.score](u.errors, gaussian) for r, u in units.items()}
  tau, metrics, phrase = threshold_and_test(
    (scores["val"], units["val"].labels), (scores["test"], units["test"].labels), a.beta, "anomaly/"
  )
  metrics.update({"anomaly/beta": float(a.beta), "anomaly/num_fit_units": float(len(units["fit"].errors))})
  what = "beat" if splits.unit == "window" else "point"
  summary = f"anomaly detection ({config.data.name}, {a.score}): per {what}: {phrase}"
  if splits.unit == "point":
    val, test = (sequence_scores(units[r], scores[r], splits.window) for r in ("val", "test"))
    _, seq_metrics, seq_phrase = threshold_and_test(val, test, a.beta, "anomaly/seq_")
    metrics.update(seq_metrics)
    summary += f"\n  per sequence of {splits.window} points: {seq_phrase}"
  plot = None
  if workdir is not None:
    path = os.path.join(workdir, "anomalies.png")
    plot = save_anomaly_plot(path, units, scores, tau, splits, title=summary.split(":")[0])
  return AnomalyReport(metrics, plot, summary)


def save_anomaly_plot(
  path: str,
  units: dict[str, UnitErrors],
  scores: dict[str, np.ndarray],
  tau: float,
  splits: timeseries.AnomalySplits,
  title: str = "",
) -> str:
  """PNG: per val/test segment, the series with its labelled anomalies (red) above the scores,
  the threshold and the points flagged; for beats, histograms of test scores by label. Returns the path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if splits.unit == "window":
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    s, y = scores["test"], units["test"].labels
    bins = np.logspace(np.log10(max(s.min(), 1e-6)), np.log10(s.max() + 1e-6), 40)
    ax.hist([s[~y], s[y]], bins=bins, label=["normal", "anomalous"], color=["tab:blue", "tab:red"], alpha=0.7)
    ax.axvline(tau, color="k", ls="--", label="threshold")
    ax.set(xscale="log", xlabel="anomaly score (test beats)", ylabel="beats", title=title)
    ax.legend()
  else:
    parts = [(role, seg, sl) for role in ("val", "test") for seg, sl in units[role].parts]
    fig, axes = plt.subplots(2 * len(parts), 1, figsize=(12, 2.6 * len(parts)), dpi=90, squeeze=False)
    for i, (role, seg, sl) in enumerate(parts):
      t = np.arange(seg.lo, seg.hi) * splits.downsample
      top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
      top.plot(t, seg.values[seg.lo : seg.hi], lw=0.6)
      for ax in (top, bottom):
        runs = np.flatnonzero(np.diff(np.r_[0, seg.labels[seg.lo : seg.hi].astype(int), 0]))
        for lo, hi in zip(runs[::2], runs[1::2], strict=True):
          ax.axvspan(t[lo], t[hi - 1], color="tab:red", alpha=0.2)
      s = scores[role][sl]
      bottom.plot(t, s, lw=0.6, color="tab:gray")
      flagged = s > tau
      bottom.scatter(t[flagged], s[flagged], s=4, color="tab:red", label="score > threshold")
      bottom.axhline(tau, color="k", ls="--", lw=0.8, label="threshold")
      top.set_title(f"{role}: {seg.series}, points {t[0]}-{t[-1]} (labelled anomalies shaded)", fontsize=9)
      bottom.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)
  return path
