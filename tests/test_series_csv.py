"""series_file on real CSVs: only the picked columns are read, a time column, text labels, and bad files
as one error that names the file, line and column as the file counts them."""

import warnings

import numpy as np
import pytest

from ae_jax import data
from ae_jax.core.errors import ConfigError, DataError

CSV = """timestamp,temp,status,note
2024-01-01T00:00:00,1.5,ok,"start, cold"
2024-01-01T00:15:00,1.7,ok,
2024-01-01T00:30:00,9.9,alarm,"spike"
2024-01-01T00:45:00,1.6,fine,x
2024-01-01T01:00:00,1.4,ok,y
"""


def _load(path, **options):
  """The first file's training segment (unsupervised: the whole series) of a series_file config."""
  c = data.data_config("series_file", path=str(path), **{"window": 2, **options})
  return data.get_dataset(c).anomaly


def _one_line_error(kind, match, path, **options):
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no warning may precede the error
    with pytest.raises(kind, match=match) as e:
      _load(path, **options)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_picked_columns_time_axis_and_text_labels(tmp_path):
  path = tmp_path / "sensor.csv"
  path.write_text(CSV)
  splits = _load(
    path, columns="temp", time_column="timestamp", label_column="status", normal_values="ok,fine"
  )
  (seg,) = splits.segments["score"]
  raw = np.array([1.5, 1.7, 9.9, 1.6, 1.4])
  np.testing.assert_allclose(seg.values[:, 0], (raw - raw.mean()) / raw.std(), rtol=1e-5)
  expected = np.datetime64("2024-01-01T00:00") + np.arange(5) * np.timedelta64(15, "m")
  np.testing.assert_array_equal(seg.times, expected)
  np.testing.assert_array_equal(seg.labels, [False, False, True, False, False])
  assert splits.labelled
  # the same columns by 0-based index; the time column's block starts when downsampled
  (seg,) = _load(path, columns="1", time_column="0", downsample=2).segments["score"]
  np.testing.assert_array_equal(seg.times, expected[[0, 2]])
  np.testing.assert_allclose(seg.values[:, 0], [-1.0, 1.0], atol=1e-5)  # block means 1.6, 5.75


def test_numeric_time_column_headerless_whitespace_and_time_zones(tmp_path):
  (tmp_path / "ecg.txt").write_text(
    "200.000\t 4.770\t 2.100\n200.004\t 4.820\t 2.135\n200.008\t 4.805\t 2.190\n"
  )
  (seg,) = _load(tmp_path / "ecg.txt", time_column="0").segments["score"]
  np.testing.assert_allclose(seg.times, [200.0, 200.004, 200.008])
  assert seg.values.shape == (3, 2)
  (tmp_path / "tz.csv").write_text("t,v\n2024-01-01T00:00:00+01:00,1\n2024-01-01T00:30:00Z,2\n")
  (seg,) = _load(tmp_path / "tz.csv", time_column="t").segments["score"]
  np.testing.assert_array_equal(
    seg.times, np.array(["2023-12-31T23:00", "2024-01-01T00:30"], "datetime64[us]")
  )


def test_headerless_csv_with_timestamps_is_not_taken_for_a_header(tmp_path):
  lines = CSV.splitlines()[1:]
  (tmp_path / "s.csv").write_text("\n".join(line.split(",")[0] + "," + line.split(",")[1] for line in lines))
  (seg,) = _load(tmp_path / "s.csv", time_column="0").segments["score"]
  assert len(seg.values) == 5 and seg.times[0] == np.datetime64("2024-01-01T00:00")


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", ""])
def test_a_non_finite_or_missing_value_names_the_file_line_and_column(tmp_path, bad):
  path = tmp_path / "v.csv"
  path.write_text(f"# exported by a logger\na,b\n1,2\n3,4\n5,{bad}\n7,8\n")
  message = _one_line_error(DataError, "clean the file", path)
  assert message.startswith(f'{path}: line 5, column 2 "b" (counted from 1) is '), message
  path = tmp_path / "w.txt"
  path.write_text(f"1 2\n3 {bad or 'nan'}\n")
  assert f"{path}: line 2, column 2 (counted from 1)" in _one_line_error(DataError, "not a finite", path)


