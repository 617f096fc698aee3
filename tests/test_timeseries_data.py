"""Time-series data: labels, downsampling, windows, anomaly splits of the real files, synthetic sequences."""

import json

import ml_collections
import numpy as np
import pytest

from ae_jax import data
from ae_jax.data import timeseries

ROOT = timeseries.DEFAULT_ROOT
needs_data = pytest.mark.skipif(
  not (ROOT / "discords" / "labels.json").exists() or not (ROOT / "ecg5000").exists(),
  reason=f"the offline time-series copies are not in {ROOT}",
)


def _data_config(name, **options):
  return ml_collections.ConfigDict({"name": name, "cache_in_memory": True, **options})


def test_interval_labels_exclude_both_ends():
  labels = timeseries.interval_labels(10, [[2, 5], [7, 9]])
  np.testing.assert_array_equal(np.flatnonzero(labels), [3, 4, 8])


def test_downsample_averages_blocks_and_keeps_any_anomaly():
  values = np.arange(10, dtype=np.float64)[:, None]
  labels = np.zeros(10, bool)
  labels[3] = True
  v, y = timeseries.downsample(values, labels, 4)  # the partial last block (8, 9) is dropped
  np.testing.assert_allclose(v[:, 0], [1.5, 5.5])
  np.testing.assert_array_equal(y, [True, False])


def test_windows_cover_every_point_and_may_reach_past_the_segment():
  values = np.arange(20, dtype=np.float32)[:, None]
  w, starts = timeseries.windows(values, 5, 3)
  np.testing.assert_array_equal(starts, [0, 3, 6, 9, 12, 15])
  np.testing.assert_array_equal(w[:, :, 0], starts[:, None] + np.arange(5))
  _, starts = timeseries.windows(values, 5, 3, lo=8, hi=12)  # overlapping points 8..11, on a grid from 8
  np.testing.assert_array_equal(starts, [5, 8, 11])
  _, starts = timeseries.windows(values, 5, 5, lo=7, hi=19)  # stride = length: one window a point
  np.testing.assert_array_equal(starts, [7, 12, 15])
  assert timeseries.windows(values[:3], 5, 1)[0].shape == (0, 5, 1)


@needs_data
@pytest.mark.parametrize("name", list(timeseries.DISCORDS))
def test_discord_splits(name):
  spec = timeseries.DISCORDS[name]
  splits = timeseries.anomaly_splits(_data_config(name))
  segments = splits.segments
  with open(ROOT / "discords" / "labels.json") as f:
    intervals = json.load(f)
  for file in spec.files:  # every labelled anomaly lies in a val or test segment of its file
    for lo, hi in intervals[file]:
      mid = (lo + hi) // 2 // spec.downsample
      roles = [s.role for segs in segments.values() for s in segs if s.series == file and s.lo <= mid < s.hi]
      assert roles in (["val"], ["test"]), (file, lo, hi, roles)
  assert not any(s.labels[s.lo : s.hi].any() for s in segments["train"] + segments["fit"])
  assert any(s.labels[s.lo : s.hi].any() for s in segments["test"])
  assert any(s.labels[s.lo : s.hi].any() for s in segments["val"]) == (name != "ecg_qtdbsel102")
  train = np.concatenate([s.values[s.lo : s.hi] for s in segments["train"]])
  np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(train.std(0), 1.0, atol=1e-3)
  source_train, source_fit, info = data.get_dataset(_data_config(name))
  assert info.shape == data.example_shape(_data_config(name)) == (spec.window, len(spec.columns))
  assert info.to_image is None and source_train[0]["x"].shape == info.shape
  assert len(source_train) > 100 and len(source_fit) > 5


@needs_data
def test_ecg5000_splits_are_disjoint_and_train_only_on_normal_beats():
  splits = timeseries.anomaly_splits(_data_config("ecg5000"))
  names = {role: [s.series for s in segs] for role, segs in splits.segments.items()}
  everything = sum(names.values(), [])
  assert len(everything) == len(set(everything)) == 500
  anomalous = {role: sum(s.labels[0] for s in segs) for role, segs in splits.segments.items()}
  assert anomalous["train"] == anomalous["fit"] == 0 and anomalous["val"] + anomalous["test"] == 208
  assert len(names["train"]) == round(0.6 * 292) and splits.unit == "window"
  train, fit, info = data.get_dataset(_data_config("ecg5000"))
  assert info.shape == (140, 1) and len(train) == len(names["train"]) and len(fit) == len(names["fit"])


def test_synthetic_sequences_are_padded_prefixes():
  real = timeseries.synthetic_sequences(16, 10, 3, seed=0)
  assert real["x"].shape == (16, 10, 3) and real["mask"].shape == (16, 10)
  assert np.all(np.diff(real["mask"], axis=1) <= 0) and real["mask"][:, :5].all()  # prefix masks
  assert np.all(real["x"][real["mask"] == 0] == 0)
  tokens = timeseries.synthetic_sequences(16, 10, 3, seed=0, vocab_size=7)
  assert tokens["x"].dtype == np.int32 and tokens["x"].shape == (16, 10)
  assert tokens["x"].min() >= 0 and tokens["x"].max() < 7
  train, test, info = data.get_dataset(_data_config("synthetic_sequences", vocab_size=7, time=12))
  assert info.shape == (12,) and train[0]["x"].shape == (12,) and "mask" in info.preprocess(test[0], 0)


def test_missing_files_name_the_data_root(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.data.root"):
    timeseries.anomaly_splits(_data_config("space_shuttle", root=str(tmp_path)))
