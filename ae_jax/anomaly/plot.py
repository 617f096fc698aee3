"""The anomaly plots: series with labelled anomalies above their scores, the threshold and flagged points
(semi-supervised), or the top discords (unsupervised). The x axis is the series' time column when it has
one (config.data.time_column), else its row numbers."""

from __future__ import annotations

import os

import numpy as np

from ae_jax.anomaly.reconstruction import UnitErrors
from ae_jax.data.series_file import AnomalySplits, Segment
from ae_jax.data.series_table import format_time

FONT = 8  # points: the discord markers' text


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def segment_x(seg: Segment, downsample: int) -> np.ndarray:
  """The x coordinates [hi - lo] of a segment's points: its times, else its rows in the original file."""
  if seg.times is not None:
    return seg.times[seg.lo : seg.hi]
  return np.arange(seg.lo, seg.hi) * downsample


def _span_text(seg: Segment, downsample: int) -> str:
  rows = f"points {seg.lo * downsample}-{(seg.hi - 1) * downsample}"
  if seg.times is None:
    return rows
  return f"{rows}, {format_time(seg.times[seg.lo])} to {format_time(seg.times[seg.hi - 1])}"


def _shade_labels(
  axes, t: np.ndarray, labels: np.ndarray, color: str = "tab:red", alpha: float = 0.2
) -> None:
  runs = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0]))
  for lo, hi in zip(runs[::2], runs[1::2], strict=True):
    for ax in axes:
      ax.axvspan(t[lo], t[hi - 1], color=color, alpha=alpha)


def anomaly_figure(
  units: dict[str, UnitErrors],
  scores: dict[str, np.ndarray],
  tau: float,
  splits: AnomalySplits,
  title: str = "",
):
  """The semi-supervised figure (see save_anomaly_plot); the caller saves or closes it."""
  plt = _pyplot()
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
      t = segment_x(seg, splits.downsample)
      top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
      top.plot(t, seg.values[seg.lo : seg.hi], lw=0.6)
      _shade_labels((top, bottom), t, seg.labels[seg.lo : seg.hi])
      s = scores[role][sl]
      bottom.plot(t, s, lw=0.6, color="tab:gray")
      flagged = s > tau
      bottom.scatter(t[flagged], s[flagged], s=4, color="tab:red", label="score > threshold")
      bottom.axhline(tau, color="k", ls="--", lw=0.8, label="threshold")
      shaded = " (labelled anomalies shaded)" if splits.labelled else " (no anomaly labels)"
      top.set_title(f"{role}: {seg.series}, {_span_text(seg, splits.downsample)}{shaded}", fontsize=9)
      bottom.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


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
  return _save(anomaly_figure(units, scores, tau, splits, title), path)


def _save(fig, path: str) -> str:
  """Writes the figure to `path` atomically (a temporary file renamed), closes it, returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  _pyplot().close(fig)
  os.replace(tmp, path)
  return path


def place_markers(ax, markers: list[tuple[object, str]], pad: float = 2.0) -> list:
  """Text markers hanging from the top of `ax`, one per (x in data units, text), left-aligned at x: each on
  the highest row (rows a line apart, downwards) where its box keeps `pad` pixels from every marker placed
  before (markers are placed left to right). Call once the layout is final. Returns the annotations in
  input order."""
  renderer = ax.figure.canvas.get_renderer()
  placed, out = [], [None] * len(markers)
  line = 1.3 * FONT  # points between rows
  for k in sorted(range(len(markers)), key=lambda k: float(ax.convert_xunits(markers[k][0]))):
    x, text = markers[k]
    row = 0
    while True:
      note = ax.annotate(
        text,
        (x, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(1, -1 - row * line),
        textcoords="offset points",
        fontsize=FONT,
        va="top",
      )
      box = note.get_window_extent(renderer)
      if not any(box.padded(pad).overlaps(other) for other in placed):
        break
      note.remove()
      row += 1
    placed.append(box)
    out[k] = note
  return out


def discord_figure(
  units: UnitErrors,
  scores: np.ndarray,
  discords: list[tuple[int, int, int, float]],
  splits: AnomalySplits,
  title: str = "",
):
  """The unsupervised figure (see save_discord_plot); the caller saves or closes it."""
  plt = _pyplot()
  parts = units.parts
  fig, axes = plt.subplots(2 * len(parts), 1, figsize=(12, 2.6 * len(parts)), dpi=90, squeeze=False)
  markers: list[list[tuple[object, str]]] = [[] for _ in parts]
  for i, (seg, sl) in enumerate(parts):
    t = segment_x(seg, splits.downsample)
    top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
    top.plot(t, seg.values[seg.lo : seg.hi], lw=0.6)
    if splits.labelled:
      _shade_labels((top, bottom), t, seg.labels[seg.lo : seg.hi])
    for rank, (j, lo, hi, _) in enumerate(discords, 1):
      if j == i:
        for ax in (top, bottom):
          ax.axvspan(t[lo], t[min(hi, len(t)) - 1], color="tab:green", alpha=0.25)
        markers[i].append((t[lo], f"#{rank}"))
    bottom.plot(t, scores[sl], lw=0.6, color="tab:gray")
    what = (
      "labelled anomalies red, top discords green" if splits.labelled else "top discords green (no labels)"
    )
    top.set_title(f"{seg.series}: {what}, numbered by rank", fontsize=9)
    bottom.set_ylabel("score", fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.canvas.draw()  # settles the axes limits, so markers are placed where they will be drawn
  for i in range(len(parts)):
    place_markers(axes[2 * i, 0], markers[i])
  return fig


def save_discord_plot(
  path: str,
  units: UnitErrors,
  scores: np.ndarray,
  discords: list[tuple[int, int, int, float]],
  splits: AnomalySplits,
  title: str = "",
) -> str:
  """PNG for unsupervised scoring: per series, the values with labelled anomalies (red; when there are
  labels) and the top discords (green, numbered by rank, the numbers staggered so none overlaps another)
  above the point scores. Returns the path."""
  return _save(discord_figure(units, scores, discords, splits, title), path)
