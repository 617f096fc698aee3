"""Evaluators end to end: built from config sections, run during and after training, checked before it,
re-run on a checkpoint, and their metrics against direct computations."""

import functools
import glob
import json
import logging
import os

import chex
import jax
import ml_collections
import numpy as np
import pytest

from ae_jax import data, evaluators
from ae_jax.core import cli, parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data.dataset import stack_examples
from ae_jax.evaluators import batches, codebook, latent_activity
from ae_jax.metrics import image_metrics
from ae_jax.models import model_config
from ae_jax.runner import experiment, loop
from ae_jax.runner.config import check_config, default_config
from ae_jax.training import outputs


@pytest.fixture
def image_config(tiny_config):
  """tiny_config on 16x16 images (SSIM's window needs 11x11) with every image evaluator."""
  tiny_config.data = data.data_config("synthetic", shape=(16, 16, 1), num_train=96, num_test=40)
  tiny_config.evals.test.every = 6
  tiny_config.evals.reconstructions = evaluators.section("reconstructions", num=8)
  tiny_config.evals.latents = evaluators.section("latents", num=40)
  tiny_config.evals.quality = evaluators.section("image_quality", split="test")
  return tiny_config


@pytest.mark.training
def test_training_runs_every_evaluator_and_writes_results(image_config, tmp_path):
  summary = loop.train_and_evaluate(image_config, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["step"] == 12
  for key in ("test/loss", "test/mse", "test/mse_of_mean_image", "quality/psnr", "quality/ssim"):
    assert key in results and key in summary["metrics"], key
  assert sorted(os.path.basename(f) for f in results["files"]) == ["latents.png", "reconstructions.png"]
  assert all(os.path.getsize(f) > 1000 for f in results["files"])
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if "test/loss" in r] == [6, 12]  # periodic, and again at the end
  assert not any("quality/ssim" in r for r in rows[:-1])  # every=0: after training only
  # the image-quality metrics equal a direct computation on the whole test split
  dataset, state, model = summary["dataset"], summary["state"], summary["model"]
  x = stack_examples(dataset.split("test"), dataset.info, range(40))["x"]
  recon = outputs.reconstruct(model, state, x)["recon"]
  unit = lambda v: np.clip(dataset.info.to_unit(np.asarray(v)), 0.0, 1.0)  # noqa: E731
  np.testing.assert_allclose(
    results["quality/ssim"], np.mean(image_metrics.ssim(unit(x), unit(recon))), rtol=1e-5
  )
  np.testing.assert_allclose(
    results["quality/psnr"], np.mean(image_metrics.psnr(unit(x), unit(recon))), rtol=1e-5
  )
  np.testing.assert_allclose(results["test/mse"], np.mean(np.square(recon - x)), rtol=1e-5)


def test_codebook_usage_over_the_whole_split_matches_a_histogram_and_one_device():
  """Code usage is the histogram of every position's code over all test examples, summed over devices:
  8 devices give the same counts as one, and the metrics follow from the counts."""
  config = default_config()
  config.model = model_config(
    "vqvae",
    hidden=8,
    res_hidden=4,
    num_res_layers=1,
    quantizer={"name": "vq", "num_codes": 32, "code_dim": 4},
  )
  config.data = data.data_config("synthetic", shape=(8, 8, 3), num_train=16, num_test=40)
  config.eval_batch_size = 16
  exp = experiment.setup(config)
  dataset, model, state, ctx = exp.dataset, exp.model, exp.state, exp.context()
  evaluate = evaluators.build(config, ctx)  # (just to see the registry builds it)
  assert "test" in evaluate
  section = evaluators.section("codebook", split="test")
  run = evaluators.EVALUATORS["codebook"].build("codebook", section, ctx)
  eight = run(parallel.replicate(state), 0, True).metrics
  one = run(parallel.replicate(state, jax.local_devices()[:1]), 0, True).metrics
  assert eight == one
  x = stack_examples(dataset.split("test"), dataset.info, range(40))["x"]
  indices = outputs.reconstruct(model, state, x)["indices"]
  counts = np.bincount(indices.reshape(-1), minlength=32)
  assert eight == codebook.usage(counts)
  assert eight["codes_used"] == np.mean(counts > 0) and eight["dead_codes"] == np.sum(counts == 0)
  p = counts / counts.sum()
  np.testing.assert_allclose(eight["perplexity"], np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rtol=1e-9)


