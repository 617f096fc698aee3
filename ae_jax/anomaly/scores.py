"""Scores, thresholds and detection metrics of anomaly detection, in numpy.

A Gaussian N(mu, Sigma) fitted to normal error vectors gives each unit a score (squared Mahalanobis
distance or negative log-density); a unit is anomalous when its score exceeds a threshold tau, chosen to
maximise F-beta on a split with labelled anomalies. ROC-AUC summarises the scores without a threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np


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
