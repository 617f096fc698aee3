"""series_file's train_end mode (the UCR anomaly archive's protocol): which rows of each series train the
model, which validate it, and which are scored, and the window when the data chooses it."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError
from ae_jax.data import series_table
from ae_jax.data.series_segments import Segment, dominant_period


def cut_at(s: Segment, end: int) -> Segment:
  """The segment with its series cut at point `end`, so no window that scores it reaches past `end`."""
  times = None if s.times is None else s.times[:end]
  return dataclasses.replace(s, values=s.values[:end], labels=s.labels[:end], times=times)


def parse_train_end(text: str, files: list[str]) -> dict[str, int]:
  """'N' (every file) or 'FILE:N,...' (each file named) -> {file: rows before which the series is normal}."""
  items = series_table.split_list(text)
  if len(items) == 1 and items[0].isdigit():
    return {f: int(items[0]) for f in files}
  out = {}
  for item in items:
    file, _, rows = item.rpartition(":")
    if file not in files or not rows.isdigit():
      raise ConfigError(
        f"config.data.train_end: cannot read {item!r}; use 'N' (every file) or 'FILE:N' with FILE in {files}"
      )
    out[file] = int(rows)
  if set(out) != set(files):
    raise ConfigError(f"config.data.train_end names {sorted(out)}; name every file of {files}")
  return out


def prefix_ranges(
  data: ml_collections.ConfigDict, series: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]
) -> tuple[dict[str, list[tuple[str, int, int]]], int, str]:
  """Ranges (rows) by role for the train_end mode: train and validation within each normal prefix, "score"
  after it; and the window (points) with the phrase saying how it was chosen."""
  factor, share = int(data.downsample), float(data.validation_share)
  if not 0.0 < share < 1.0:
    raise ConfigError(f"config.data.validation_share must lie strictly between 0 and 1, got {share}")
  ends = {f: rows // factor for f, rows in parse_train_end(str(data.train_end), names).items()}
  window, rule = int(data.window), "config.data.window"
  if window == 0:
    first = series[names[0]][0][: ends[names[0]], 0]
    window = dominant_period(first, high=int(data.max_window))
    column = " (its first column)" if series[names[0]][0].shape[1] > 1 else ""
    rule = f"the dominant period of {names[0]}'s prefix{column}, {len(first)} points"
  ranges: dict[str, list[tuple[str, int, int]]] = {"train": [], "validation": [], "score": []}
  for f in names:
    end, n = ends[f], len(series[f][0])
    held = int(round(end * share))
    if not 0 < end < n:
      raise ConfigError(
        f"config.data.train_end for {f} is {end * factor} rows; it must lie inside the series "
        f"({n * factor} rows) so that rows after it are scored"
      )
    if min(end - held, held) < window:
      raise ConfigError(
        f"config.data.train_end: {f}'s prefix of {end} points splits into {end - held} training and {held} "
        f"validation points, fewer than a window of {window} in one of them; shorten config.data.window or "
        "change config.data.validation_share"
      )
    ranges["train"].append((f, 0, (end - held) * factor))
    ranges["validation"].append((f, (end - held) * factor, end * factor))
    ranges["score"].append((f, end * factor, n * factor))
  return ranges, window, rule
