"""Time series for the LSTM autoencoders: Keogh's discord series, ECG5000, and synthetic sequences.

Anomaly data sets (Malhotra et al. 2016, arXiv 1607.00148) are split in time into four roles, each a list
of contiguous `Segment`s (`DISCORDS` lists them per data set, in indices of the original files):

* train (the paper's sN): windows with no anomalous point train the model;
* fit (vN1): normal points whose reconstruction errors fit the error Gaussian (and monitor training);
* val (vN2 + vA): normal and anomalous points; the threshold is chosen on them;
* test (tN + tA): normal and anomalous points; precision, recall, F-beta and ROC-AUC are reported on them.

Every series is normalised with the mean and standard deviation of its data set's training points, and
may be downsampled first (means over blocks; a block is anomalous when any of its points is). Training
windows stay inside their segment; the windows that score a segment's points may reach into the rest of
the series. A point near a series' start is covered by few windows, so its score is noisy: each series
opens with a stretch (at least one window) that no role scores. ECG5000 is split by beat instead (each
beat is one window of 140 points).

The offline copies live in `../shared/data` beside the project (`config.data.root` or `$AE_JAX_DATA_ROOT`
point elsewhere): `discords/*.txt` with `discords/labels.json`, and `ecg5000/ECG5000_TRAIN.txt`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"  # <project>/../shared/data
ROLES = ("train", "fit", "val", "test")


@dataclasses.dataclass(frozen=True)
class DiscordSet:
  """One anomaly data set: files, value columns, downsampling, window, and segments (file, role, lo, hi)
  in indices of the original files (hi exclusive; multiples of `downsample`)."""

  files: tuple[str, ...]
  columns: tuple[int, ...]
  downsample: int
  window: int
  stride: int  # training windows
  segments: tuple[tuple[str, str, int, int], ...]


DISCORDS: dict[str, DiscordSet] = {
  # 15-minute demand for 1997 (672 points a week); downsampled by 8 a window of 84 is one week (the paper's).
  # Anomalies: 8254-8998, 11348-12143 (holiday weeks), 33883-34601 (Christmas). Cuts at whole weeks; the
  # first week is context only.
  "power_demand": DiscordSet(
    files=("power_data.txt",),
    columns=(0,),
    downsample=8,
    window=84,
    stride=1,
    segments=(
      ("power_data.txt", "val", 672, 10752),
      ("power_data.txt", "test", 10752, 14112),
      ("power_data.txt", "train", 14112, 27552),
      ("power_data.txt", "fit", 27552, 30912),
      ("power_data.txt", "test", 30912, 35040),
    ),
  ),
  # Marotta valve: five ~1000-point cycles per file (some cycles are shared between files); downsampled
  # by 4 a window of 250 is one cycle. TEK14's two anomalies validate (its first cycle is context only),
  # TEK16's and TEK17's test.
  "space_shuttle": DiscordSet(
    files=("TEK14.txt", "TEK16.txt", "TEK17.txt"),
    columns=(0,),
    downsample=4,
    window=250,
    stride=2,
    segments=(
      ("TEK14.txt", "val", 1000, 3000),
      ("TEK14.txt", "train", 3000, 5000),
      ("TEK16.txt", "train", 0, 3000),
      ("TEK16.txt", "test", 3000, 5000),
      ("TEK17.txt", "test", 1000, 3000),
      ("TEK17.txt", "fit", 3000, 5000),
    ),
  ),
  # Two ECG leads at 250 Hz (a beat is ~205 points; the paper's window is 208). One anomaly (4230-4430),
  # so the validation split has none: the threshold then falls back to the largest validation score. The
  # first 1000 points are context only.
  "ecg_qtdbsel102": DiscordSet(
    files=("qtdbsel102.txt",),
    columns=(1, 2),
    downsample=1,
    window=208,
    stride=4,
    segments=(
      ("qtdbsel102.txt", "test", 1000, 9000),
      ("qtdbsel102.txt", "train", 9000, 33000),
      ("qtdbsel102.txt", "fit", 33000, 39000),
      ("qtdbsel102.txt", "val", 39000, 45000),
    ),
  ),
}

ECG5000_LENGTH = 140
# ECG5000 beats per role: fractions of the normal (class 1) and of the anomalous (classes 2-5) beats.
ECG5000_SPLIT = {"train": (0.6, 0.0), "fit": (0.1, 0.0), "val": (0.1, 0.3), "test": (0.2, 0.7)}


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


@dataclasses.dataclass(frozen=True)
class AnomalySplits:
  """Segments by role ("train", "fit", "val", "test"), the window length, and the unit that is scored:
  "point" (each point, from the windows that cover it) or "window" (each segment is one window: a beat)."""

  segments: dict[str, list[Segment]]
  window: int
  stride: int
  unit: str
  downsample: int = 1


def data_root(data: ml_collections.ConfigDict) -> Path:
  """The folder holding discords/ and ecg5000/: config.data.root, else $AE_JAX_DATA_ROOT, else default."""
  return Path(data.get("root") or os.environ.get("AE_JAX_DATA_ROOT") or DEFAULT_ROOT)


def _require(path: Path) -> Path:
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: the time-series data sets are read from a local copy; point --config.data.root "
      f"(or $AE_JAX_DATA_ROOT) at the folder holding discords/ and ecg5000/ (default {DEFAULT_ROOT})"
    )
  return path


def interval_labels(n: int, intervals: Sequence[Sequence[int]]) -> np.ndarray:
  """Point labels [n] (bool) from labels.json intervals, exclusive at both ends (lo < i < hi)."""
  labels = np.zeros(n, bool)
  for lo, hi in intervals:
    labels[lo + 1 : hi] = True
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


def discord_splits(name: str, data: ml_collections.ConfigDict) -> AnomalySplits:
  """The segments of discord data set `name` (a key of DISCORDS), normalised with training statistics.

  config.data may override `window`, `stride` (training windows) and `downsample`.
  """
  spec = DISCORDS[name]
  factor = int(data.get("downsample", spec.downsample))
  folder = data_root(data) / "discords"
  with open(_require(folder / "labels.json")) as f:
    intervals = json.load(f)
  series = {}
  for file in spec.files:
    raw = np.loadtxt(_require(folder / file), ndmin=2)[:, spec.columns]
    series[file] = downsample(raw, interval_labels(len(raw), intervals.get(file, [])), factor)
  train = np.concatenate(
    [series[f][0][lo // factor : hi // factor] for f, r, lo, hi in spec.segments if r == "train"]
  )
  mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
  segments: dict[str, list[Segment]] = {role: [] for role in ROLES}
  for file, role, lo, hi in spec.segments:
    values, labels = series[file]
    normalised = ((values - mean) / std).astype(np.float32)
    segments[role].append(Segment(file, role, normalised, labels, lo // factor, hi // factor))
  window, stride = int(data.get("window", spec.window)), int(data.get("stride", spec.stride))
  return AnomalySplits(segments, window, stride, unit="point", downsample=factor)


def load_ecg5000(root: Path) -> tuple[np.ndarray, np.ndarray]:
  """ECG5000_TRAIN.txt -> (beats [500, 140] float64, classes [500] int: 1 normal, 2-5 anomalous)."""
  table = np.loadtxt(_require(root / "ecg5000" / "ECG5000_TRAIN.txt"))
  return table[:, 1:], table[:, 0].astype(int)


def ecg5000_splits(data: ml_collections.ConfigDict) -> AnomalySplits:
  """ECG5000 beats per role (ECG5000_SPLIT fractions; order from config.data.split_seed), one beat a
  segment [140, 1]; normalised with the training beats' mean and standard deviation."""
  beats, classes = load_ecg5000(data_root(data))
  rng = np.random.default_rng(int(data.get("split_seed", 0)))
  members: dict[str, list[int]] = {role: [] for role in ROLES}
  for column, anomalous in ((0, False), (1, True)):
    idx = rng.permutation(np.flatnonzero((classes != 1) == anomalous))
    cuts = np.round(np.cumsum([ECG5000_SPLIT[r][column] for r in ROLES]) * len(idx)).astype(int)
    for role, part in zip(ROLES, np.split(idx, cuts[:-1]), strict=True):
      members[role] += part.tolist()
  train = beats[members["train"]]
  normalised = ((beats - train.mean()) / train.std()).astype(np.float32)[..., None]  # [500, 140, 1]
  segments = {
    role: [
      Segment(
        f"beat {i} (class {classes[i]})",
        role,
        normalised[i],
        np.full(ECG5000_LENGTH, classes[i] != 1),
        0,
        ECG5000_LENGTH,
      )
      for i in idx
    ]
    for role, idx in members.items()
  }
  return AnomalySplits(segments, ECG5000_LENGTH, ECG5000_LENGTH, unit="window")


