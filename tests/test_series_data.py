"""Time-series data: series_file (your own series) and the shipped presets built on it."""

import json

import numpy as np
import pytest

from ae_jax import data
from ae_jax.core.errors import ConfigError, DataNotFoundError
from ae_jax.data import series_file, shipped_series

ROOT = data.data_root()
needs_data = pytest.mark.skipif(
  not (ROOT / "discords" / "labels.json").exists() or not (ROOT / "ecg5000").exists(),
  reason=f"the offline time-series copies are not in {ROOT}",
)


def test_interval_labels_half_open_and_open():
  np.testing.assert_array_equal(
    np.flatnonzero(series_file.interval_labels(10, [[2, 5], [7, 9]])), [2, 3, 4, 7, 8]
  )
  np.testing.assert_array_equal(
    np.flatnonzero(series_file.interval_labels(10, [[2, 5], [7, 9]], "open")), [3, 4, 8]
  )


def test_downsample_averages_blocks_and_keeps_any_anomaly():
  values = np.arange(10, dtype=np.float64)[:, None]
  labels = np.zeros(10, bool)
  labels[3] = True
  v, y = series_file.downsample(values, labels, 4)  # the partial last block (8, 9) is dropped
  np.testing.assert_allclose(v[:, 0], [1.5, 5.5])
  np.testing.assert_array_equal(y, [True, False])


def test_windows_cover_every_point_and_may_reach_past_the_segment():
  values = np.arange(20, dtype=np.float32)[:, None]
  w, starts = series_file.windows(values, 5, 3)
  np.testing.assert_array_equal(starts, [0, 3, 6, 9, 12, 15])
  np.testing.assert_array_equal(w[:, :, 0], starts[:, None] + np.arange(5))
  _, starts = series_file.windows(values, 5, 3, lo=8, hi=12)  # overlapping points 8..11, on a grid from 8
  np.testing.assert_array_equal(starts, [5, 8, 11])
  _, starts = series_file.windows(values, 5, 5, lo=7, hi=19)  # stride = length: one window a point
  np.testing.assert_array_equal(starts, [7, 12, 15])
  assert series_file.windows(values[:3], 5, 1)[0].shape == (0, 5, 1)


def _series(n=600, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  return np.stack([np.sin(t / 7.0), np.cos(t / 11.0)], 1) + 0.01 * rng.normal(size=(n, 2))


@pytest.mark.parametrize("fmt", ["csv_header", "whitespace", "npy"])
def test_series_file_formats_columns_and_labels(tmp_path, fmt):
  values = _series()
  labels = np.zeros(len(values), int)
  labels[300:320] = 1
  table = np.column_stack([np.arange(len(values)), values, labels])
  if fmt == "csv_header":
    path = tmp_path / "s.csv"
    np.savetxt(path, table, delimiter=",", header="time,a,b,anomaly", comments="")
    columns, label_column = "a,b", "anomaly"
  elif fmt == "whitespace":
    path = tmp_path / "s.txt"
    np.savetxt(path, table)
    columns, label_column = "1,2", "3"
  else:
    path = tmp_path / "s.npy"
    np.save(path, table)
    columns, label_column = "1,2", "-1"
  c = data.data_config(
    "series_file",
    path=str(path),
    columns=columns,
    label_column=label_column,
    window=20,
    stride=5,
    train_ranges="0:200",
    validation_ranges="200:280",
    test_ranges="280:600",
  )
  assert data.example_spec(c) == data.ExampleSpec((20, 2)) and data.split_roles(c) == (
    "train",
    "validation",
    "test",
  )
  dataset = data.get_dataset(c)
  splits = dataset.anomaly
  train = np.concatenate([s.values[s.lo : s.hi] for s in splits.segments["train"]])
  np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)  # normalised with the training points
  np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
  (test,) = splits.segments["test"]
  np.testing.assert_array_equal(np.flatnonzero(test.labels), np.arange(300, 320))
  (threshold,), (validation,) = splits.segments["threshold"], splits.segments["validation"]
  assert (threshold.lo, threshold.hi) == (validation.lo, validation.hi) == (200, 280)  # default: validation
  assert dataset.splits["train"][0]["x"].shape == (20, 2) and len(dataset.splits["train"]) == 37
  assert dataset.info.to_image is None and dataset.anomaly.supervised