def test_text_in_a_picked_column_and_in_the_default_columns(tmp_path):
  path = tmp_path / "sensor.csv"
  path.write_text(CSV)
  message = _one_line_error(DataError, "not a number", path, columns="temp,note", time_column="timestamp")
  assert "line 2, column 4 \"note\" (counted from 1) holds 'start, cold'" in message  # a quoted comma
  message = _one_line_error(DataError, "not a number", path)  # every column is a value column by default
  assert 'line 2, column 1 "timestamp"' in message and "time_column" in message


def test_time_column_must_strictly_increase(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text("time,v\n2024-01-01,1\n2024-01-03,2\n2024-01-02,3\n")
  message = _one_line_error(DataError, "does not strictly increase", path, time_column="time")
  assert "line 4" in message and "sort the file by time" in message
  path.write_text("time,v\n2024-01-01,1\nyesterday,2\n")
  assert "line 3" in _one_line_error(DataError, "not an ISO-8601 date", path, time_column="time")


def test_label_values_that_never_mean_normal_and_unknown_columns_are_one_error(tmp_path):
  path = tmp_path / "sensor.csv"
  path.write_text(CSV)
  message = _one_line_error(
    DataError, "no row of the label column", path, columns="temp", label_column="status"
  )
  assert "['alarm', 'fine', 'ok']" in message and "normal_values" in message
  _one_line_error(ConfigError, "did you mean 'timestamp'", path, columns="temp", time_column="timestmp")
  _one_line_error(ConfigError, "which is config.data.time_column", path, columns="0,1", time_column="0")


@pytest.mark.parametrize(
  "content, match",
  [
    ("", "empty: no rows"),
    ("\n\n", "empty: no rows"),
    ("a,b\n", r"only a header \(line 1\), no data rows"),
    ("1,2\n3\n", "line 2 has 1 field where the first row"),
  ],
)
def test_empty_header_only_or_ragged_files_are_one_error_without_a_warning(tmp_path, content, match):
  (tmp_path / "e.csv").write_text(content)
  _one_line_error(DataError, match, tmp_path / "e.csv")


def test_a_binary_file_is_not_a_text_series(tmp_path):
  path = tmp_path / "series.csv"
  path.write_bytes(bytes(range(256)) * 8)
  _one_line_error(DataError, f"{path}: not a text CSV / whitespace-separated series", path)
  c = data.data_config("series_file", path=str(path), window=4)
  with pytest.raises(DataError, match="not a text CSV"):  # also where only the width is read
    data.example_spec(c)
  path.write_bytes(b"\xff\xfe1\x002\x00")  # UTF-16: not UTF-8
  _one_line_error(DataError, "not a text CSV", path)
  np.save(tmp_path / "a.npy", np.zeros((4, 2)))
  path.write_bytes((tmp_path / "a.npy").read_bytes())
  _one_line_error(DataError, "it is a numpy .npy array: name it", path)


def test_example_spec_leaves_out_the_time_and_label_columns(tmp_path):
  path = tmp_path / "sensor.csv"
  path.write_text(CSV.replace(",ok,", ",0,").replace(",alarm,", ",1,").replace(",fine,", ",0,"))
  c = data.data_config(
    "series_file", path=str(path), window=3, time_column="timestamp", label_column="status"
  )
  c.columns = "temp"
  assert data.example_spec(c).shape == (3, 1)
  c.columns = ""
  assert data.example_spec(c).shape == (3, 2)  # temp and note


def test_header_detection_takes_an_empty_field_for_a_missing_value_not_a_name(tmp_path):
  path = tmp_path / "h.csv"
  path.write_text("1,,3\n4,5,6\n")
  _one_line_error(DataError, r"line 1, column 2 \(counted from 1\) is empty", path)
  path.write_text(",a,b\n0,1.5,2\n1,1.6,3\n")  # pandas' to_csv: an unnamed index column
  (seg,) = _load(path, columns="a", time_column="0").segments["score"]
  np.testing.assert_array_equal(seg.times, [0.0, 1.0])
