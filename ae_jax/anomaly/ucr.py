"""The UCR Time Series Anomaly Archive's format and scoring rule (Wu and Keogh, KDD Cup 2021).

A series file is named `<anything>_<train_end>_<begin>_<end>.txt` and holds one value per line, or all
values on one line separated by spaces (8 of the archive's 250 files). The points before `train_end` are
normal; exactly one anomaly lies in [begin, end) after them (counted from 0). A detector names one
location; it is correct when that location lies in [begin - 100, end + 100] (the competition's rule).
Top-k counts a series when any of the k best non-overlapping candidates is correct.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from ae_jax.core.errors import DataError, DataNotFoundError

SLACK = 100  # points either side of the labelled range that still count (the competition's rule)
_NAME = re.compile(r"^(?P<stem>.+)_(?P<train_end>\d+)_(?P<begin>\d+)_(?P<end>\d+)\.txt$")


@dataclasses.dataclass(frozen=True)
class UcrSeries:
  """One series: values [n] (float64), the normal prefix's end, and the labelled anomaly [begin, end)."""

  name: str
  values: np.ndarray
  train_end: int
  begin: int
  end: int


def parse_name(file_name: str) -> tuple[int, int, int] | None:
  """(train_end, begin, end) from a UCR file name, or None when the name does not match the format."""
  m = _NAME.match(os.path.basename(file_name))
  return None if m is None else (int(m["train_end"]), int(m["begin"]), int(m["end"]))


def series_files(folder: str) -> list[str]:
  """The UCR-format files of `folder`, sorted by name. Raises DataNotFoundError for a missing folder or one
  without any such file."""
  if not os.path.isdir(folder):
    raise DataNotFoundError(f"{folder} is not a folder; pass the folder that holds the UCR .txt files")
  names = sorted(f for f in os.listdir(folder) if parse_name(f) is not None)
  if not names:
    raise DataNotFoundError(
      f"no UCR-format series in {folder}: file names must end _<train_end>_<begin>_<end>.txt"
    )
  return [os.path.join(folder, f) for f in names]


def read_series(path: str) -> UcrSeries:
  """Reads one UCR file (one value per line, or space-separated values on any line). Raises DataError for
  values that are not numbers, NaN values, or a train_end / anomaly outside the series."""
  parsed = parse_name(path)
  if parsed is None:
    raise DataError(f"{path}: the name must end _<train_end>_<begin>_<end>.txt")
  train_end, begin, end = parsed
  try:
    with open(path) as f:
      values = np.array(f.read().split(), np.float64)
  except ValueError as e:
    raise DataError(f"{path} holds a value that is not a number ({e}); fix or remove the file") from None
  name = os.path.basename(path)
  if not np.isfinite(values).all():
    raise DataError(f"{name} holds NaN or infinite values; fill them before scoring")
  if not 2 <= train_end < len(values):
    raise DataError(
      f"{name}: train_end {train_end} is outside the series of {len(values)} points; fix its file name"
    )
  if not (train_end <= begin < end <= len(values) + SLACK):
    raise DataError(f"{name}: the anomaly [{begin}, {end}) must lie after train_end {train_end}")
  return UcrSeries(name, values, train_end, begin, end)


def is_correct(location: int, begin: int, end: int, slack: int = SLACK) -> bool:
  """The competition's rule: a predicted location counts when begin - slack <= location <= end + slack."""
  return begin - slack <= location <= end + slack


def top_indices(scores: np.ndarray, k: int, exclusion: int, start: int = 0) -> list[int]:
  """Indices of the k highest scores [n] at least `exclusion` apart (greedy, highest first; each pick
  removes the indices within exclusion - 1 of it); only indices >= `start` count, NaN never wins."""
  s = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float64)
  s[:start] = -np.inf
  out = []
  for _ in range(k):
    i = int(np.argmax(s))
    if not np.isfinite(s[i]):
      break
    out.append(i)
    s[max(i - exclusion + 1, 0) : i + exclusion] = -np.inf
  return out