def test_series_file_json_labels_downsampling_and_several_files(tmp_path):
  for name, seed in (("a.txt", 0), ("b.txt", 1)):
    np.savetxt(tmp_path / name, _series(400, seed)[:, :1])
  (tmp_path / "labels.json").write_text(json.dumps({"b.txt": [[200, 240]]}))
  c = data.data_config(
    "series_file",
    path="a.txt,b.txt",
    root=str(tmp_path),  # relative paths resolve under the data root when not in the working directory
    labels="labels.json",
    downsample=4,
    window=10,
    train_ranges="a.txt:0:400",
    validation_ranges="b.txt:0:160",
    threshold_ranges="b.txt:160:280",
    test_ranges="b.txt:280:400",
  )
  splits = data.get_dataset(c).anomaly
  (threshold,) = splits.segments["threshold"]
  assert (threshold.series, threshold.lo, threshold.hi, splits.downsample) == ("b.txt", 40, 70, 4)
  np.testing.assert_array_equal(np.flatnonzero(threshold.labels), np.arange(50, 60))  # [200, 240) / 4


@pytest.mark.parametrize(
  "options, match",
  [
    ({"train_ranges": "0:100"}, "give train_ranges, validation_ranges and test_ranges"),
    ({"train_ranges": "0:100,x", "validation_ranges": "1:2", "test_ranges": "2:3"}, "cannot read 'x'"),
    ({"train_ranges": "0:9000", "validation_ranges": "1:2", "test_ranges": "2:3"}, "ends past the series"),
    ({"columns": "7"}, "column 7 is out of range"),
    ({"window": 1}, "window"),
  ],
)
def test_series_file_bad_options_are_one_clear_error(tmp_path, options, match):
  np.savetxt(tmp_path / "s.txt", _series(300))
  c = data.data_config("series_file", path=str(tmp_path / "s.txt"), **{"window": 10, **options})
  with pytest.raises(ConfigError, match=match):
    data.get_dataset(c)


def test_series_file_missing_file_names_the_data_root(tmp_path):
  c = data.data_config("series_file", path="nope.csv", root=str(tmp_path), window=10)
  with pytest.raises(DataNotFoundError, match="config.data.root"):
    data.get_dataset(c)


def test_unsupervised_series_trains_on_everything_and_scores_every_point(tmp_path):
  np.savetxt(tmp_path / "s.txt", _series(300))
  c = data.data_config("series_file", path=str(tmp_path / "s.txt"), window=10, stride=2)
  assert data.split_roles(c) == ("train",)
  dataset = data.get_dataset(c)
  assert not dataset.anomaly.supervised and not dataset.anomaly.labelled
  (score,) = dataset.anomaly.segments["score"]
  assert (score.lo, score.hi) == (0, 300) and len(dataset.splits["train"]) == len(range(0, 291, 2))


def test_windows_layout_splits_rows_by_fractions(tmp_path):
  rng = np.random.default_rng(0)
  classes = np.r_[np.ones(60), np.full(40, 2.0)]
  np.savetxt(tmp_path / "w.txt", np.column_stack([classes, rng.normal(size=(100, 16))]))
  c = data.data_config(
    "series_file", path=str(tmp_path / "w.txt"), layout="windows", label_column="0", normal_values="1"
  )
  assert data.example_spec(c).shape == (16, 1)
  dataset = data.get_dataset(c)
  segments = dataset.anomaly.segments
  anomalous = {role: sum(s.labels[0] for s in segs) for role, segs in segments.items()}
  assert anomalous == {"train": 0, "validation": 0, "threshold": 12, "test": 28}
  assert (
    len(segments["train"]) == 36 and len(dataset.splits["train"]) == 36 and dataset.anomaly.unit == "window"
  )


