"""Anomaly scoring against numpy and brute-force references, and the whole procedure on synthetic files."""

import itertools
import json
import math
import os

import numpy as np
import optax
import pytest
from flax import linen as nn

from ae_jax import anomaly, data, evaluators
from ae_jax.data import series_file
from ae_jax.data.dataset import Dataset
from ae_jax.data.series_segments import dominant_period
from ae_jax.runner.config import default_config
from ae_jax.training.train import create_train_state


def _correlated_errors(n, d, seed):
  rng = np.random.default_rng(seed)
  return np.abs(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d))


def test_gaussian_fit_and_mahalanobis_match_numpy():
  fit, new = _correlated_errors(200, 3, 0), _correlated_errors(7, 3, 1)
  g = anomaly.fit_gaussian(fit)
  mean, cov = fit.mean(axis=0), np.cov(fit.T)
  np.testing.assert_allclose(g.mean, mean, rtol=1e-12)
  np.testing.assert_allclose(g.cov, cov, rtol=1e-12)
  diff = new - mean
  expected = np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
  np.testing.assert_allclose(anomaly.mahalanobis(new, g), expected, rtol=1e-8)
  _, logdet = np.linalg.slogdet(cov)
  nll = 0.5 * (expected + logdet + 3 * math.log(2 * math.pi))
  np.testing.assert_allclose(anomaly.neg_log_density(new, g), nll, rtol=1e-8)
  # Full shrinkage: a diagonal covariance, i.e. a sum of squared z-scores.
  diagonal = anomaly.fit_gaussian(fit, shrinkage=1.0)
  np.testing.assert_allclose(anomaly.mahalanobis(new, diagonal), np.sum(diff**2 / fit.var(0, ddof=1), 1))
  # One dimension: the squared z-score.
  one = anomaly.fit_gaussian(fit[:, :1])
  np.testing.assert_allclose(anomaly.mahalanobis(new[:, :1], one), diff[:, 0] ** 2 / fit[:, 0].var(ddof=1))


def test_a_singular_covariance_still_scores():
  fit = np.repeat(_correlated_errors(50, 1, 2), 2, axis=1)  # two identical dimensions: singular
  scores = anomaly.mahalanobis(np.array([[1.0, 1.0], [5.0, 5.0]]), anomaly.fit_gaussian(fit))
  assert np.all(np.isfinite(scores)) and scores[1] > scores[0]


