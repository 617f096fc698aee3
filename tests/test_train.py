"""The pmapped train step and the loop: device-count invariance, compile-once, resume, failure modes."""

import functools
import json
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_pmapped_steps

from ae_jax import evaluators
from ae_jax.core import parallel
from ae_jax.data import get_dataset
from ae_jax.data.pipeline import train_batches
from ae_jax.runner import experiment, loop
from ae_jax.runner.config import check_config
from ae_jax.training import checkpoint, train
from ae_jax.training.preemption import Preemption


def _setup(config):
  """The fresh state, the trainer's single step with its dependencies bound, and host training batches."""
  exp = experiment.setup(config)
  step = functools.partial(train.train_step, **exp.step_options)
  info = exp.dataset.info
  batches = train_batches(exp.dataset.split("train"), info.preprocess, global_batch=config.batch_size, seed=0)
  return exp.state, step, batches


def test_eight_devices_match_one_device(tiny_config):
  """pmean over 8 devices of 2 examples each gives the same update as 1 device with all 16."""
  assert jax.local_device_count() == 8
  state, step_fn, batches = _setup(tiny_config)
  host_batches = [next(batches) for _ in range(3)]
  s8, m8 = run_pmapped_steps(step_fn, state, host_batches, jax.local_devices())
  s1, m1 = run_pmapped_steps(step_fn, state, host_batches, jax.local_devices()[:1])
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s8.opt_state, s1.opt_state, rtol=1e-5, atol=1e-6)
  for a, b in zip(m8, m1, strict=True):
    np.testing.assert_allclose(a["loss"][0], b["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"][0], b["grad_norm"][0], rtol=1e-4)
  assert int(s8.step) == int(s1.step) == 3
  # and training moved the parameters
  assert not np.allclose(s8.params["encoder"]["code"]["kernel"], state.params["encoder"]["code"]["kernel"])


def test_train_step_compiles_once(tiny_config):
  """Feeding the step's own output state back in never retraces."""
  state, step_fn, batches = _setup(tiny_config)
  traced_step = chex.assert_max_traces(lambda state, batch: step_fn(state, batch), n=1)
  p_step = jax.pmap(traced_step, axis_name=parallel.AXIS)
  rstate = parallel.replicate(state)
  for _ in range(4):
    rstate, _ = p_step(rstate, parallel.shard(parallel.split_for_devices(next(batches))))
  assert int(parallel.unreplicate(rstate).step) == 4


def test_step_metrics_and_learning_rate(tiny_config):
  tiny_config.optimizer.schedule = "warmup_cosine"
  tiny_config.optimizer.warmup_steps = 4
  state, step_fn, batches = _setup(tiny_config)
  _, metrics = run_pmapped_steps(step_fn, state, [next(batches) for _ in range(3)], jax.local_devices())
  norms = {f"{kind}/{module}" for kind in ("grad_norm", "param_norm") for module in ("encoder", "decoder")}
  assert set(metrics[0]) == {"loss", "mse", "grad_norm", "learning_rate", "nonfinite", *norms}
  np.testing.assert_allclose(  # the global norm is the root of the modules' squared norms
    metrics[0]["grad_norm"][0],
    np.hypot(metrics[0]["grad_norm/encoder"][0], metrics[0]["grad_norm/decoder"][0]),
    rtol=1e-5,
  )
  lrs = [float(m["learning_rate"][0]) for m in metrics]
  np.testing.assert_allclose(lrs, [0.0, 3e-3 / 4, 2 * 3e-3 / 4], rtol=1e-6)
  assert all(float(m["nonfinite"][0]) == 0.0 for m in metrics)


def test_nonfinite_step_leaves_state_untouched(tiny_config, monkeypatch):
  """A NaN loss is reported and the state (params, optimizer, step) stays the last good one."""
  monkeypatch.setattr(train, "loss_weights", lambda c: {"mse": lambda s: jnp.where(s >= 1, jnp.nan, 1.0)})
  state, step_fn, batches = _setup(tiny_config)
  s, metrics = run_pmapped_steps(step_fn, state, [next(batches) for _ in range(3)], jax.local_devices())
  assert [float(m["nonfinite"][0]) for m in metrics] == [0.0, 1.0, 1.0]
  assert int(s.step) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(s.params))


def test_a_nonfinite_batch_is_reported_as_such(tiny_config):
  """`nonfinite` is 2 when the batch itself held a NaN (on any device), 1 for a NaN loss of finite data."""
  state, step_fn, batches = _setup(tiny_config)
  clean = next(batches)
  dirty = {**clean, "x": clean["x"].copy()}
  dirty["x"][-1, 0, 0, 0] = np.nan  # the last device's share
  _, metrics = run_pmapped_steps(step_fn, state, [clean, dirty], jax.local_devices())
  assert [float(m["nonfinite"][0]) for m in metrics] == [0.0, 2.0]