def test_active_latent_dimensions_follow_the_variance_of_the_posterior_means():
  """active_dims counts the dimensions whose posterior mean varies over the split by more than the
  threshold (checked against the means computed directly); 8 devices report what 1 device does; a
  dimension whose encoder weights are zeroed (a collapsed one) is inactive."""
  config = default_config()
  config.model = model_config("vae_mlp", hidden=(16,), latent_dim=6)
  config.data = data.data_config("synthetic", shape=(8, 8, 1), num_train=16, num_test=40)
  config.eval_batch_size = 16
  exp = experiment.setup(config)
  dataset, model, state = exp.dataset, exp.model, exp.state
  params = jax.tree.map(np.array, jax.device_get(state.params))
  params["encoder"]["code"]["kernel"][:, 2] = 0.0  # the mean's dimension 2 collapses to its bias
  state = state.replace(params=params)
  ctx = exp.context()
  section = evaluators.section("latent_activity", split="test", threshold=1e-4)
  run = evaluators.EVALUATORS["latent_activity"].build("activity", section, ctx)
  eight = run(parallel.replicate(state), 0, True).metrics
  one = run(parallel.replicate(state, jax.local_devices()[:1]), 0, True).metrics
  x = stack_examples(dataset.split("test"), dataset.info, range(40))["x"]
  mean, _ = model.apply({"params": state.params}, x, method="encode")
  variance = np.var(np.asarray(mean, np.float64), axis=0)
  assert variance[2] < 1e-12 and eight["latent_dims"] == 6
  assert eight["active_dims"] == np.sum(variance > 1e-4) == 5
  np.testing.assert_allclose(eight["mean_variance"], variance.mean(), rtol=1e-4)
  chex.assert_trees_all_close(eight, one, rtol=1e-5)
  zeros = {"sum": np.zeros(3), "sum_sq": np.zeros(3), "count": 4.0}
  assert latent_activity.activity(zeros, 0.01)["active_dims"] == 0


@pytest.mark.parametrize(
  "change, match",
  [
    (
      lambda c: c.evals.update(q=ml_collections.ConfigDict({"type": "lossez", "split": "test"})),
      "unknown config.evals.q.type 'lossez'; did you mean 'losses'",
    ),
    (lambda c: c.evals.test.update(splitt="x"), "config.evals.test.splitt is not an option of type 'losses'"),
    (
      lambda c: c.evals.test.update(split="validation"),
      "not a split of dataset 'synthetic'.*validation_size",
    ),
    (lambda c: c.evals.update(s=evaluators.section("samples")), "needs a model with \\['generative'\\]"),
    (
      lambda c: (
        setattr(c, "data", data.data_config("synthetic_sequences"))
        or c.evals.update(r=evaluators.section("reconstructions"))
      ),
      "cannot run on dataset 'synthetic_sequences': its examples cannot be drawn",
    ),
  ],
)
def test_evaluators_the_config_cannot_run_fail_before_training(tiny_config, change, match):
  change(tiny_config)
  with pytest.raises(ConfigError, match=match):
    check_config(tiny_config, num_processes=1, local_devices=8)


@pytest.mark.parametrize("key", ["eval_every", "likelihood_eval", "anomaly", "visualize"])
def test_old_keys_name_what_replaced_them(tiny_config, key):
  tiny_config[key] = 5
  with pytest.raises(ConfigError, match=f"config.{key} was replaced by"):
    check_config(tiny_config, num_processes=1, local_devices=8)