def _brute_force_best_fbeta(scores, labels, beta):
  best = 0.0
  for tau in [-np.inf, *np.unique(scores)]:  # predict scores > tau
    best = max(best, anomaly.precision_recall_fbeta(scores > tau, labels, beta)["fbeta"])
  return best


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_matches_brute_force(beta, seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(60) < 0.3
  scores = np.round(rng.normal(size=60) + 1.5 * labels, 1)  # rounded: many ties
  labels[0] = True
  tau, f = anomaly.best_threshold(scores, labels, beta)
  assert f == pytest.approx(_brute_force_best_fbeta(scores, labels, beta), rel=1e-12)
  assert anomaly.precision_recall_fbeta(scores > tau, labels, beta)["fbeta"] == pytest.approx(f, rel=1e-12)


def test_best_threshold_prefers_the_higher_threshold_on_ties_and_needs_an_anomaly():
  tau, f = anomaly.best_threshold(np.array([3.0, 2.0, 1.0]), np.array([True, False, False]), 1.0)
  assert f == 1.0 and 2.0 < tau < 3.0
  with pytest.raises(ValueError, match="at least one anomalous"):
    anomaly.best_threshold(np.array([1.0, 2.0]), np.array([False, False]), 0.1)


def test_precision_recall_fbeta_by_hand():
  pred = np.array([1, 1, 1, 0, 0, 0], bool)
  labels = np.array([1, 1, 0, 1, 0, 0], bool)
  m = anomaly.precision_recall_fbeta(pred, labels, beta=0.1)
  assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
  p, r = 2 / 3, 2 / 3
  assert m["fbeta"] == pytest.approx((1 + 0.01) * p * r / (0.01 * p + r))


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_matches_pairwise_count(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(40) < 0.4
  scores = np.round(rng.normal(size=40) + labels, 1)
  pairs = [
    1.0 if s > t else 0.5 if s == t else 0.0 for s, t in itertools.product(scores[labels], scores[~labels])
  ]
  assert anomaly.roc_auc(scores, labels) == pytest.approx(np.mean(pairs), rel=1e-12)
  assert math.isnan(anomaly.roc_auc(scores, np.zeros(40, bool)))


def test_point_errors_average_the_covering_windows():
  values = np.arange(6, dtype=np.float64)[:, None]  # [6, 1]
  windows, starts = series_file.windows(values, 3, 2)  # starts 0, 2, 3
  errors = np.ones_like(windows) * np.array([1.0, 2.0, 4.0])[:, None, None]  # window w is off by 1, 2, 4
  expected = [1, 1, (1 + 2) / 2, (2 + 4) / 2, (2 + 4) / 2, 4]
  np.testing.assert_allclose(anomaly.point_errors(6, errors, starts)[:, 0], expected)
  assert np.isnan(anomaly.point_errors(8, errors, starts)[6:]).all()  # points no window covers
  segment = series_file.Segment("s", "test", values, np.zeros(6, bool), 1, 5)
  scale = np.array([[1.0], [2.0], [4.0]])  # mean error at each window position
  units = anomaly.unit_errors([anomaly.WindowErrors(segment, starts, errors)], "point", scale)
  # points 1-4; errors / scale: window 0 gives 1, .5, .25; window 1: 2, 1, .5; window 2: 4, 2, 1
  np.testing.assert_allclose(units.errors[:, 0], [0.5, (0.25 + 2) / 2, (1 + 4) / 2, (0.5 + 2) / 2])
  assert units.parts[0][1] == slice(0, 4)


def test_sequence_scores_take_the_largest_point_score_of_consecutive_runs():
  labels = np.zeros(7, bool)
  labels[4] = True
  segment = series_file.Segment("s", "test", np.zeros((9, 1), np.float32), np.r_[False, labels, False], 1, 8)
  units = anomaly.UnitErrors(np.zeros((7 + 3, 1)), np.r_[labels, False, True, False], [])
  units.parts.extend([(segment, slice(0, 7)), (segment, slice(7, 10))])
  scores = np.array([1.0, 5.0, 2.0, 0.0, 3.0, 1.0, 9.0, 4.0, 0.5, 2.0])
  s, y = anomaly.sequence_scores(units, scores, 3)
  # runs of 3 from each part's start, the last one shorter: [1 5 2] [0 3 1] [9] | [4 .5 2]
  np.testing.assert_array_equal(s, [5.0, 3.0, 9.0, 4.0])
  np.testing.assert_array_equal(y, [False, True, False, True])


class _Shrink(nn.Module):
  """A stand-in autoencoder: recon = a * x (a learned scalar), so errors grow with |x|."""

  @nn.compact
  def __call__(self, x, *, train=False):
    a = self.param("a", nn.initializers.constant(0.5), ())
    return {"recon": a * x, "code": x[:, 0]}


def _synthetic_splits():
  """A sine with spikes: the threshold and test splits each hold one anomaly (points 60-69 of the series)."""
  rng = np.random.default_rng(0)

  def make(name, role, spike):
    values = np.sin(np.arange(200) / 5.0)[:, None] + 0.05 * rng.normal(size=(200, 1))
    labels = np.zeros(200, bool)
    if spike:
      values[60:70] += 4.0
      labels[60:70] = True
    return series_file.Segment(name, role, values.astype(np.float32), labels, 10, 190)

  segments = {"train": [], "validation": [make("f", "validation", False)]}
  segments["threshold"], segments["test"] = [make("v", "threshold", True)], [make("t", "test", True)]
  return series_file.AnomalySplits(segments, window=20, stride=5, unit="point")


def _anomaly_options(**options):
  return evaluators.section("anomaly", **{"stride": 2, "batch_size": 32, **options})


def _stand_in():
  model = _Shrink()
  return model, create_train_state(model, optax.sgd(0.1), np.zeros((1, 20, 1), np.float32), 0)


def test_detect_finds_the_spikes_and_writes_the_plot(tmp_path):
  model, state = _stand_in()
  dataset = Dataset("series_file", {}, None, anomaly=_synthetic_splits())
  report = anomaly.detect(model, state, _anomaly_options(), dataset, str(tmp_path / "a.png"))
  m = report.metrics
  assert m["test_precision"] == 1.0 and m["test_recall"] > 0.5
  assert m["test_roc_auc"] > 0.95 and m["threshold_fbeta"] > 0.9
  assert m["test_tp"] + m["test_fn"] == 10 and m["num_validation_units"] == 180
  assert os.path.getsize(report.plot) > 10_000 and "F0.1" in report.summary
  # per sequence of 20 points: points 10-189 make 9 sequences a split; the spike (60-69) lies in one
  assert m["seq_test_tp"] + m["seq_test_fn"] == 1 and m["seq_test_tn"] == 8
  assert m["seq_test_fbeta"] == 1.0 and "per sequence of 20 points" in report.summary


def test_top_discords_are_the_highest_windows_that_do_not_overlap():
  scores = [np.array([0, 0, 5, 5, 0, 0, 0, 1, 1, 0], float), np.array([0, 3, 3, 0], float)]
  segments = [None, None]
  found = anomaly.top_discords(segments, scores, 2, 3)
  # window means: series 0 -> [0, 2.5, 5, 2.5, 0, 0, .5, 1, .5]; series 1 -> [1.5, 3, 1.5]
  assert found == [(0, 2, 4, 5.0), (1, 1, 3, 3.0), (0, 7, 9, 1.0)]


def _planted_series(n=1200, seed=0):
  """A sum of two sines with noise and three planted anomalies (a spike, a level shift, a frequency
  burst), each 24 points long; returns (values [n, 1], intervals)."""
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  values = np.sin(2 * np.pi * t / 40) + 0.5 * np.sin(2 * np.pi * t / 13) + 0.05 * rng.normal(size=n)
  intervals = [(300, 324), (650, 674), (1000, 1024)]
  values[300:324] += 3.0
  values[650:674] -= 2.5
  values[1000:1024] = np.sin(2 * np.pi * t[1000:1024] / 4)
  return values[:, None], intervals


def test_unsupervised_detection_ranks_the_planted_anomalies_first(tmp_path):
  """A model whose reconstruction is the clean signal scores the three planted anomalies as the top
  three discords, and every labelled interval counts as found."""
  values, intervals = _planted_series()
  path = tmp_path / "planted.txt"
  np.savetxt(path, values)
  (tmp_path / "labels.json").write_text(__import__("json").dumps([list(i) for i in intervals]))
  c = data.data_config(
    "series_file", path=str(path), labels=str(tmp_path / "labels.json"), window=24, stride=4
  )
  dataset = data.get_dataset(c)
  (score,) = dataset.anomaly.segments["score"]
  t = np.arange(len(values))
  clean = (np.sin(2 * np.pi * t / 40) + 0.5 * np.sin(2 * np.pi * t / 13))[:, None]
  clean = ((clean - values.mean()) / (values.std() + 1e-8)).astype(np.float32)

  class _Clean(nn.Module):  # reconstructs each window as the clean signal at its position
    @nn.compact
    def __call__(self, x, *, train=False):
      self.param("unused", nn.initializers.zeros, ())
      starts = jnp.argmin(jnp.sum(jnp.abs(x[:, None, :, 0] - windows_all[None]), -1), axis=1)
      return {"recon": clean_windows[starts], "code": x[:, 0]}

  import jax.numpy as jnp

  all_w, starts = series_file.windows(score.values, 24, 1)
  windows_all = jnp.asarray(all_w[..., 0])
  clean_windows = jnp.asarray(np.stack([clean[a : a + 24] for a in starts]))
  model = _Clean()
  state = create_train_state(model, optax.sgd(0.1), np.zeros((1, 24, 1), np.float32), 0)
  report = anomaly.detect(model, state, _anomaly_options(stride=4, top_k=3), dataset, str(tmp_path / "a.png"))
  found = sorted((d["start"], d["end"]) for d in report.metrics["discords"])
  for (lo, hi), (d_lo, d_hi) in zip(intervals, found, strict=True):
    assert d_lo < hi and lo < d_hi, (intervals, found)  # each discord overlaps its planted anomaly
  assert report.metrics["intervals_found"] == 3.0 and report.metrics["roc_auc"] > 0.9
  assert os.path.getsize(report.plot) > 10_000 and "top 3 discords" in report.summary


def test_anomaly_evaluator_needs_a_series_dataset_and_valid_options():
  config = default_config()
  config.evals.anomaly = evaluators.section("anomaly")
  with pytest.raises(ValueError, match="cannot run on dataset 'fashion_mnist': it has no anomaly segments"):
    evaluators.check(config)
  with pytest.raises(ValueError, match="unknown config.evals.a.score 'likelihood'"):
    anomaly.check_options(evaluators.section("anomaly", score="likelihood"), "config.evals.a")


@pytest.mark.training
def test_unsupervised_training_and_scoring_find_the_planted_anomalies(tmp_path):
  """The whole unsupervised path on a generated series: an MLP autoencoder trained on every window (the
  largest training errors trimmed from the loss after a warm-up), then the top-3 discords, each of which
  overlaps one of the three planted anomalies."""
  from ae_jax.models import model_config
  from ae_jax.runner import loop

  values, intervals = _planted_series(n=1600, seed=1)
  np.savetxt(tmp_path / "series.txt", values)
  (tmp_path / "labels.json").write_text(__import__("json").dumps([list(i) for i in intervals]))
  config = default_config()
  config.model = model_config("mlp_ae", hidden=(32,), code_dim=6, output_act="identity")
  config.data = data.data_config(
    "series_file",
    path=str(tmp_path / "series.txt"),
    labels=str(tmp_path / "labels.json"),
    window=24,
    stride=2,
  )
  config.evals = {"anomaly": evaluators.section("anomaly", stride=4, top_k=3)}
  config.trim.update(fraction=0.1, after=150)
  config.update(dict(batch_size=32, total_steps=600, log_every=200, checkpoint_every=0))
  config.optimizer.learning_rate = 3e-3
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
  found = sorted((d["start"], d["end"]) for d in summary["results"].details["anomaly/discords"])
  for lo, hi in intervals:
    assert any(d_lo < hi and lo < d_hi for d_lo, d_hi in found), (intervals, found)
  assert summary["metrics"]["anomaly/intervals_found"] == 3.0
  assert os.path.exists(tmp_path / "run" / "anomaly.png")


def _discord_parts(n, labelled, times=None):
  labels = np.zeros(n, bool)
  labels[50:60] = labelled
  seg = series_file.Segment("s.csv", "score", np.sin(np.arange(n) / 5.0)[:, None], labels, 0, n, times)
  units = anomaly.UnitErrors(np.zeros((n, 1)), labels, [(seg, slice(0, n))])
  return units, series_file.AnomalySplits(
    {"score": [seg]}, 10, 1, "point", supervised=False, labelled=labelled
  )


@pytest.mark.parametrize("labelled", [False, True])
def test_discord_plot_says_what_it_shades_and_its_rank_numbers_do_not_overlap(labelled):
  import matplotlib.pyplot as plt

  from ae_jax.anomaly import plot

  n = 5000
  times = np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(15, "m")
  units, splits = _discord_parts(n, labelled, times)
  discords = [(0, 100 + 10 * k, 110 + 10 * k, 5.0 - k) for k in range(6)] + [(0, 4000, 4010, 0.1)]
  fig = plot.discord_figure(units, np.linspace(0, 1, n), discords, splits, "title")
  try:
    top = fig.axes[0]
    assert ("labelled anomalies red" in top.get_title()) == labelled
    assert "no labels" in top.get_title() or labelled
    np.testing.assert_array_equal(top.lines[0].get_xdata(), times)  # the time column is the x axis
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in top.texts}
    assert sorted(boxes) == [f"#{k}" for k in range(1, 8)]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
      assert not box_a.padded(1.0).overlaps(box_b), (a, box_a, b, box_b)  # at least a pixel apart
  finally:
    plt.close(fig)


def test_unsupervised_discords_carry_the_time_column(tmp_path):
  n = 300
  values = np.sin(np.arange(n) / 5.0)
  values[200:210] += 6.0
  times = np.datetime64("2024-03-01T00:00") + np.arange(n) * np.timedelta64(1, "h")
  lines = [f"{t},{v}" for t, v in zip(times.astype(str), values, strict=True)]
  (tmp_path / "s.csv").write_text("when,value\n" + "\n".join(lines) + "\n")
  c = data.data_config("series_file", path=str(tmp_path / "s.csv"), time_column="when", window=20, stride=2)
  model, state = _stand_in()
  report = anomaly.detect(
    model, state, _anomaly_options(top_k=1), data.get_dataset(c), str(tmp_path / "d.png")
  )
  (d,) = report.metrics["discords"]
  assert d["start"] < 210 and 200 < d["end"]  # the spike
  assert (d["start_time"], d["last_time"]) == (str(times[d["start"]]), str(times[d["end"] - 1]))
  assert f"({d['start_time']} to {d['last_time']})" in report.summary


def _prefix_dataset(tmp_path, values, interval, **options):
  np.savetxt(tmp_path / "s.txt", values)
  (tmp_path / "labels.json").write_text(__import__("json").dumps([list(interval)]))
  c = data.data_config(
    "series_file", path=str(tmp_path / "s.txt"), labels=str(tmp_path / "labels.json"), **options
  )
  return data.get_dataset(c)


@pytest.mark.parametrize("where", ["middle", "end"])
def test_after_a_prefix_the_planted_spike_is_the_top_discord_by_the_ucr_rule(tmp_path, where):
  """The stand-in's error grows with |x|: a spike after the prefix is the best discord, scored by the
  archive's rule, also when it ends the series; nothing in the prefix is reported."""
  t = np.arange(1500)
  values = np.sin(2 * np.pi * t / 40) + 0.05 * np.random.default_rng(0).normal(size=1500)
  interval = (1000, 1020) if where == "middle" else (1480, 1500)
  values[interval[0] : interval[1]] += 3.0
  dataset = _prefix_dataset(tmp_path, values[:, None], interval, train_end="800", window=20)
  model, state = _stand_in()
  report = anomaly.detect(model, state, _anomaly_options(top_k=3), dataset, str(tmp_path / "a.png"))
  m = report.metrics
  best = m["discords"][0]
  assert best["start"] < interval[1] and interval[0] < best["end"]
  assert all(d["start"] >= 800 - 20 for d in m["discords"]) and m["num_points"] == 700
  assert (m["top1"], m["topk"], m["intervals_found"]) == (1.0, 1.0, 1.0)
  assert "after the normal prefix" in report.summary and "top-1 1, top-3 1" in report.summary
  assert "window 20 = config.data.window" in report.summary and os.path.getsize(report.plot) > 10_000


def test_prefix_detectors_added_to_the_model_find_a_flat_segment(tmp_path):
  """A stand-in that reconstructs every window exactly scores every point alike, so alone it cannot
  name the flat stretch; the matrix profile added by `methods` finds it, and the window is the prefix's
  period when none is given."""
  t = np.arange(1500)
  values = np.sin(2 * np.pi * t / 40) + 0.02 * np.random.default_rng(1).normal(size=1500)
  values[1100:1160] = values[1100]
  dataset = _prefix_dataset(tmp_path, values[:, None], (1100, 1160), train_end="800", window=0)
  assert dataset.anomaly.window == 40
  model, state = _stand_in()
  state = state.replace(params={"a": np.float32(1.0)})  # recon = x
  alone = anomaly.detect(model, state, _anomaly_options(top_k=1), dataset)
  added = anomaly.detect(model, state, _anomaly_options(top_k=1, methods="mp,mp_prefix"), dataset)
  assert alone.metrics["top1"] == 0.0 and added.metrics["top1"] == 1.0
  assert "mahalanobis + mp,mp_prefix; window 40 = the dominant period" in added.summary


def test_prefix_detector_methods_are_checked_against_the_dataset(tmp_path):
  t = np.arange(600.0)
  np.savetxt(tmp_path / "s.txt", np.sin(t / 5))
  whole = data.get_dataset(data.data_config("series_file", path=str(tmp_path / "s.txt"), window=20))
  with pytest.raises(ValueError, match="unknown \\['matrix'\\]"):
    anomaly.check_options(_anomaly_options(methods="matrix"), "config.evals.a")
  with pytest.raises(ValueError, match="methods needs a normal prefix: set config.data.train_end"):
    anomaly.check_options(_anomaly_options(methods="mp"), "config.evals.a", whole.anomaly)
  np.savetxt(tmp_path / "two.txt", np.column_stack([np.sin(t / 5), np.cos(t / 5)]))
  two = data.get_dataset(
    data.data_config("series_file", path=str(tmp_path / "two.txt"), window=20, train_end="400")
  )
  with pytest.raises(ValueError, match="methods scores univariate series"):
    anomaly.check_options(_anomaly_options(methods="mp"), "config.evals.a", two.anomaly)


@pytest.mark.training
def test_prefix_protocol_trains_on_the_prefix_and_names_the_anomaly_after_it(tmp_path):
  """The whole archive protocol through the trainer (lstm_anomaly.py:series,mode=prefix with a small MLP):
  the window from the prefix's period, training on the prefix only, and the one anomaly after it as the
  best discord by the archive's rule."""
  from ae_jax.models import model_config
  from ae_jax.runner import loop
  from experiments.configs import lstm_anomaly

  values, _ = _planted_series(n=1600, seed=2)
  values = values[:, 0] - np.where((np.arange(1600) >= 300) & (np.arange(1600) < 324), 3.0, 0.0)  # clean
  values[1200:1224] += 3.0
  np.savetxt(tmp_path / "series.txt", values)
  (tmp_path / "labels.json").write_text("[[1200, 1224]]")
  config = lstm_anomaly.get_config("series,mode=prefix")
  config.model = model_config("mlp_ae", hidden=(32,), code_dim=6, output_act="identity")
  config.data.update(path=str(tmp_path / "series.txt"), labels=str(tmp_path / "labels.json"), train_end="800")
  config.update(dict(batch_size=32, total_steps=300, log_every=100, checkpoint_every=0))
  config.evals.validation.every = 100
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
  details, metrics = summary["results"].details, summary["metrics"]
  assert metrics["anomaly/top1"] == 1.0, details["anomaly/discords"]
  assert all(d["start"] >= 800 - 39 for d in details["anomaly/discords"])
  window = dominant_period(values[:800], high=400)  # 39: the periods 40 and 13 share the lag 39
  rule = "the dominant period of series.txt's prefix, 800 points"
  assert f"window {window} = {rule}" in "\n".join(summary["results"].lines)
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert (saved["anomaly/window"], saved["anomaly/window_rule"]) == (window, rule)


def test_after_a_prefix_each_series_is_scored_by_its_own_best_discords(tmp_path):
  """Two series sharing a model, top_k=1: the reported discord is the larger spike's, yet each series'
  interval counts by the archive's rule against that series' own best discord, as the archive scores
  every series alone."""
  t = np.arange(1500)
  for name, height in (("a.txt", 6.0), ("b.txt", 3.0)):
    values = np.sin(2 * np.pi * t / 40)
    values[1000:1020] += height
    np.savetxt(tmp_path / name, values)
  (tmp_path / "labels.json").write_text('{"a.txt": [[1000, 1020]], "b.txt": [[1000, 1020]]}')
  paths = f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}"
  c = data.data_config(
    "series_file", path=paths, labels=str(tmp_path / "labels.json"), train_end="800", window=20
  )
  model, state = _stand_in()
  report = anomaly.detect(model, state, _anomaly_options(top_k=1), data.get_dataset(c))
  assert [d["series"] for d in report.metrics["discords"]] == ["a.txt"]
  assert report.metrics["top1"] == 2.0 and report.metrics["intervals_found"] == 1.0
