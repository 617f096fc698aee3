"""The anomaly plot: series with labelled anomalies above their scores, the threshold and flagged points."""

from __future__ import annotations

import os

import numpy as np

from ae_jax.anomaly.reconstruction import UnitErrors
from ae_jax.data.series import AnomalySplits


def save_anomaly_plot(
  path: str,
  units: dict[str, UnitErrors],
  scores: dict[str, np.ndarray],
  tau: float,
  splits: AnomalySplits,
  title: str = "",
) -> str:
  """PNG: per threshold/test segment, the series with its labelled anomalies (red) above the scores, the
  threshold and the points flagged; for window units, histograms of test scores by label. Returns the path."""
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
    parts = [(role, seg, sl) for role in ("threshold", "test") for seg, sl in units[role].parts]
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
  return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
  """Writes the figure to `path` atomically (a temporary file renamed), closes it, returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def save_discord_plot(
  path: str,
  units: UnitErrors,
  scores: np.ndarray,
  discords: list[tuple[int, int, int, float]],
  splits: AnomalySplits,
  title: str = "",
) -> str:
  """PNG for unsupervised scoring: per series, the values with labelled anomalies (red) and the top
  discords (green, numbered by rank) above the point scores. Returns the path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  parts = units.parts
  fig, axes = plt.subplots(2 * len(parts), 1, figsize=(12, 2.6 * len(parts)), dpi=90, squeeze=False)
  for i, (seg, sl) in enumerate(parts):
    t = np.arange(seg.lo, seg.hi) * splits.downsample
    top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
    top.plot(t, seg.values[seg.lo : seg.hi], lw=0.6)
    runs = np.flatnonzero(np.diff(np.r_[0, seg.labels[seg.lo : seg.hi].astype(int), 0]))
    for lo, hi in zip(runs[::2], runs[1::2], strict=True):
      for ax in (top, bottom):
        ax.axvspan(t[lo], t[hi - 1], color="tab:red", alpha=0.2)
    for rank, (j, lo, hi, _) in enumerate(discords, 1):
      if j != i:
        continue
      for ax in (top, bottom):
        ax.axvspan(t[lo], t[min(hi, len(t)) - 1], color="tab:green", alpha=0.25)
      top.annotate(f"#{rank}", (t[lo], 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="top")
    bottom.plot(t, scores[sl], lw=0.6, color="tab:gray")
    top.set_title(f"{seg.series}: labelled anomalies red, top discords green", fontsize=9)
    bottom.set_ylabel("score", fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, plt, path)