@pytest.mark.training
def test_a_checkpoint_can_be_evaluated_again(image_config, tmp_path):
  """evaluate_checkpoint restores the latest, a given or the best step and runs the evaluators it is
  given: the same test metrics as the training run's own final evaluation."""
  image_config.update({"checkpoint_every": 6})
  summary = loop.train_and_evaluate(image_config, str(tmp_path))
  step, result, path = loop.evaluate_checkpoint(image_config, str(tmp_path), names=["test", "quality"])
  assert step == 12 and path.endswith("eval_12.json") and os.path.exists(path)
  assert result.metrics["test/mse"] == pytest.approx(summary["metrics"]["test/mse"], rel=1e-6)
  assert result.metrics["quality/ssim"] == pytest.approx(summary["metrics"]["quality/ssim"], rel=1e-6)
  step6, result6, _ = loop.evaluate_checkpoint(image_config, str(tmp_path), step=6, names=["test"])
  with open(tmp_path / "metrics.jsonl") as f:
    at6 = [json.loads(line) for line in f if '"test/mse"' in line][0]
  assert step6 == 6 and result6.metrics["test/mse"] == pytest.approx(at6["test/mse"], rel=1e-6)
  with pytest.raises(ConfigError, match="no evaluator named \\['nope'\\]"):
    loop.evaluate_checkpoint(image_config, str(tmp_path), names=["nope"])
  with pytest.raises(Exception, match="has no best state to evaluate"):
    loop.evaluate_checkpoint(image_config, str(tmp_path), best=True)
  with pytest.raises(Exception, match="has no checkpoint to evaluate"):
    loop.evaluate_checkpoint(image_config, str(tmp_path / "empty"))


@pytest.mark.training
def test_evaluating_a_checkpoint_writes_its_own_files_and_says_which(image_config, tmp_path, capsys):
  """Re-evaluation writes eval_<step>.json and eval_<step>_<name>.png beside the run's results.json and
  pictures, which stay as the run wrote them; its report names the files it wrote."""
  loop.train_and_evaluate(image_config, str(tmp_path))
  run_files = {n: (tmp_path / n).read_bytes() for n in ("results.json", "reconstructions.png", "latents.png")}
  image_config.evals.reconstructions.num = 3  # a different picture than the run's
  step, result, path = loop.evaluate_checkpoint(image_config, str(tmp_path), names=["reconstructions"])
  assert path == str(tmp_path / "eval_12.json") and result.files == [
    str(tmp_path / "eval_12_reconstructions.png")
  ]
  assert os.path.getsize(result.files[0]) > 100
  assert {n: (tmp_path / n).read_bytes() for n in run_files} == run_files
  cli.report(step, result, str(tmp_path), evaluation=path)
  out = capsys.readouterr().out
  assert f"results:     {path}\n" in out and f"files:       {result.files[0]}" in out
  assert "results.json" not in out and "metrics.jsonl" not in out  # an evaluation updates neither


def test_the_reconstruction_grid_labels_its_rows(tmp_path):
  """Rows alternate originals and reconstructions, each named in a white margin on the left: the tiles
  start right of it, and each label's dark pixels lie beside its own row ("reconstruction" is longer)."""
  from PIL import Image

  from ae_jax.core import visualize

  originals = np.full((10, 8, 8, 1), 0.5, np.float32)  # 8 per row: 2 row pairs, the second short
  path = visualize.save_reconstructions(str(tmp_path / "r.png"), originals, originals, ncols=8)  # 3x
  img = np.asarray(Image.open(path), np.float32)
  blank = np.ones((6, 8, 8, 1), np.float32)  # the short row pair is padded with white tiles
  tiles = np.concatenate([originals[:8], originals[:8], originals[8:], blank, originals[8:], blank])
  grid = visualize.image_grid(tiles, 8).repeat(3, 0).repeat(3, 1)[..., 0]
  margin = img.shape[1] - grid.shape[1]
  assert margin > 0 and img.shape[0] == grid.shape[0]
  np.testing.assert_array_equal(img[:, margin:], grid)  # the grid itself, unchanged, right of the labels
  pitch, pad = (8 + 2) * 3, 2 * 3
  label_extent = []
  for row in range(4):
    band = img[pad + row * pitch : pad + row * pitch + 8 * 3, :margin]
    dark = np.nonzero((band < 128).any(axis=0))[0]
    assert dark.size, f"row {row} has no label"
    label_extent.append(dark.max())
  gaps = np.concatenate([img[row * pitch : row * pitch + pad, :margin] for row in range(4)])
  assert (gaps > 128).all()  # no label spills between rows
  assert label_extent[0] == label_extent[2] < label_extent[1] == label_extent[3]