@pytest.mark.training
def test_the_nonfinite_message_blames_the_data_when_the_batch_held_nan(tiny_config, tmp_path, monkeypatch):
  from ae_jax.data import images

  scale, unit = images.SCALES["symmetric"]
  monkeypatch.setitem(images.SCALES, "symmetric", (lambda u: scale(u) * np.float32(np.nan), unit))
  with pytest.raises(loop.NonFiniteLossError, match="batch itself held a NaN or infinity: check the data"):
    loop.train_and_evaluate(tiny_config, str(tmp_path))


def _params(summary):
  return jax.device_get(summary["state"].params)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(summary, workdir) of tiny_config's 12 steps in one go; the tests read both and write to neither."""
  from conftest import make_tiny_config

  path = tmp_path_factory.mktemp("uninterrupted")
  return loop.train_and_evaluate(make_tiny_config(), str(path)), path


@pytest.mark.training
def test_resume_equals_uninterrupted_run(tiny_config, tmp_path, uninterrupted):
  """12 steps in one go == 6 steps, stop, rerun to 12 (same data order and randomness)."""
  full, full_path = uninterrupted
  half = tiny_config.copy_and_resolve_references()
  half.total_steps = 6
  first = loop.train_and_evaluate(half, str(tmp_path / "split"))
  assert first["step"] == 6
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  assert resumed["step"] == 12
  chex.assert_trees_all_equal(_params(full), _params(resumed))
  chex.assert_trees_all_equal(
    jax.device_get(full["state"].opt_state), jax.device_get(resumed["state"].opt_state)
  )
  assert full["metrics"] == resumed["metrics"]
  # Periodic saves every 4 steps plus the final step, the oldest pruned beyond keep_checkpoints=3.
  assert checkpoint.Checkpointer(str(full_path / "checkpoints"), keep=3).all_steps() == [4, 8, 12]


@pytest.mark.training
def test_same_seed_same_numbers_other_seed_differs(tiny_config, tmp_path, uninterrupted):
  a = uninterrupted[0]
  b = loop.train_and_evaluate(tiny_config, str(tmp_path / "b"))
  assert a["metrics"] == b["metrics"]
  tiny_config.seed = 1
  c = loop.train_and_evaluate(tiny_config, str(tmp_path / "c"))
  assert a["metrics"] != c["metrics"]


@pytest.mark.training
def test_metrics_jsonl_and_tensorboard(tiny_config, tmp_path):
  tiny_config.evals.test.every = 6
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
  assert {"mse", "grad_norm", "learning_rate", "examples_per_sec"} <= set(train_rows[0])
  test_rows = [r for r in rows if "test/mse" in r]
  assert [r["step"] for r in test_rows] == [6, 12]
  assert test_rows[-1]["test/mse"] == pytest.approx(summary["metrics"]["test/mse"])
  assert train_rows[-1]["loss"] < train_rows[0]["loss"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))


@pytest.mark.training
def test_eval_is_exact_mean_over_test_set(tiny_config, uninterrupted):
  """The pmapped, padded evaluation equals a plain per-example mean over all 40 test examples."""
  summary = uninterrupted[0]
  dataset = get_dataset(tiny_config.data)
  test_src, info = dataset.split("test"), dataset.info
  x = np.stack([info.preprocess(r, 0)["x"] for r in test_src])
  recon = summary["model"].apply({"params": summary["state"].params}, x)["recon"]
  expected = float(np.mean(np.square(np.asarray(recon) - x)))
  assert summary["metrics"]["test/mse"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.training
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(train, "loss_weights", lambda c: {"mse": lambda s: jnp.where(s >= 6, jnp.nan, 1.0)})
  with pytest.raises(
    loop.NonFiniteLossError, match="non-finite at step 7; .*last good checkpoint \\(step 4\\)"
  ):
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  assert ckpt.all_steps() == [4]


@pytest.mark.training
def test_preemption_saves_and_resumes(tiny_config, tmp_path, monkeypatch, uninterrupted):
  """A SIGTERM at step 5 saves step 5 and returns; rerunning finishes with the uninterrupted result."""
  full = uninterrupted[0]
  monkeypatch.setattr(Preemption, "reached", lambda self, step: step == 5)
  stopped = loop.train_and_evaluate(tiny_config, str(tmp_path / "stopped"))
  assert stopped["preempted"] and stopped["step"] == 5
  assert checkpoint.Checkpointer(str(tmp_path / "stopped" / "checkpoints"), keep=3).latest_step() == 5
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "stopped"))
  chex.assert_trees_all_equal(_params(full), _params(resumed))


