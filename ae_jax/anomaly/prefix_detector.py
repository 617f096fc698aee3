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
  mp_diff     mp_prefix on the first difference of the series (a change of slope, noise or a missing
              beat that keeps the window's overall shape)
  mp_diff_raw mp_raw on the first difference: the size of the changes counts (added noise, or a louder
              stretch of the same shape, that z-normalising the difference scales away)
  ae_error    reconstruction error of a window autoencoder trained on the prefix (`window_ae`)
  ae_latent   distance of the window's code to the nearest prefix code (a discord in the latent space)
With several methods or `scales` (window lengths as multiples of the window), each (method, length) view's
scores are placed at its windows' centres and divided by their largest value over the query windows
(`view_profiles`), and the views are summed (`combine`): a location wins when several views agree it is
unusual.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ae_jax.anomaly import ucr
from ae_jax.anomaly.matrix_profile import nearest_distances
from ae_jax.anomaly.window_ae import WindowAEOptions, WindowAutoencoder, latent_discords
from ae_jax.core.errors import ConfigError
from ae_jax.data.series_segments import dominant_period

METHODS = ("mp", "mp_left", "mp_prefix", "mp_raw", "mp_diff", "mp_diff_raw", "ae_error", "ae_latent")


@dataclasses.dataclass(frozen=True)
class DetectorOptions:
  """What is scored and how (see the module docstring)."""

  # the best top-1 and top-3 of every sum of up to 4 methods at 1, 3 or 4 lengths on the archive's
  # development series (`experiments.anomaly_sweep`, docs/anomaly.md)
  methods: tuple[str, ...] = ("mp_left", "mp_diff", "ae_latent")
  window: int = 0  # points; 0: the dominant period of the prefix
  max_window: int = 400  # the longest period the automatic rule picks
  scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
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


def window_lengths(window: int, scales: tuple[float, ...]) -> list[int]:
  """The window lengths in points of `scales` x `window` (at least 4 points each), one per scale."""
  return [max(int(round(window * s)), 4) for s in scales]


def _view_scores(values: np.ndarray, train_end: int, m: int, methods: list[str], ae) -> dict[str, np.ndarray]:
  """Scores [n - m + 1 - train_end] of the windows of length m starting at train_end.. for each method (the
  autoencoder's two methods share one trained model)."""
  last = len(values) - m + 1
  prefix_windows = (0, train_end - m + 1)
  out: dict[str, np.ndarray] = {}
  diff = np.diff(values, prepend=values[0])  # one copy for both difference views (O(n), cheap)
  for method in methods:
    if method in ("mp", "mp_left"):
      out[method] = nearest_distances(values, m, query=(train_end, last), left=method == "mp_left")
    elif method in ("mp_prefix", "mp_raw"):
      normalise = method == "mp_prefix"
      out[method] = nearest_distances(
        values, m, query=(train_end, last), reference=prefix_windows, normalise=normalise
      )
    elif method in ("mp_diff", "mp_diff_raw"):  # the difference's windows start at point 1 (no made-up step)
      out[method] = nearest_distances(
        diff, m, query=(train_end, last), reference=(1, prefix_windows[1]), normalise=method == "mp_diff"
      )
  if {"ae_error", "ae_latent"} & set(methods):
    model = WindowAutoencoder(values, train_end, m, ae)
    errors, codes = model.errors_and_codes(train_end, last)
    if "ae_error" in methods:
      out["ae_error"] = errors
    if "ae_latent" in methods:
      out["ae_latent"] = latent_discords(codes, model.errors_and_codes(*prefix_windows)[1])
  return out


def check_lengths(
  n: int, train_end: int, lengths: list[int], fix: str = "pass a shorter window or smaller scales"
) -> None:
  """Raises ConfigError (ending with `fix`) when the prefix (train_end points) or the rest of a series of n
  points is too short for the longest window."""
  longest = max(lengths)
  if train_end < 2 * longest or n - train_end < longest:
    raise ConfigError(
      f"a window of {longest} points needs a prefix of at least {2 * longest} points and as many "
      f"after it (prefix {train_end}, series {n}); {fix}"
    )


def view_profiles(
  values: np.ndarray, train_end: int, window: int, options: DetectorOptions
) -> dict[tuple[str, int], np.ndarray]:
  """Every (method, window length in points) view of values [n] (float64) with the normal prefix
  values[:train_end], for the lengths of `options.scales` (scales that round to one length give one
  view): the window scores placed at the windows' centres and divided by their largest value, 0
  elsewhere: [n] float64 each. Raises ConfigError when the prefix or the series is too short for the
  longest window."""
  lengths = list(dict.fromkeys(window_lengths(window, options.scales)))
  check_lengths(len(values), train_end, lengths)
  views = {}
  for length in lengths:
    for method, s in _view_scores(values, train_end, length, list(options.methods), options.ae).items():
      top = np.max(s[np.isfinite(s)]) if np.isfinite(s).any() else 1.0
      placed = np.zeros(len(values))
      centre = train_end + length // 2
      placed[centre : centre + len(s)] = np.nan_to_num(s / max(top, 1e-12), nan=0.0, posinf=1.0)
      views[(method, length)] = placed
  return views


def combine(views: list[np.ndarray], train_end: int, window: int) -> np.ndarray:
  """The sum of view profiles [n] each, NaN before the first query window's centre (train_end +
  window // 2): the combined score per point [n]."""
  total = np.sum(views, axis=0)
  total[: train_end + window // 2] = np.nan
  return total


def score_profile(values: np.ndarray, train_end: int, window: int, options: DetectorOptions) -> np.ndarray:
  """The combined score per point [n] of values [n] (float64) with the normal prefix values[:train_end] and
  the window in points: the sum of every method's and length's view (`view_profiles`); NaN before the
  first query window's centre. Raises ConfigError when the prefix or the series is too short for the
  longest window."""
  views = view_profiles(values, train_end, window, options)
  return combine(list(views.values()), train_end, window)


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
