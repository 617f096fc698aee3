"""Your own time series (`config.data.name = "series_file"`): windows for the sequence autoencoders, and
the segments anomaly detection scores.

A series is a CSV or whitespace-separated text file (a header row of names is allowed) or a `.npy`
array, one row per time step (reading and its checks: `ae_jax.data.series_table`); `columns` picks the value
columns (0-based indices or header names; default all but the label and time columns), and only the picked
columns are read, so other columns may hold text. `time_column` (optional) is the time axis: ISO-8601 dates /
times or numbers, strictly increasing; the plots draw it and the discords report it. Several files (`path`
joined with ",") are several series sharing one model. Anomaly labels, optional: a JSON file of anomalous
`[start, end)` intervals (a list for one file, or {file name: list}), or a label column (`label_column`:
numbers or text; a row is normal when its label is one of `normal_values`, anything else is anomalous).
Values are downsampled by block means (`downsample`; a block is anomalous when any point is, and its time is
its first point's) and normalised with the mean and standard deviation of the training points. Rows, in
ranges and intervals, count a file's data rows from 0 (a header is not a row); messages about a file's
content name its 1-based line numbers instead, as an editor shows them.

Three modes:
* semi-supervised: index ranges per role, in rows of the original files ("lo:hi", several joined with
  ",", "FILE:lo:hi" with several files): `train_ranges` (their anomaly-free windows train the model),
  `validation_ranges` (normal points: monitor training and `keep_best`, and fit the error model),
  `threshold_ranges` (normal and anomalous points the threshold is chosen on; default: the validation
  ranges) and `test_ranges` (only reported).
* unsupervised (no ranges given): every window of every series trains the model, and every point is
  scored afterwards (`ae_jax.anomaly`: top-k discords).
* after a normal prefix (`train_end`, the UCR anomaly archive's protocol): the rows before train_end are
  normal; the first 1 - `validation_share` of them train the model, the rest are the validation split
  (monitoring, and the error model), and only the rows from train_end on are scored (top-k discords after
  the prefix). With `window = 0` the window is the dominant autocorrelation period of the first file's
  prefix (at most `max_window` points), and the outputs say so.
`layout = "windows"` reads a file whose rows are whole windows (UCR format, e.g. ECG5000: a class column
and the values), split per role by `normal_fractions` / `anomalous_fractions` of the normal / anomalous
rows (seeded by `split_seed`).

The trainer's splits are windows {"x" [window, d], "label"}: train (anomaly-free windows of the train
ranges or the prefix, every `stride` points), validation (anomaly-free windows of the validation ranges or
the prefix's held-out end, a quarter window apart) and test (every window of the test ranges, a quarter
window apart).
"""

from __future__ import annotations

import dataclasses
import json

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import dataset, series_prefix, series_table, sources
from ae_jax.data.series_segments import (  # noqa: F401 (re-exported: the series_file API)
  AnomalySplits,
  Segment,
  all_windows,
  dominant_period,
  downsample,
  interval_labels,
  normal_windows,
  windows,
)

ROLES = ("train", "validation", "threshold", "test")
LAYOUTS = ("series", "windows")


SERIES_OPTIONS = {
  "path": "",  # CSV / text / .npy file(s) joined with ","; relative: to the cwd, else to the data root
  "layout": "series",  # series: a row per time step | windows: a row per window (UCR format)
  # value columns: 0-based indices or header names joined with ","; "": every column but the label / time one
  "columns": "",
  # index or header name of a label column (numbers or text); "": none. A row is anomalous unless its label is
  # one of normal_values (numbers compare as numbers when every label is one, else labels compare as text).
  "label_column": "",
  "normal_values": "0",  # label-column values that mean normal, joined with ",", e.g. "0" or "ok,normal"
  # index or header name of a time column (series layout): ISO-8601 dates / times (2024-01-31T14:00:00) or
  # numbers, strictly increasing; the x axis of the plots and the discords' times. "": row numbers.
  "time_column": "",
  "labels": "",  # JSON of anomalous intervals: [[start, end), ...] or {file name: [...]}; "": none
  "label_ends": "half_open",  # half_open: start <= i < end | open: start < i < end
  "window": 0,  # points per window (series layout; 0 only with train_end: the dominant period of the prefix)
  "stride": 1,  # between training windows
  "downsample": 1,  # block means of this many points
  "train_ranges": "",
  "validation_ranges": "",
  "threshold_ranges": "",
  "test_ranges": "",
  # the UCR archive's protocol: rows before this are normal ("N", or "FILE:N,..." per file); the model trains
  # on them and the anomaly evaluator scores only the rows after them
  "train_end": "",
  "validation_share": 0.2,  # train_end mode: the last share of each prefix held out (monitoring, error model)
  "max_window": 400,  # train_end mode with window=0: the longest period the automatic window takes
  "normal_fractions": (0.6, 0.1, 0.1, 0.2),  # windows layout: normal rows per role (ROLES order)
  "anomalous_fractions": (0.0, 0.0, 0.3, 0.7),  # windows layout: anomalous rows per role
  "split_seed": 0,
}


