"""The pieces of a series that anomaly detection works on: segments of a normalised series by role, their
windows, block downsampling, interval labels, and the dominant period that picks a window from the data.
Pure numpy; `series_file` builds them from files, `ae_jax.anomaly` scores them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Segment:
  """Points [lo, hi) of one normalised series: values [n, d] and labels [n] (True = anomalous) of the whole
  series, so windows that score the segment's points can reach past its ends (no edge effect there)."""

  series: str
  role: str
  values: np.ndarray
  labels: np.ndarray
  lo: int
  hi: int
  times: np.ndarray | None = None  # [n] datetime64 or float64 (config.data.time_column), or None


@dataclasses.dataclass(frozen=True)
class AnomalySplits:
  """Segments by role (ROLES, plus "score" in unsupervised mode), the window length and training stride,
  the unit that is scored ("point": each point, from the windows that cover it; "window": each segment is
  one window, e.g. a beat), the downsampling factor, whether the ranges were given (semi-supervised), and
  whether only the points after a normal prefix are scored (the UCR archive's protocol, `prefix`)."""

  segments: dict[str, list[Segment]]
  window: int
  stride: int
  unit: str
  downsample: int = 1
  supervised: bool = True
  labelled: bool = True
  prefix: bool = False  # "score" holds the points after each series' normal prefix (config.data.train_end)
  window_rule: str = "config.data.window"  # how the window was chosen, for the outputs


def interval_labels(n: int, intervals: Sequence[Sequence[int]], ends: str = "half_open") -> np.ndarray:
  """Point labels [n] (bool) from anomalous intervals: lo <= i < hi ("half_open") or lo < i < hi ("open")."""
  labels = np.zeros(n, bool)
  for lo, hi in intervals:
    labels[lo + (ends == "open") : hi] = True
  return labels


def downsample(values: np.ndarray, labels: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
  """Block means of values [n, d] and block-wise `any` of labels [n]; a partial last block is dropped."""
  if factor == 1:
    return values, labels
  n = len(values) // factor * factor
  return (
    values[:n].reshape(n // factor, factor, -1).mean(axis=1),
    labels[:n].reshape(n // factor, factor).any(axis=1),
  )


def windows(
  values: np.ndarray, length: int, stride: int, lo: int = 0, hi: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """The windows [W, length, d] of values [n, d] that overlap points [lo, hi) (default: all), starting at
  lo + k * stride (k may be negative), plus one ending at hi - 1 or the series' end, so every point is
  covered (stride <= length); returns (windows, start indices [W]). Windows may reach past lo and hi but
  stay inside the series; none when n < length."""
  n, hi = len(values), len(values) if hi is None else hi
  if n < length:
    return np.zeros((0, length, values.shape[1]), values.dtype), np.zeros(0, np.int64)
  last = min(hi - 1, n - length)
  starts = np.arange(lo - (length - 1) // stride * stride, last + 1, stride)
  starts = starts[starts >= 0]
  if starts[-1] != last:
    starts = np.append(starts, last)
  return np.stack([values[a : a + length] for a in starts]), starts


def normal_windows(segments: Sequence[Segment], length: int, stride: int) -> np.ndarray:
  """Windows [W, length, d] inside `segments` that contain no anomalous point."""
  out = [np.zeros((0, length, segments[0].values.shape[1]), np.float32)] if segments else []
  for s in segments:
    w, starts = windows(s.values[s.lo : s.hi], length, stride)
    bad = np.array([s.labels[s.lo + a : s.lo + a + length].any() for a in starts], bool)
    out.append(w[~bad])
  return np.concatenate(out).astype(np.float32)


def all_windows(segments: Sequence[Segment], length: int, stride: int) -> np.ndarray:
  """Every window [W, length, d] inside `segments`."""
  parts = [windows(s.values[s.lo : s.hi], length, stride)[0] for s in segments]
  return np.concatenate(parts).astype(np.float32)


def _autocorrelation(x: np.ndarray, lags: int) -> np.ndarray:
  """The autocorrelation [lags + 1] of x (FFT, mean removed, 1 at lag 0)."""
  x = np.asarray(x, np.float64) - np.mean(x)
  spectrum = np.fft.rfft(x, 2 * len(x))
  acf = np.fft.irfft(spectrum * np.conj(spectrum))[: lags + 1]
  return acf / (acf[0] + 1e-12)


def dominant_period(values: np.ndarray, low: int = 8, high: int = 1000) -> int:
  """The dominant period of values [n] in points: the lag in [low, high] (at most n / 3) of the highest
  local maximum of the autocorrelation; `low` when there is none.

  The autocorrelation is the mean of those of consecutive chunks of 4 x high points (the whole series when
  it is shorter than two chunks), as Welch averages spectra: a baseline that wanders over the series (an
  ECG's breathing, a sensor's drift) would otherwise dominate one long autocorrelation and hide the
  period of the shape that repeats.
  """
  x = np.asarray(values, np.float64)
  n = len(x)
  high = max(min(high, n // 3), low + 2)
  chunk = 4 * high
  starts = range(0, n - chunk + 1, chunk) if n >= 2 * chunk else [0]
  size = chunk if n >= 2 * chunk else n
  acf = np.mean([_autocorrelation(x[a : a + size], high + 1) for a in starts], axis=0)
  lags = np.arange(low, high + 1)
  peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
  return int(peaks[np.argmax(acf[peaks])]) if len(peaks) else low