ANOMALY_DATASETS = (*DISCORDS, "ecg5000")


def anomaly_splits(data: ml_collections.ConfigDict) -> AnomalySplits:
  """The anomaly splits of `config.data.name` (one of ANOMALY_DATASETS)."""
  if data.name == "ecg5000":
    return ecg5000_splits(data)
  if data.name not in DISCORDS:
    raise ValueError(
      f"config.data.name '{data.name}' has no labelled anomalies; anomaly detection needs one of "
      f"{list(ANOMALY_DATASETS)}"
    )
  return discord_splits(data.name, data)


def normal_windows(segments: Sequence[Segment], length: int, stride: int) -> np.ndarray:
  """Windows [W, length, d] of `segments` that contain no anomalous point."""
  out = []
  for s in segments:
    w, starts = windows(s.values[s.lo : s.hi], length, stride)
    bad = np.array([s.labels[s.lo + a : s.lo + a + length].any() for a in starts], bool)
    out.append(w[~bad])
  return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- loaders for the trainer


def _info(shape: tuple[int, ...]) -> Any:
  from ae_jax.data import DatasetInfo  # here: ae_jax.data imports this module

  def preprocess(record: dict, index: int) -> dict[str, np.ndarray]:
    return dict(record)

  return DatasetInfo(shape, preprocess, class_names=None, to_image=None)


