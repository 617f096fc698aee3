"""Shipped time series: Keogh's discord series and ECG5000 as `series_file` presets, and synthetic sequences.

The anomaly data sets of Malhotra et al. 2016 (arXiv 1607.00148) are `series_file` configs (see
`ae_jax.data.series_file`) over the offline copies in the data root (`discords/*.txt` with
`discords/labels.json`, whose intervals exclude both ends; `ecg5000/ECG5000_TRAIN.txt`). Their ranges are
the paper's roles: train (sN), validation (vN1: normal points that monitor training and fit the error
model), threshold (vN2 + vA) and test (tN + tA). Cuts are whole weeks / valve cycles; each series opens
with a stretch (at least one window) that no role scores, since a point near a series' start is covered
by few windows.

`PRESETS[name]` are the series_file options: `data_config("series_file", **PRESETS["power_demand"])`.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from ae_jax.data import dataset, sources

_DISCORDS = "discords/labels.json"
PRESETS: dict[str, dict[str, Any]] = {
  # 15-minute demand for 1997 (672 points a week); downsampled by 8 a window of 84 is one week (the paper's).
  # Anomalies: 8254-8998, 11348-12143 (holiday weeks), 33883-34601 (Christmas).
  "power_demand": dict(
    path="discords/power_data.txt",
    labels=_DISCORDS,
    label_ends="open",
    downsample=8,
    window=84,
    stride=1,
    threshold_ranges="672:10752",
    test_ranges="10752:14112,30912:35040",
    train_ranges="14112:27552",
    validation_ranges="27552:30912",
  ),
  # Marotta valve: five ~1000-point cycles per file; downsampled by 4 a window of 250 is one cycle. TEK14's
  # two anomalies choose the threshold (its first cycle is context only), TEK16's and TEK17's test.
  "space_shuttle": dict(
    path="discords/TEK14.txt,discords/TEK16.txt,discords/TEK17.txt",
    labels=_DISCORDS,
    label_ends="open",
    downsample=4,
    window=250,
    stride=2,
    threshold_ranges="TEK14.txt:1000:3000",
    train_ranges="TEK14.txt:3000:5000,TEK16.txt:0:3000",
    test_ranges="TEK16.txt:3000:5000,TEK17.txt:1000:3000",
    validation_ranges="TEK17.txt:3000:5000",
  ),
  # Two ECG leads at 250 Hz (a beat is ~205 points; the paper's window is 208). One anomaly (4230-4430), so
  # the threshold split has none: the threshold then falls back to its largest score.
  "ecg_qtdbsel102": dict(
    path="discords/qtdbsel102.txt",
    columns="1,2",
    labels=_DISCORDS,
    label_ends="open",
    downsample=1,
    window=208,
    stride=4,
    test_ranges="1000:9000",
    train_ranges="9000:33000",
    validation_ranges="33000:39000",
    threshold_ranges="39000:45000",
  ),
  # UCR ECG5000 train file: 500 beats of 140 points; column 0 is the class (1 normal, 2-5 anomalous).
  "ecg5000": dict(
    path="ecg5000/ECG5000_TRAIN.txt",
    layout="windows",
    label_column="0",
    normal_values="1",
    normal_fractions=(0.6, 0.1, 0.1, 0.2),
    anomalous_fractions=(0.0, 0.0, 0.3, 0.7),
  ),
}


def preset(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """config.data for a shipped series: data_config("series_file", **PRESETS[name], **overrides)."""
  if name not in PRESETS:
    raise KeyError(f"unknown series preset '{name}'; choose one of {sorted(PRESETS)}")
  return dataset.data_config("series_file", **{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- synthetic sequences


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


def _synthetic_example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  if data.vocab_size:
    return dataset.ExampleSpec((int(data.time),), "int32", masked=True)
  return dataset.ExampleSpec((int(data.time), int(data.features)), masked=True)


def _load_synthetic(data: ml_collections.ConfigDict) -> dataset.Dataset:
  """Synthetic variable-length sequences (config.data: time, features or vocab_size, num_train, num_test)."""
  make = lambda n, seed: sources.ArraySource(  # noqa: E731
    synthetic_sequences(n, int(data.time), int(data.features), seed, int(data.vocab_size))
  )
  splits = {"train": make(int(data.num_train), 1), "test": make(int(data.num_test), 2)}
  info = dataset.DatasetInfo(
    _synthetic_example(data),
    lambda r, i: dict(r),
    batch_preprocess=lambda records, indices: dict(records),
    device_preprocess=lambda records, indices: dict(records),
  )
  return dataset.Dataset("synthetic_sequences", splits, info)


dataset.register(
  dataset.DatasetSpec(
    name="synthetic_sequences",
    load=_load_synthetic,
    options={"time": 32, "features": 2, "vocab_size": 0, "num_train": 512, "num_test": 128},
    example=_synthetic_example,
    description="noisy sines or token random walks of variable length with a prefix mask (tests)",
  )
)