# ----------------------------------------------------------------------------- reading files


_split_list = series_table.split_list


def _interval_file(data: ml_collections.ConfigDict, names: list[str]) -> dict[str, list]:
  """The labels JSON as {file name: intervals} for the given files."""
  path = sources.resolve_path(data.labels, data, "config.data.labels")
  with open(path) as f:
    content = json.load(f)
  if isinstance(content, list):
    if len(names) != 1:
      raise ConfigError(
        f"{path} holds one list of intervals but there are {len(names)} files; key it by file name"
      )
    return {names[0]: content}
  return {n: content.get(n, []) for n in names}


def _parse_ranges(text: str, files: list[str], what: str) -> list[tuple[str, int, int]]:
  """'lo:hi,FILE:lo:hi' -> [(file, lo, hi)]; a range without a file is in the only file."""
  out = []
  for item in _split_list(text):
    parts = item.split(":")
    if len(parts) == 2 and len(files) == 1:
      file, lo, hi = files[0], *parts
    elif len(parts) == 3 and parts[0] in files:
      file, lo, hi = parts
    else:
      raise ConfigError(
        f"config.data.{what}: cannot read {item!r}; use 'lo:hi' (one file) or 'FILE:lo:hi' with FILE in "
        f"{files}"
      )
    if not (lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
      raise ConfigError(f"config.data.{what}: {item!r} needs integers lo < hi")
    out.append((file, int(lo), int(hi)))
  return out


def _series_splits(data: ml_collections.ConfigDict) -> AnomalySplits:
  after_prefix = str(data.train_end) != ""
  if int(data.window) < 2 and not (after_prefix and int(data.window) == 0):
    raise ConfigError(
      "config.data.window (points per window) must be at least 2 for series_file (0 picks the dominant "
      "period of the normal prefix, with config.data.train_end)"
    )
  paths = [sources.resolve_path(p, data, "config.data.path") for p in _split_list(data.path)]
  names = [p.name for p in paths]
  if len(set(names)) != len(names):
    raise ConfigError(f"config.data.path names files with the same name twice: {names}")
  intervals = _interval_file(data, names) if data.labels else {}
  factor = int(data.downsample)
  series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  times: dict[str, np.ndarray | None] = {}
  labelled = bool(data.labels) or data.label_column != ""
  for path in paths:
    file = series_table.read_series(path, data)
    labels = file.labels
    if labels is None:
      labels = interval_labels(len(file.values), intervals.get(path.name, []), str(data.label_ends))
    series[path.name] = downsample(file.values, labels, factor)
    times[path.name] = (
      None if file.times is None else file.times[: len(series[path.name][0]) * factor : factor]
    )
  ranges = {role: _parse_ranges(data[f"{role}_ranges"], names, f"{role}_ranges") for role in ROLES}
  supervised = any(ranges.values())
  if after_prefix and supervised:
    raise ConfigError("config.data: give train_end (a normal prefix) or the *_ranges, not both")
  window, rule = int(data.window), "config.data.window"
  if after_prefix:
    ranges, window, rule = series_prefix.prefix_ranges(data, series, names)
  elif supervised and not (ranges["train"] and ranges["validation"] and ranges["test"]):
    raise ConfigError(
      "config.data: give train_ranges, validation_ranges and test_ranges (threshold_ranges optional), or "
      "none of them for unsupervised scoring of the whole series"
    )
  if not supervised and not after_prefix:
    _check_window_fits(series, window, factor)
    ranges = {"train": [(n, 0, len(series[n][0]) * factor) for n in names]}
  elif supervised and not ranges["threshold"]:
    ranges["threshold"] = ranges["validation"]
  train = np.concatenate([series[f][0][lo // factor : hi // factor] for f, lo, hi in ranges["train"]])
  mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
  normalised = {f: ((values - mean) / std).astype(np.float32) for f, (values, _) in series.items()}
  segments: dict[str, list[Segment]] = {role: [] for role in ranges}
  for role, items in ranges.items():
    for file, lo, hi in items:
      values, labels = normalised[file], series[file][1]
      if hi // factor > len(values):
        raise ConfigError(
          f"config.data.{role}_ranges: {file}:{lo}:{hi} ends past the series ({len(values) * factor} rows)"
        )
      segments[role].append(Segment(file, role, values, labels, lo // factor, hi // factor, times[file]))
  if not supervised and not after_prefix:
    segments["score"] = [dataclasses.replace(s, role="score") for s in segments["train"]]
  if after_prefix:  # the prefix's windows end at train_end: nothing after it fits the error model either
    segments["validation"] = [series_prefix.cut_at(s, s.hi) for s in segments["validation"]]
  return AnomalySplits(
    segments,
    window,
    int(data.stride),
    "point",
    factor,
    supervised=supervised,
    labelled=labelled,
    prefix=after_prefix,
    window_rule=rule,
  )


def _check_window_fits(series: dict[str, tuple[np.ndarray, np.ndarray]], window: int, factor: int) -> None:
  """ConfigError when a series (unsupervised: each is scored whole) is shorter than one window."""
  name, (values, _) = min(series.items(), key=lambda item: len(item[1][0]))
  if len(values) < window:
    after = f" after downsample={factor}" if factor > 1 else ""
    raise ConfigError(
      f"config.data.window={window} is longer than the series {name} ({len(values)} points{after}); set "
      f"config.data.window to at most {len(values)}"
      + (" or lower config.data.downsample" if factor > 1 else "")
    )


def _no_windows(segments: list[Segment], length: int, role: str, splits: AnomalySplits) -> Exception:
  """Why the train / validation segments hold no anomaly-free window of `length` points."""
  longest = max(s.hi - s.lo for s in segments)
  after = f" after downsample={splits.downsample}" if splits.downsample > 1 else ""
  where = (
    f"config.data.{role}_ranges"
    if splits.supervised
    else "the prefix before config.data.train_end"
    if splits.prefix
    else "the series"
  )
  if longest < length:
    return ConfigError(
      f"{where}: the longest range is {longest} points{after}, shorter than config.data.window={length}; "
      f"widen {role}_ranges or shorten config.data.window"
    )
  fix = f"widen {role}_ranges to anomaly-free stretches" if splits.supervised else "check the labels"
  return DataError(
    f"every window of {where} contains a labelled anomaly; {fix} or shorten config.data.window"
  )


def _windows_splits(data: ml_collections.ConfigDict) -> AnomalySplits:
  """Rows as windows [length, 1] (UCR format), split per role by fractions of the normal / anomalous rows."""
  (path,) = [sources.resolve_path(p, data, "config.data.path") for p in _split_list(data.path)]
  if str(data.time_column) != "":
    raise ConfigError("config.data.time_column is for layout='series' (a row per time step); set it to ''")
  file = series_table.read_series(path, data)
  rows, labels = file.values, file.labels
  if labels is None:
    raise ConfigError("layout='windows' needs config.data.label_column (which rows are anomalous)")
  fractions = {"normal": tuple(data.normal_fractions), "anomalous": tuple(data.anomalous_fractions)}
  if any(len(f) != len(ROLES) for f in fractions.values()):
    raise ConfigError(
      f"config.data.normal_fractions and anomalous_fractions need one fraction per role {ROLES}"
    )
  rng = np.random.default_rng(int(data.split_seed))
  members: dict[str, list[int]] = {role: [] for role in ROLES}
  for kind, anomalous in (("normal", False), ("anomalous", True)):
    idx = rng.permutation(np.flatnonzero(labels == anomalous))
    cuts = np.round(np.cumsum(fractions[kind]) * len(idx)).astype(int)
    for role, part in zip(ROLES, np.split(idx, cuts[:-1]), strict=True):
      members[role] += part.tolist()
  train = rows[members["train"]]
  normalised = ((rows - train.mean()) / train.std()).astype(np.float32)[..., None]  # [rows, length, 1]
  length = rows.shape[1]
  segments = {
    role: [Segment(f"row {i}", role, normalised[i], np.full(length, labels[i]), 0, length) for i in idx]
    for role, idx in members.items()
  }
  return AnomalySplits(segments, length, length, unit="window")


def anomaly_splits(data: ml_collections.ConfigDict) -> AnomalySplits:
  """The segments of a resolved series_file config, by role."""
  if not data.path:
    raise ConfigError("config.data.path is empty: name the series file(s) (CSV, text or .npy)")
  if data.layout not in LAYOUTS:
    raise ConfigError(f"unknown config.data.layout '{data.layout}'; choose one of {LAYOUTS}")
  if data.label_ends not in ("half_open", "open"):
    raise ConfigError(f"config.data.label_ends must be 'half_open' or 'open', got '{data.label_ends}'")
  return _windows_splits(data) if data.layout == "windows" else _series_splits(data)


def _example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  """[window, channels] (series layout) or [row length - label column, 1] (windows layout), from the
  config and the first file's header and first row."""
  paths = _split_list(data.path)
  if not paths:
    raise ConfigError("config.data.path is empty: name the series file(s) (CSV, text or .npy)")
  columns = _split_list(data.columns)
  if data.layout == "series" and int(data.window) == 0:  # the window comes from the data (or an error)
    splits = _series_splits(data)
    return dataset.ExampleSpec((splits.window, splits.segments["train"][0].values.shape[1]))
  if data.layout == "series" and columns:
    return dataset.ExampleSpec((int(data.window), len(columns)))
  table = series_table.read_table(sources.resolve_path(paths[0], data, "config.data.path"), peek=True)
  others = {table.index(data[key], key) for key in ("label_column", "time_column") if str(data[key]) != ""}
  width = table.width - len(others)
  if data.layout == "windows":
    return dataset.ExampleSpec((width, 1))
  return dataset.ExampleSpec((int(data.window), width))


def _roles(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  if data.layout == "windows" or data.train_ranges:
    return ("train", "validation", "test")
  return ("train", "validation") if str(data.train_end) else ("train",)


def windows_source(w: np.ndarray) -> sources.ArraySource:
  """Windows [W, L, d] as a source of {"x", "label"} records."""
  return sources.ArraySource({"x": w, "label": np.zeros(len(w), np.int32)})


def load(data: ml_collections.ConfigDict) -> dataset.Dataset:
  """A series_file dataset: train / validation / test windows and the anomaly segments."""
  splits = anomaly_splits(data)
  seg, length = splits.segments, splits.window
  eval_stride = max(length // 4, 1) if splits.unit == "point" else length
  split_sources = {"train": windows_source(normal_windows(seg["train"], length, splits.stride))}
  if splits.supervised or splits.prefix:
    split_sources["validation"] = windows_source(normal_windows(seg["validation"], length, eval_stride))
  if splits.supervised:
    split_sources["test"] = windows_source(all_windows(seg["test"], length, eval_stride))
  if splits.unit == "window" and not len(split_sources["train"]):
    raise DataError("layout='windows': no row trains the model; raise config.data.normal_fractions[0]")
  for role in ("train", "validation") if splits.unit == "point" else ():
    if role in split_sources and not len(split_sources[role]):
      raise _no_windows(seg[role], length, role, splits)
  info = dataset.DatasetInfo(
    dataset.ExampleSpec(split_sources["train"][0]["x"].shape),
    lambda r, i: dict(r),
    batch_preprocess=lambda records, indices: dict(records),
    device_preprocess=lambda records, indices: dict(records),
  )
  return dataset.Dataset("series_file", split_sources, info, anomaly=splits)


dataset.register(
  dataset.DatasetSpec(
    name="series_file",
    load=load,
    options=SERIES_OPTIONS,
    example=_example,
    splits=_roles,
    anomaly_labels=True,
    description="your own time series from CSV / text / .npy files, windowed, with optional anomaly labels",
  )
)