@needs_data
@pytest.mark.parametrize("name", ["power_demand", "space_shuttle", "ecg_qtdbsel102"])
def test_discord_presets(name):
  options = shipped_series.PRESETS[name]
  splits = data.get_dataset(shipped_series.preset(name)).anomaly
  segments = splits.segments
  with open(ROOT / "discords" / "labels.json") as f:
    intervals = json.load(f)
  for file in [p.split("/")[-1] for p in options["path"].split(",")]:  # every anomaly lies in threshold/test
    for lo, hi in intervals[file]:
      mid = (lo + hi) // 2 // options["downsample"]
      roles = [s.role for segs in segments.values() for s in segs if s.series == file and s.lo <= mid < s.hi]
      assert roles in (["threshold"], ["test"]), (file, lo, hi, roles)
  assert not any(s.labels[s.lo : s.hi].any() for s in segments["train"] + segments["validation"])
  assert any(s.labels[s.lo : s.hi].any() for s in segments["test"])
  assert any(s.labels[s.lo : s.hi].any() for s in segments["threshold"]) == (name != "ecg_qtdbsel102")
  spec = data.example_spec(shipped_series.preset(name))
  assert spec.shape == (options["window"], len(options.get("columns", "0").split(",")))


@needs_data
def test_ecg5000_preset_splits_are_disjoint_and_train_only_on_normal_beats():
  dataset = data.get_dataset(shipped_series.preset("ecg5000"))
  segments = dataset.anomaly.segments
  names = {role: [s.series for s in segs] for role, segs in segments.items()}
  everything = sum(names.values(), [])
  assert len(everything) == len(set(everything)) == 500
  anomalous = {role: sum(s.labels[0] for s in segs) for role, segs in segments.items()}
  assert (
    anomalous["train"] == anomalous["validation"] == 0 and anomalous["threshold"] + anomalous["test"] == 208
  )
  assert len(names["train"]) == round(0.6 * 292) and dataset.anomaly.unit == "window"
  assert dataset.info.shape == (140, 1) and len(dataset.splits["validation"]) == len(names["validation"])


def test_synthetic_sequences_are_padded_prefixes():
  real = shipped_series.synthetic_sequences(16, 10, 3, seed=0)
  assert real["x"].shape == (16, 10, 3) and real["mask"].shape == (16, 10)
  assert np.all(np.diff(real["mask"], axis=1) <= 0) and real["mask"][:, :5].all()  # prefix masks
  assert np.all(real["x"][real["mask"] == 0] == 0)
  tokens = shipped_series.synthetic_sequences(16, 10, 3, seed=0, vocab_size=7)
  assert tokens["x"].dtype == np.int32 and tokens["x"].shape == (16, 10)
  assert tokens["x"].min() >= 0 and tokens["x"].max() < 7
  c = data.data_config("synthetic_sequences", vocab_size=7, time=12)
  dataset = data.get_dataset(c)
  assert data.example_spec(c) == data.ExampleSpec((12,), "int32", masked=True)
  assert dataset.split("train")[0]["x"].shape == (12,) and "mask" in dataset.info.preprocess(
    dataset.split("test")[0], 0
  )


def test_a_window_longer_than_the_series_says_so_with_the_numbers(tmp_path):
  np.savetxt(tmp_path / "s.txt", _series(300))
  c = data.data_config("series_file", path=str(tmp_path / "s.txt"), window=500)
  with pytest.raises(ConfigError, match=r"window=500 is longer than the series s.txt \(300 points\); set "):
    data.get_dataset(c)
  c.update(window=100, downsample=4)
  with pytest.raises(
    ConfigError, match=r"\(75 points after downsample=4\); set config.data.window to at most 75"
  ):
    data.get_dataset(c)
  c.update(window=50, downsample=1, train_ranges="0:40", validation_ranges="40:200", test_ranges="200:300")
  with pytest.raises(
    ConfigError, match="train_ranges: the longest range is 40 points, shorter than .*window=50"
  ):
    data.get_dataset(c)


