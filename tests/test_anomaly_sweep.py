"""The prefix detector's views and their sums: a sum of precomputed views is the detector's score for those
options, `mp_diff` ignores a slow drift and `mp_diff_raw` sees a louder stretch of the same shape, the
sweep command scores each sum as the benchmark does, and the leave-one-series-out selection against a hand
count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ae_jax.anomaly import prefix_detector
from ae_jax.anomaly.window_ae import WindowAEOptions
from ae_jax.core.errors import ConfigError
from experiments import anomaly_benchmark, anomaly_sweep
from tests.test_anomaly_benchmark import _sine, write_two_series

AE = WindowAEOptions(steps=60, batch=64)


def test_a_sum_of_precomputed_views_is_the_detectors_score():
  """Views computed once at the union of lengths, then summed for a subset, equal score_profile with that
  subset's options (the sweep's fast path = the detector's simple path)."""
  v = _sine(1500, 24, seed=2)
  v[1100:1130] += 0.6
  every = prefix_detector.DetectorOptions(
    methods=("mp_left", "mp_diff", "ae_latent"), scales=(0.25, 0.5, 1.0, 2.0), ae=AE
  )
  views = prefix_detector.view_profiles(v, 500, 24, every)
  assert {length for _, length in views} == {6, 12, 24, 48}
  subset = prefix_detector.DetectorOptions(methods=("mp_diff", "ae_latent"), scales=(0.5, 1.0), ae=AE)
  chosen = [x for (m, length), x in views.items() if m in subset.methods and length in (12, 24)]
  want = prefix_detector.score_profile(v, 500, 24, subset)
  np.testing.assert_allclose(prefix_detector.combine(chosen, 500, 24), want, rtol=1e-12)
  assert np.isnan(want[: 500 + 12]).all() and np.isfinite(want[500 + 12 :]).all()
  tiny = prefix_detector.DetectorOptions(methods=("mp_prefix",), scales=(0.1, 0.125, 1.0))
  assert len(prefix_detector.view_profiles(v, 500, 24, tiny)) == 2  # 0.1 and 0.125 both give 4 points


def test_mp_diff_ignores_a_slow_drift_that_moves_the_matrix_profile():
  v = _sine(1200, 30, seed=3)
  drift = v + 0.004 * np.arange(len(v))  # a linear trend: a constant in the first difference
  options = prefix_detector.DetectorOptions(methods=("mp_diff", "mp_prefix"), scales=(1.0,))
  plain, drifted = (prefix_detector.view_profiles(x, 400, 30, options) for x in (v, drift))
  np.testing.assert_allclose(drifted[("mp_diff", 30)], plain[("mp_diff", 30)], atol=2e-3)
  assert np.abs(drifted[("mp_prefix", 30)] - plain[("mp_prefix", 30)]).max() > 0.05


def test_mp_diff_raw_finds_a_louder_stretch_that_z_normalising_the_difference_hides():
  """A smooth 1.8x swell of the amplitude around point 1130 keeps every window's shape: the z-normalised
  difference (`mp_diff`) sees nothing above its noise, the raw difference peaks there."""
  t = np.arange(1500)
  v = _sine(1500, 30, seed=3) * (1 + 0.8 * np.exp(-(((t - 1130) / 40.0) ** 2)))
  options = prefix_detector.DetectorOptions(methods=("mp_diff", "mp_diff_raw"), scales=(1.0,))
  views = prefix_detector.view_profiles(v, 500, 30, options)
  query = slice(515, 1470)
  raw, shape = views[("mp_diff_raw", 30)], views[("mp_diff", 30)]
  assert abs(int(np.argmax(raw)) - 1130) <= 15 and raw.max() > 3 * np.median(raw[query])
  assert shape[1080:1180].max() < 1.5 * np.median(shape[query])


def test_leave_one_out_chooses_the_best_sum_on_the_other_series():
  top1 = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 1, 1, 0]], bool)
  top3 = np.array([[1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]], bool)
  # leaving out series 0: sums 1 (2 top-1) and 2 (2 top-1, 3 top-3) -> sum 2, wrong top-1, right top-3;
  # series 1: sum 1 (3 top-1) -> wrong, wrong; series 2: sums 0 and 1 tie on top-1 and top-3 (the first
  # wins: sum 0) -> wrong top-1, right top-3; series 3: sums 0, 1, 2 have 2, 2, 2 top-1 and 3, 2, 3 top-3
  # -> sum 0: wrong, wrong
  assert anomaly_sweep.leave_one_out(top1, top3) == (0, 2)
  same = np.ones((2, 3), bool)
  assert anomaly_sweep.leave_one_out(same, same) == (3, 3)


def test_the_sweep_scores_a_sum_as_the_benchmark_does(tmp_path, capsys):
  write_two_series(tmp_path)
  out = tmp_path / "sweep.json"
  args = ["--folder", str(tmp_path), "--steps", "60", "--methods", "mp_left,mp_diff,ae_latent"]
  result = anomaly_sweep.run(
    [*args, "--max_methods", "3", "--scale_sets", "1|0.25,0.5,1,2", "--out", str(out)]
  )
  assert len(result["sums"]) == 7 * 2 and json.loads(out.read_text())["best"] == result["best"]
  most = result["sums"][result["most_top3"]]
  assert sum(most["top3"]) == max(sum(r["top3"]) for r in result["sums"].values())
  for methods, scales in (("mp_left,mp_diff,ae_latent", "0.25,0.5,1,2"), ("mp_diff", "1")):
    bench = anomaly_benchmark.run(
      ["--folder", str(tmp_path), "--steps", "60", "--methods", methods, "--scales", scales]
    )
    sweep = result["sums"][f"{methods} @ {scales}"]
    assert sweep["top1"] == [r["top1"] for r in bench["rows"]]
    assert sweep["top3"] == [r["top3"] for r in bench["rows"]]
  assert "chosen leaving each series out" in capsys.readouterr().out
  with pytest.raises(ConfigError, match="--scale_sets"):
    anomaly_sweep.run(["--folder", str(tmp_path), "--scale_sets", "1|0,2"])
