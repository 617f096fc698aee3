"""Reconstruction-error vectors of windows, points and sequences (numpy, apart from the model call).

A point's error vector e_i [d] is the mean of |x_i - x'_i| over the windows that cover it (optionally
divided by the mean error at each window position first); a window unit (a beat) is |x - x'| flattened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ae_jax.data.series_file import Segment, windows


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

  segment: Segment
  starts: np.ndarray
  errors: np.ndarray


def window_errors(
  segments: list[Segment],
  reconstruct: Callable[[np.ndarray], np.ndarray],
  window: int,
  stride: int,
) -> list[WindowErrors]:
  """Reconstructs every window that overlaps a segment's points [lo, hi) (one batched pass)."""
  short = [s.series for s in segments if len(s.values) < window]
  if short:
    raise ValueError(f"series {short} are shorter than one window ({window}): their points cannot be scored")
  cut = [windows(s.values, window, stride, s.lo, s.hi) for s in segments]
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
  parts: list[tuple[Segment, slice]]


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