def test_after_a_prefix_the_model_trains_on_the_prefix_and_only_the_rest_is_scored(tmp_path):
  """train_end: the prefix's first 80% trains, its last 20% validates, the points after it are scored;
  window 0 takes the dominant period of the first column's prefix (sin(t / 7): 2 pi 7 = 44 points)."""
  values = _series()
  labels = np.zeros(600, int)
  labels[100:110] = 1  # a labelled stretch inside the prefix: no training window may contain it
  np.savetxt(tmp_path / "s.txt", np.column_stack([values, labels]))
  c = data.data_config("series_file", path=str(tmp_path / "s.txt"), label_column="2", train_end="400")
  assert data.split_roles(c) == ("train", "validation")
  assert data.example_spec(c).shape == (44, 2)
  dataset = data.get_dataset(c)
  splits = dataset.anomaly
  assert splits.prefix and not splits.supervised and splits.window == 44
  assert "dominant period of s.txt's prefix (its first column), 400 points" in splits.window_rule
  (train,), (validation,), (score,) = (splits.segments[r] for r in ("train", "validation", "score"))
  assert [(s.lo, s.hi) for s in (train, validation, score)] == [(0, 320), (320, 400), (400, 600)]
  assert len(validation.values) == 400 and len(score.values) == 600  # no window of the prefix passes 400
  train_mean = values[:320].mean(axis=0)  # normalised with the training points' statistics
  np.testing.assert_allclose(score.values[:320].mean(axis=0), 0.0, atol=1e-5)
  assert not np.allclose(train_mean, 0.0, atol=1e-3)
  starts = [a for a in range(0, 320 - 44 + 1) if not labels[a : a + 44].any()]  # stride 1
  assert len(dataset.splits["train"]) == len(starts)
  np.testing.assert_allclose(dataset.splits["train"][0]["x"], score.values[:44], atol=1e-6)
  assert len(dataset.splits["validation"]) > 0


@pytest.mark.parametrize(
  "options, match",
  [
    ({"train_end": "600"}, "must lie inside the series"),
    ({"train_end": "100", "window": 50}, "fewer than a window of 50"),
    ({"train_end": "400", "validation_share": 1.0}, "validation_share must lie strictly between 0 and 1"),
    ({"train_end": "x.txt:400"}, "cannot read 'x.txt:400'"),
    ({"train_end": "400", "train_ranges": "0:100"}, "train_end .* or the \\*_ranges, not both"),
    ({"window": 0}, "0 picks the dominant period"),
  ],
)
def test_bad_prefix_options_are_one_clear_error(tmp_path, options, match):
  np.savetxt(tmp_path / "s.txt", _series())
  c = data.data_config("series_file", path=str(tmp_path / "s.txt"), **{"window": 10, **options})
  with pytest.raises(ConfigError, match=match):
    data.get_dataset(c)


def test_train_end_per_file_and_downsampled(tmp_path):
  np.savetxt(tmp_path / "a.txt", _series(600))
  np.savetxt(tmp_path / "b.txt", _series(800, seed=1))
  paths = f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}"
  c = data.data_config(
    "series_file", path=paths, window=12, downsample=2, train_end="a.txt:400,b.txt:600", validation_share=0.25
  )
  splits = data.get_dataset(c).anomaly
  assert [(s.series, s.lo, s.hi) for s in splits.segments["score"]] == [
    ("a.txt", 200, 300),
    ("b.txt", 300, 400),
  ]
  assert [(s.lo, s.hi) for s in splits.segments["validation"]] == [(150, 200), (225, 300)]
  assert splits.window_rule == "config.data.window"
  with pytest.raises(ConfigError, match="name every file"):
    data.get_dataset(data.data_config("series_file", path=paths, window=12, train_end="a.txt:400"))