@pytest.mark.training
def test_keep_best_reports_the_lowest_evaluation_and_survives_a_restart(tiny_config, tmp_path, monkeypatch):
  """Gradient ascent on the MSE from step 7 on makes the last state worse than earlier ones: keep_best
  returns the evaluated state with the lowest validation/mse, and a run stopped at step 9 and rerun
  agrees."""
  monkeypatch.setattr(train, "loss_weights", lambda c: {"mse": lambda s: jnp.where(s >= 6, -1.0, 1.0)})
  tiny_config.update({"keep_best": "validation/mse", "optimizer": {"learning_rate": 3e-2}})
  tiny_config.data.validation_size = 16
  tiny_config.evals.validation = evaluators.section("losses", split="validation", every=2)
  full = loop.train_and_evaluate(tiny_config, str(tmp_path / "full"))
  with open(tmp_path / "full" / "metrics.jsonl") as f:
    evals = {r["step"]: r["validation/mse"] for r in map(json.loads, f) if "validation/mse" in r}
  best_step = min(evals, key=evals.get)
  assert 2 <= best_step < 12 and evals[12] > evals[best_step]  # the ascent made the last state worse
  assert full["step"] == best_step and full["metrics"]["validation/mse"] == pytest.approx(
    evals[best_step], rel=1e-6
  )
  assert "test/mse" in full["metrics"]  # the test split is reported, not selected on
  assert int(full["state"].step) == best_step
  monkeypatch.setattr(Preemption, "reached", lambda self, step: step == 9)
  assert loop.train_and_evaluate(tiny_config, str(tmp_path / "stopped"))["preempted"]
  monkeypatch.setattr(Preemption, "reached", lambda self, step: False)
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "stopped"))
  assert resumed["step"] == best_step
  chex.assert_trees_all_equal(_params(full), _params(resumed))
  again = loop.train_and_evaluate(tiny_config, str(tmp_path / "full"))  # a finished run reports the same
  assert again["step"] == best_step and again["metrics"] == full["metrics"]
  chex.assert_trees_all_equal(_params(full), _params(again))
  tiny_config.keep_best = "validation/loss"  # another metric cannot continue this run's selection
  with pytest.raises(checkpoint.CheckpointMismatchError, match="keeps the best state by validation/mse"):
    loop.train_and_evaluate(tiny_config, str(tmp_path / "stopped"))


def test_keep_best_must_name_a_periodic_validation_loss(tiny_config):
  tiny_config.keep_best = "test/loss"
  with pytest.raises(ValueError, match="not a metric of a periodic losses evaluator"):
    check_config(tiny_config, num_processes=1, local_devices=8)  # the test evaluator runs at the end only
  tiny_config.evals.test.every = 4
  with pytest.raises(ValueError, match="selects on the test split, which is only reported"):
    check_config(tiny_config, num_processes=1, local_devices=8)
  tiny_config.data.validation_size = 16
  tiny_config.evals.validation = evaluators.section("losses", split="validation", every=4)
  tiny_config.keep_best = "validation/los"
  with pytest.raises(ValueError, match=r"use one of \[.*'validation/loss', 'validation/mse'"):
    check_config(tiny_config, num_processes=1, local_devices=8)
  tiny_config.keep_best = "validation/loss"
  check_config(tiny_config, num_processes=1, local_devices=8)


def test_sigterm_sets_the_preemption_flag():
  handler = Preemption()
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    assert handler.requested and handler.reached(1)
  finally:
    handler.restore()


@pytest.mark.training
def test_other_model_in_same_workdir_is_refused_and_checkpoint_kept(tiny_config, tmp_path):
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  tiny_config.model.code_dim = 8
  tiny_config.total_steps = 20
  with pytest.raises(checkpoint.CheckpointMismatchError, match="use a new --workdir"):
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("batchsize", 8, "did you mean 'batch_size'"),
    ("optimizer.learning_rte", 1e-3, "did you mean 'optimizer.learning_rate'"),
    ("batch_size", 12, "does not split over 8 devices"),
    ("total_steps", 0, "must be positive"),
  ],
)
def test_bad_config_gives_clear_error(tiny_config, key, value, match):
  section, _, leaf = key.rpartition(".")
  target = tiny_config[section] if section else tiny_config
  target[leaf] = value
  with pytest.raises(ValueError, match=match):
    check_config(tiny_config, num_processes=1, local_devices=8)


@pytest.mark.parametrize(
  "section, key, value, match",
  [
    ("model", "code_dims", 3, "did you mean 'code_dim'"),
    ("loss", "mes", 1.0, "did you mean 'mse'"),
    ("optimizer", "name", "adamm", "choose adam, adamw or sgd"),
    ("data", "name", "fashion_mnst", "did you mean 'fashion_mnist'"),
  ],
)
def test_bad_registry_names_fail_before_training(tiny_config, tmp_path, section, key, value, match):
  tiny_config[section][key] = value
  with pytest.raises(ValueError, match=match):
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints") or not os.listdir(tmp_path / "checkpoints")