def _source(arrays: dict[str, np.ndarray]) -> Any:
  from ae_jax.data import ArraySource

  return ArraySource(arrays)


def _windows_source(w: np.ndarray) -> Any:
  return _source({"x": w, "label": np.zeros(len(w), np.int32)})


def load_anomaly_dataset(data: ml_collections.ConfigDict) -> tuple[Any, Any, Any]:
  """(train windows (sN), fit windows (vN1, the monitored "test" source), DatasetInfo): {"x" [L, d], "label"}.

  The trainer's test loss is thus the reconstruction error of normal held-out windows (the paper's early
  stopping set; windows a quarter window apart); anomaly metrics come from `ae_jax.anomaly` after training.
  """
  splits = anomaly_splits(data)
  train = normal_windows(splits.segments["train"], splits.window, splits.stride)
  fit = normal_windows(splits.segments["fit"], splits.window, max(splits.window // 4, 1))
  return _windows_source(train), _windows_source(fit), _info(train.shape[1:])


def anomaly_example_shape(data: ml_collections.ConfigDict) -> tuple[int, int]:
  """(window, channels) of an anomaly data set without reading it."""
  if data.name == "ecg5000":
    return (ECG5000_LENGTH, 1)
  spec = DISCORDS[data.name]
  return (int(data.get("window", spec.window)), len(spec.columns))


def synthetic_sequences(
  num: int, time: int, features: int, seed: int, vocab_size: int = 0, min_length: int | None = None
) -> dict[str, np.ndarray]:
  """Variable-length sequences padded to `time` with a prefix mask: noisy sines [num, time, features]
  (float32) or, with vocab_size > 0, tokens [num, time] (int32) from a sticky random walk over the vocab.

  Returns {"x", "mask" [num, time] float32, "label" [num] int32}; padding is zeros.
  """
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_length or max(time // 2, 1), time + 1, num)
  mask = (np.arange(time)[None, :] < lengths[:, None]).astype(np.float32)
  if vocab_size:
    steps = rng.choice([-1, 0, 0, 1], size=(num, time))
    x = (rng.integers(0, vocab_size, (num, 1)) + np.cumsum(steps, axis=1)) % vocab_size
    x = (x * mask).astype(np.int32)
  else:
    t = np.arange(time)[None, :, None]
    freq, phase = rng.uniform(0.05, 0.3, (num, 1, features)), rng.uniform(0, 2 * np.pi, (num, 1, features))
    x = np.sin(2 * np.pi * freq * t + phase) + 0.05 * rng.normal(size=(num, time, features))
    x = (x * mask[..., None]).astype(np.float32)
  return {"x": x, "mask": mask, "label": np.zeros(num, np.int32)}


def synthetic_shape(data: ml_collections.ConfigDict) -> tuple[int, ...]:
  time = int(data.get("time", 32))
  return (time,) if data.get("vocab_size", 0) else (time, int(data.get("features", 2)))


def load_synthetic_sequences(data: ml_collections.ConfigDict) -> tuple[Any, Any, Any]:
  """Synthetic variable-length sequences (config.data: time, features or vocab_size, num_train, num_test)."""
  shape = synthetic_shape(data)
  features, vocab = int(data.get("features", 2)), int(data.get("vocab_size", 0))
  make = lambda n, seed: _source(synthetic_sequences(n, shape[0], features, seed, vocab))  # noqa: E731
  return make(int(data.get("num_train", 512)), 1), make(int(data.get("num_test", 128)), 2), _info(shape)
