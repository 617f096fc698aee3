"""The UCR anomaly benchmark: file format and scoring rule, the matrix profile against a brute-force
reference, the prefix protocol, and the command on two short series."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from ae_jax.anomaly import prefix_detector, ucr
from ae_jax.anomaly.matrix_profile import nearest_distances
from ae_jax.anomaly.window_ae import WindowAEOptions, WindowAutoencoder
from ae_jax.core.errors import ConfigError, DataError, DataNotFoundError
from ae_jax.data.series_segments import dominant_period
from experiments import anomaly_benchmark

FAST = prefix_detector.DetectorOptions(ae=WindowAEOptions(steps=60, batch=64))


def _sine(n: int, period: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  return np.sin(2 * np.pi * t / period) + 0.3 * np.sin(4 * np.pi * t / period) + noise * rng.normal(size=n)


def _write(folder, name: str, values: np.ndarray, one_line: bool = False) -> None:
  sep = " " if one_line else "\n"
  (folder / name).write_text(sep.join(f"{v:.6f}" for v in values) + "\n")


# ----------------------------------------------------------------------------- format and scoring rule


def test_scoring_rule_counts_100_points_either_side():
  assert ucr.is_correct(400, 500, 520) and ucr.is_correct(620, 500, 520)
  assert not ucr.is_correct(399, 500, 520) and not ucr.is_correct(621, 500, 520)
  assert ucr.parse_name("x_UCR_Anomaly_a_b_4000_4852_4900.txt") == (4000, 4852, 4900)
  assert ucr.parse_name("labels.json") is None


def test_top_indices_are_greedy_and_apart():
  s = np.array([0, 5, 9, 8, 0, 0, 7, 0, 0, 6, np.nan], float)
  assert ucr.top_indices(s, 3, exclusion=3) == [2, 6, 9]  # 8 (index 3) lies within 2 of index 2
  assert ucr.top_indices(s, 5, exclusion=3, start=3) == [3, 6, 9]  # then nothing is left
  assert ucr.top_indices(s, 1, exclusion=1, start=7) == [9]


def test_read_series_both_layouts_and_bad_input(tmp_path):
  v = np.arange(50, dtype=float)
  _write(tmp_path, "a_10_20_30.txt", v)
  _write(tmp_path, "b_10_20_30.txt", v, one_line=True)
  _write(tmp_path, "c_60_70_80.txt", v)
  (tmp_path / "d_10_20_30.txt").write_text("1\n2\nthree\n")
  a, b = (ucr.read_series(str(tmp_path / f)) for f in ("a_10_20_30.txt", "b_10_20_30.txt"))
  np.testing.assert_array_equal(a.values, v)
  np.testing.assert_array_equal(b.values, v)
  assert (a.train_end, a.begin, a.end) == (10, 20, 30)
  with pytest.raises(DataError, match="train_end 60 is outside"):
    ucr.read_series(str(tmp_path / "c_60_70_80.txt"))
  with pytest.raises(DataError, match="not a number"):
    ucr.read_series(str(tmp_path / "d_10_20_30.txt"))
  with pytest.raises(DataNotFoundError, match="is not a folder"):
    ucr.series_files(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataNotFoundError, match="no UCR-format series"):
    ucr.series_files(str(tmp_path / "empty"))


def test_dominant_period_of_a_sine():
  assert dominant_period(_sine(2000, 37)) in (36, 37, 38)


def test_dominant_period_is_not_taken_by_one_stretch_of_a_large_slow_wave():
  """A pulse every 50 points, and in one stretch of 1,600 of the 16,000 points a wave of period 360 and
  ten times the amplitude (an ECG's breathing in one part of the record): one autocorrelation over the
  series peaks near 360; the mean of the chunks' autocorrelations keeps the period of the whole series."""
  t = np.arange(16_000)
  v = np.exp(-0.5 * ((t % 50) - 10) ** 2 / 4.0) + 0.05 * np.random.default_rng(0).normal(size=len(t))
  v[4000:5600] += 10 * np.sin(2 * np.pi * t[4000:5600] / 360)
  assert dominant_period(v, high=400) == 50
  assert dominant_period(v[4000:5600], high=400) in range(350, 371)  # the stretch alone: its own wave


# ----------------------------------------------------------------------------- the matrix profile


def _brute_force(values, m, query, reference, exclusion, normalise, left=False):
  """Nearest-window distances by a double loop in float64, STUMPY's conventions for constant windows;
  `left`: only windows that start before the query's."""
  w = np.lib.stride_tricks.sliding_window_view(values, m)
  tol = 1e-8 * max(np.abs(w).max(), 1.0)
  out = np.full(query[1] - query[0], np.inf)
  for i in range(*query):
    for j in range(*reference):
      if abs(i - j) < exclusion or (left and j > i):
        continue
      a, b = w[i], w[j]
      if not normalise:
        d = np.linalg.norm(a - b)
      elif a.std() <= tol or b.std() <= tol:
        d = 0.0 if a.std() <= tol and b.std() <= tol else np.sqrt(m)
      else:
        d = np.linalg.norm((a - a.mean()) / a.std() - (b - b.mean()) / b.std())
      out[i - query[0]] = min(out[i - query[0]], d)
  return out


@pytest.mark.parametrize("normalise, left", [(True, False), (False, False), (True, True)])
def test_nearest_distances_equal_brute_force(normalise, left):
  v = 100.0 + _sine(90, 11, seed=1, noise=0.1)  # an offset: the standardisation must not lose precision
  v[50:62] = v[50]  # a flat segment: constant windows
  m = 8
  for query, reference in [((0, 83), (0, 83)), ((40, 83), (0, 35))]:
    got = nearest_distances(v, m, query, reference, exclusion=2, normalise=normalise, left=left)
    want = _brute_force(v, m, query, reference, 2, normalise, left)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    if left and query[0] == 0:
      assert np.isinf(got[:2]).all() and np.isfinite(got[2:]).all()  # nothing allowed before window 2


# ----------------------------------------------------------------------------- the prefix protocol


def test_nothing_after_train_end_trains_the_autoencoder():
  a = _sine(600, 20)
  b = a.copy()
  b[300:] = 5.0 * np.random.default_rng(3).normal(size=300)
  opts = WindowAEOptions(steps=20, batch=32)
  pa, pb = (WindowAutoencoder(x, 300, 20, opts).params for x in (a, b))
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_array_equal(x, y)  # same prefix, same seed: the same model, whatever follows it


@pytest.mark.parametrize("kind", ["flat", "end"])
def test_detector_finds_a_flat_segment_and_an_anomaly_at_the_very_end(kind):
  v = _sine(1500, 25, seed=4)
  if kind == "flat":
    begin, end = 1000, 1030
    v[begin:end] = v[begin]
  else:
    begin, end = 1470, 1500
    v[begin:end] += 0.8 * np.sin(2 * np.pi * np.arange(30) / 7)
  found = prefix_detector.detect_after_prefix(v, 500, FAST)
  assert found.window == 25 and found.window_rule.startswith("dominant period")
  assert ucr.is_correct(found.locations[0], begin, end), (found.locations, begin, end)
  assert np.isnan(found.scores[:500]).all()  # the prefix is never a candidate


def test_window_longer_than_the_prefix_is_an_error():
  with pytest.raises(ConfigError, match="prefix of at least"):
    prefix_detector.detect_after_prefix(_sine(300, 20), 50, prefix_detector.DetectorOptions(window=40))
  with pytest.raises(ConfigError, match="unknown detector method"):
    prefix_detector.DetectorOptions(methods=("mpx",)).check()


# ----------------------------------------------------------------------------- the command


def write_two_series(folder) -> None:
  """A spike after a prefix of 400 points (one value per line), and a damped stretch after 300 (one line)."""
  v = _sine(1200, 30, seed=5)
  v[900:915] += 1.5
  _write(folder, "001_spike_400_900_915.txt", v)
  w = _sine(1000, 20, seed=6)
  w[700:740] = w[700:740] * 0.2
  _write(folder, "002_damped_300_700_740.txt", w, one_line=True)


def test_command_on_two_series(tmp_path, capsys):
  write_two_series(tmp_path)
  out = tmp_path / "table.json"
  result = anomaly_benchmark.run(["--folder", str(tmp_path), "--steps", "60", "--out", str(out)])
  assert result["series"] == 2 and result["top1"] == 2 and result["top3"] == 2
  assert json.loads(out.read_text())["top1"] == 2
  assert [r["window"] for r in result["rows"]] == [30, 20]
  assert "top-1 2/2, top-3 2/2" in capsys.readouterr().out


def test_command_checks_every_series_before_compute(tmp_path):
  _write(tmp_path, "001_ok_400_900_915.txt", _sine(1200, 30))
  _write(tmp_path, "002_short_9000_9100_9200.txt", _sine(1200, 30))
  with pytest.raises(DataError, match="002_short.*train_end 9000 is outside"):
    anomaly_benchmark.run(["--folder", str(tmp_path)])
  with pytest.raises(ConfigError, match="--scales"):
    anomaly_benchmark.run(["--folder", str(tmp_path), "--scales", "a,b"])
  (tmp_path / "002_short_9000_9100_9200.txt").unlink()
  too_long = r"001_ok.*a window of 240 points needs a prefix of at least 480.*--scales"
  with pytest.raises(DataError, match=too_long):
    anomaly_benchmark.run(["--folder", str(tmp_path), "--window", "120", "--scales", "1,2"])


@pytest.mark.slow
def test_command_prints_one_error_line(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.anomaly_benchmark", "--folder", str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
    f"error: no UCR-format series in {tmp_path}: file names must end _<train_end>_<begin>_<end>.txt"
  ]