def test_only_project_errors_become_one_line(capsys):
  def config_error():
    raise ConfigError("config.x is bad; use y")

  with pytest.raises(SystemExit) as e:
    cli.run_or_exit(config_error)
  assert e.value.code == 1 and capsys.readouterr().err == "error: config.x is bad; use y\n"

  def bug():
    raise ZeroDivisionError("a bug keeps its traceback")

  with pytest.raises(ZeroDivisionError):
    cli.run_or_exit(bug)


@pytest.mark.training
def test_a_profile_of_the_chosen_steps_lands_in_tensorboard(tiny_config, tmp_path):
  tiny_config.profile.update(start=4, steps=2)
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  traces = glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert traces and os.path.getsize(traces[0]) > 1000


@pytest.mark.training
def test_parameters_and_gradients_are_logged_per_module(tiny_config, tmp_path):
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    row = json.loads(f.readline())
  for key in ("grad_norm/encoder", "grad_norm/decoder", "param_norm/encoder", "param_norm/decoder"):
    assert row[key] > 0, key
  np.testing.assert_allclose(
    row["grad_norm"] ** 2, row["grad_norm/encoder"] ** 2 + row["grad_norm/decoder"] ** 2, rtol=0.05
  )


def test_evaluation_sums_are_the_same_on_one_device_and_eight(tiny_config):
  """split_sums psums over every device: the test losses of 8 devices equal those of 1."""
  exp = experiment.setup(tiny_config)
  state, ctx = exp.state, exp.context()
  run = evaluators.EVALUATORS["losses"].build("test", evaluators.section("losses"), ctx)
  eight = run(parallel.replicate(state), 0, False).metrics
  one = run(parallel.replicate(state, jax.local_devices()[:1]), 0, False).metrics
  chex.assert_trees_all_close(eight, one, rtol=1e-6)


def _abs_error_sums(state, batch, *, model):
  """The README's custom evaluator: this device's sum of per-example mean |x - recon|, and the count."""
  recon = batches.model_outputs(model, state, batch)["recon"]
  err = jax.numpy.abs(recon - batch["x"]).reshape(batch["x"].shape[0], -1).mean(axis=1)
  return {"sum": jax.numpy.sum(err * batch["valid"]), "count": jax.numpy.sum(batch["valid"])}


def _build_mae(name, section, ctx):
  sums_fn = functools.partial(_abs_error_sums, model=ctx.model)

  def evaluate(rstate, step, final):
    s = batches.section_sums(sums_fn, rstate, ctx, section)
    return evaluators.Result({"mae": float(s["sum"] / s["count"])})

  return evaluate


@pytest.mark.training
def test_a_custom_evaluator_as_the_readme_writes_it_runs_during_and_after_training(tiny_config, tmp_path):
  evaluators.register(
    evaluators.EvaluatorSpec(
      name="test_mae", build=_build_mae, options={"max_examples": None}, description="mean absolute error"
    )
  )
  try:
    tiny_config.evals.mae = evaluators.section("test_mae", split="test", every=6)
    summary = loop.train_and_evaluate(tiny_config, str(tmp_path))
  finally:
    evaluators.EVALUATORS.unregister("test_mae")
  with open(tmp_path / "metrics.jsonl") as f:
    assert [r["step"] for r in map(json.loads, f) if "mae/mae" in r] == [6, 12]
  dataset, state, model = summary["dataset"], summary["state"], summary["model"]
  x = stack_examples(dataset.split("test"), dataset.info, range(len(dataset.split("test"))))["x"]
  recon = outputs.reconstruct(model, state, x)["recon"]
  np.testing.assert_allclose(summary["metrics"]["mae/mae"], np.mean(np.abs(recon - x)), rtol=1e-5)


