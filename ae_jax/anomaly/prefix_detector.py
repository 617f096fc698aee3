"""Discords after a normal prefix (the UCR archive's protocol): score every window after `train_end` from
nothing but the series' values and `train_end`, and name the top non-overlapping candidates.

The window is `window` points, or when 0 the dominant autocorrelation period of the prefix
(`series_segments.dominant_period`). Each method gives every query window (start >= train_end) a score;
larger is more anomalous:
  mp          z-normalised distance to the nearest window of the whole series, trivial matches left out
              (the matrix profile's discord: the archive's baseline)
  mp_left     z-normalised distance to the nearest earlier window, prefix included (the left matrix profile,
              as DAMP: a repeated anomaly does not hide the first occurrence)
  mp_prefix   z-normalised distance to the nearest window of the prefix (an AB-join against normal data)
  mp_raw      the same without z-normalisation (level and amplitude count)
  ae_error    reconstruction error of a window autoencoder trained on the prefix (`window_ae`)
  ae_latent   distance of the window's code to the nearest prefix code (a discord in the latent space)
With several methods or `scales` (window lengths as multiples of the window), each score profile is
placed at its windows' centres and divided by its largest value over the query windows, and the profiles
are summed: a location wins when several views agree it is unusual.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ae_jax.anomaly import ucr
from ae_jax.anomaly.matrix_profile import nearest_distances
from ae_jax.anomaly.window_ae import WindowAEOptions, WindowAutoencoder, latent_discords
from ae_jax.core.errors import ConfigError
from ae_jax.data.series_segments import dominant_period

METHODS = ("mp", "mp_left", "mp_prefix", "mp_raw", "ae_error", "ae_latent")


@dataclasses.dataclass(frozen=True)
class DetectorOptions:
  """What is scored and how (see the module docstring)."""

  # the best top-1 and top-3 of the measured sums on the archive's development series (docs/anomaly.md)
  methods: tuple[str, ...] = ("mp_prefix", "ae_latent")
  window: int = 0  # points; 0: the dominant period of the prefix
  max_window: int = 400  # the longest period the automatic rule picks
  scales: tuple[float, ...] = (0.5, 1.0, 2.0)
  top_k: int = 3
  ae: WindowAEOptions = WindowAEOptions()

  def check(self) -> None:
    """Raises ConfigError for options that cannot work (before any compute)."""
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown or not self.methods:
      raise ConfigError(f"unknown detector method(s) {unknown}; choose from {list(METHODS)}")
    if self.window < 0 or self.max_window < 8 or self.top_k < 1 or any(s <= 0 for s in self.scales):
      raise ConfigError(
        "the detector needs window >= 0 (0: automatic), max_window >= 8, top_k >= 1 and scales > 0"
      )


@dataclasses.dataclass(frozen=True)
class Detection:
  """The window used (points), how it was chosen, the combined score per point [n] (NaN before the first
  query window's centre) and the top-k predicted locations (points, best first)."""

  window: int
  window_rule: str
  scores: np.ndarray
  locations: list[int]


def choose_window(values: np.ndarray, train_end: int, options: DetectorOptions) -> tuple[int, str]:
  """(window in points, the phrase saying how it was chosen)."""
  if options.window:
    return options.window, "given"
  return dominant_period(values[:train_end], high=options.max_window), "dominant period of the prefix"


def _method_scores(
  values: np.ndarray, train_end: int, m: int, method: str, ae: WindowAEOptions
) -> np.ndarray:
  """Scores [n - m + 1 - train_end] of the windows starting at train_end.. for one method and length m."""
  last = len(values) - m + 1
  if method in ("mp", "mp_left"):
    return nearest_distances(values, m, query=(train_end, last), left=method == "mp_left")
  if method in ("mp_prefix", "mp_raw"):
    ref = (0, train_end - m + 1)
    return nearest_distances(
      values, m, query=(train_end, last), reference=ref, normalise=method == "mp_prefix"
    )
  model = WindowAutoencoder(values, train_end, m, ae)
  errors, codes = model.errors_and_codes(train_end, last)
  if method == "ae_error":
    return errors
  return latent_discords(codes, model.errors_and_codes(0, train_end - m + 1)[1])


def score_profile(values: np.ndarray, train_end: int, window: int, options: DetectorOptions) -> np.ndarray:
  """The combined score per point [n] of values [n] (float64) with the normal prefix values[:train_end] and
  the window in points: each method's and length's window scores placed at the windows' centres, divided by
  their largest value, summed; NaN before the first query window's centre. Raises ConfigError when the
  prefix or the series is too short for the longest window."""
  lengths = sorted({max(int(round(window * s)), 4) for s in options.scales})
  if train_end < 2 * max(lengths) or len(values) - train_end < max(lengths):
    raise ConfigError(
      f"a window of {max(lengths)} points needs a prefix of at least {2 * max(lengths)} points and as many "
      f"after it (prefix {train_end}, series {len(values)}); pass a shorter window or smaller scales"
    )
  total = np.zeros(len(values))
  for length in lengths:
    for method in options.methods:
      s = _method_scores(values, train_end, length, method, options.ae)
      top = np.max(s[np.isfinite(s)]) if np.isfinite(s).any() else 1.0
      centre = train_end + length // 2
      total[centre : centre + len(s)] += np.nan_to_num(s / max(top, 1e-12), nan=0.0, posinf=1.0)
  scores = np.full(len(values), np.nan)
  first = train_end + window // 2
  scores[first:] = total[first:]
  return scores


def detect_after_prefix(
  values: np.ndarray, train_end: int, options: DetectorOptions = DetectorOptions()
) -> Detection:
  """Runs the detector on values [n] with the normal prefix values[:train_end] (nothing after it trains
  the autoencoder). Raises ConfigError when the prefix or the series is too short for the window."""
  options.check()
  values = np.asarray(values, np.float64)
  m, rule = choose_window(values, train_end, options)
  scores = score_profile(values, train_end, m, options)
  return Detection(m, rule, scores, ucr.top_indices(scores, options.top_k, m, start=train_end + m // 2))