def test_a_long_evaluation_logs_its_progress_and_a_short_one_nothing(caplog):
  """Progress lines (fake clock, seconds): none in the first 5 s, then at most one every 15 s, with the
  examples done and the time left at the rate since the first update (compilation excluded)."""
  caplog.set_level(logging.INFO, logger="ae_jax")
  now = [0.0]
  progress = outputs.Progress("likelihood on test", 1000, clock=lambda: now[0])
  for t, done in [(2.0, 100), (4.0, 300), (7.0, 600), (9.0, 700), (23.0, 800), (30.0, 1000)]:
    now[0] = t
    progress.update(done)
  progress.close()
  lines = [r.getMessage() for r in caplog.records if r.name == "ae_jax.training.outputs"]
  assert lines == [
    # 500 examples in the 5 s since the first update: 100 a second, 400 left
    "likelihood on test: 600 / 1,000 examples (60%), 0m07s so far, about 0m04s left",
    # (700 at 9 s: within 15 s of the last line) 700 in 21 s: 200 left at 33 a second
    "likelihood on test: 800 / 1,000 examples (80%), 0m23s so far, about 0m06s left",
    "likelihood on test: 1,000 examples in 0m30s",
  ]
  caplog.clear()
  short = outputs.Progress("losses on test", 1000, clock=lambda: now[0])
  for done in (500, 1000):
    now[0] += 2.0
    short.update(done)
  short.close()
  assert not [r for r in caplog.records if r.name == "ae_jax.training.outputs"]


@pytest.mark.training
def test_a_vae_run_shorter_than_its_schedule_gets_the_stated_quick_likelihood(tiny_config, tmp_path):
  """full_from_step (the config's own schedule) above the trained steps: the likelihood is estimated on
  quick_max_examples examples with quick_num_samples samples, equal to that estimate made directly, and
  results and result line say so; the same checkpoint with full_from_step 0 gets the whole split."""
  from ae_jax.evaluators.likelihood import evaluate_likelihood

  c = tiny_config
  c.model = {"name": "vae_mlp", "hidden": (16,), "latent_dim": 4}
  c.data.scale, c.data.binarize = "unit", "dynamic"
  c.loss = {"bernoulli_nll": 1.0, "kl": 1.0}
  c.total_steps = 4
  c.evals.likelihood = evaluators.section(
    "likelihood",
    num_samples=8,
    chunk_size=4,
    batch_size=8,
    full_from_step=100,
    quick_max_examples=16,
    quick_num_samples=2,
  )
  summary = loop.train_and_evaluate(c, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["likelihood/estimate"] == "quick"
  assert results["likelihood/num_examples"] == 16 and results["likelihood/num_samples"] == 2
  line = next(x for x in summary["results"].lines if x.startswith("likelihood:"))
  assert "16 examples, K = 2; quick estimate: the state has 4 of the 100 steps" in line
  assert "(40 examples, K = 8)" in line  # what the full estimate would be
  rstate, dataset = parallel.replicate(summary["state"]), summary["dataset"]
  direct = evaluate_likelihood(
    summary["model"],
    rstate,
    dataset.split("test"),
    dataset.info,
    num_samples=2,
    chunk_size=2,
    batch_size=8,
    max_examples=16,
  )
  assert results["likelihood/nll"] == pytest.approx(direct["nll"], rel=1e-6)
  c.evals.likelihood.full_from_step = 0
  _, full, _ = loop.evaluate_checkpoint(c, str(tmp_path), names=["likelihood"])
  assert full.details["likelihood/estimate"] == "full"
  assert full.metrics["likelihood/num_examples"] == 40 and full.metrics["likelihood/num_samples"] == 8
  assert full.lines[0].endswith("40 examples, K = 8; full estimate")
