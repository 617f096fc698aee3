"""The training loop's host side: several steps per dispatch, prefetching, no transfers between log steps,
and mixed precision, each computing the same function as the plain formulation."""

import json

import chex
import jax
import numpy as np
import pytest

from ae_jax.core import parallel
from ae_jax.data import get_dataset, pipeline
from ae_jax.runner import loop
from ae_jax.training import train


def _params(summary):
  return jax.device_get(summary["state"].params)


def _rows(path):
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize(
  "start, total, k, intervals, expected",
  [
    (0, 12, 4, (4, 0, 8), [4, 4, 4]),
    (0, 12, 5, (3, 0, 4), [3, 1, 2, 2, 1, 3]),  # cut at every multiple of 3 and of 4
    (5, 12, 4, (3,), [1, 3, 3]),
    (0, 3, 8, (100,), [3]),
  ],
)
def test_dispatch_sizes_stop_at_every_event(start, total, k, intervals, expected):
  sizes = list(parallel.dispatch_sizes(start, total, k, intervals))
  assert sizes == expected and sum(sizes) == total - start
  ends = np.cumsum([start, *sizes])[1:]
  for e in intervals:
    if e:
      assert all(m in ends for m in range(e, total + 1, e) if m > start)


def test_stack_steps_puts_each_steps_slice_on_its_device():
  batches = [{"x": np.arange(8) + 100 * s} for s in range(3)]  # 3 steps of a local batch of 8
  out = parallel.stack_steps(batches, devices=4)["x"]
  assert out.shape == (4, 3, 2)
  np.testing.assert_array_equal(out[1, 2], [202, 203])  # device 1, step 2: examples 2-3 of step 2


def test_scanned_steps_equal_single_steps(tiny_config):
  """train_steps over k stacked batches gives the parameters, optimizer state and metrics of k calls."""
  dataset = get_dataset(tiny_config.data)
  model, objective, tx, schedule = train.build(tiny_config, dataset.info.shape)
  state = train.create_train_state(model, tx, np.zeros((1, 8, 8, 1), np.float32), 0)
  batches = pipeline.train_batches(dataset.split("train"), dataset.info.preprocess, global_batch=16, seed=0)
  host = [next(batches) for _ in range(3)]
  kw = dict(model=model, objective=objective, tx=tx, learning_rate=schedule)
  single = jax.pmap(lambda s, b: train.train_step(s, b, **kw), axis_name=parallel.AXIS)
  multi = jax.pmap(lambda s, b: train.train_steps(s, b, **kw), axis_name=parallel.AXIS)
  rs, singles = parallel.replicate(state), []
  for b in host:
    rs, m = single(rs, parallel.shard(parallel.split_for_devices(b)))
    singles.append(m)
  rm, scanned = multi(parallel.replicate(state), parallel.shard(parallel.stack_steps(host, 8)))
  chex.assert_trees_all_close(jax.device_get(rs), jax.device_get(rm), rtol=1e-6, atol=1e-7)
  for i, m in enumerate(singles):
    np.testing.assert_allclose(scanned["loss"][0, i], m["loss"][0], rtol=1e-6)


@pytest.mark.training
def test_steps_per_dispatch_and_prefetch_give_the_same_run(tiny_config, tmp_path):
  """k = 3 steps per dispatch with prefetching equals one step per dispatch without it: the same final
  parameters, the same metrics rows at the same steps, and a resumed k = 3 run equals both."""
  tiny_config.update({"prefetch": 0, "steps_per_dispatch": 1})
  tiny_config.evals.test.every = 6
  plain = loop.train_and_evaluate(tiny_config, str(tmp_path / "plain"))
  tiny_config.update({"prefetch": 2, "steps_per_dispatch": 3})
  fast = loop.train_and_evaluate(tiny_config, str(tmp_path / "fast"))
  chex.assert_trees_all_close(_params(plain), _params(fast), rtol=1e-6, atol=1e-7)
  a, b = _rows(tmp_path / "plain"), _rows(tmp_path / "fast")
  assert [r["step"] for r in a] == [r["step"] for r in b] == [3, 6, 6, 9, 12, 12]
  for x, y in zip(a, b, strict=True):
    for key in set(x) - {"examples_per_sec"}:
      assert x[key] == pytest.approx(y[key], rel=1e-5), key
  tiny_config.total_steps = 5  # a dispatch is cut at 3, then 5 is the end
  loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  tiny_config.total_steps = 12
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  if jax.default_backend() == "cpu":  # other dispatches, traced step after step (train.train_steps)
    chex.assert_trees_all_close(_params(fast), _params(resumed), rtol=1e-6, atol=1e-7)
  else:
    chex.assert_trees_all_equal(_params(fast), _params(resumed))


@pytest.mark.parametrize("on_device", ["false", "true"])
@pytest.mark.training
def test_no_device_to_host_transfer_between_log_steps(tiny_config, tmp_path, monkeypatch, on_device):
  """With checkpoints and evaluation off, arrays come back from the devices only at log steps and at the
  end, with host input or device-resident. (The loop dispatches under a transfer guard; on CPU, whose
  arrays live in host memory, device-to-host reads bypass transfer guards, so they are counted where every
  read goes through, ArrayImpl._value, and placed between the dispatches, at the loop's feed.)"""
  from jax._src import array as jax_array

  events = []
  value = jax_array.ArrayImpl._value
  monkeypatch.setattr(
    jax_array.ArrayImpl, "_value", property(lambda a: events.append("read") or value.fget(a))
  )
  serve = loop._Feed.dispatch
  monkeypatch.setattr(loop._Feed, "dispatch", lambda self, *a: events.append("dispatch") or serve(self, *a))
  tiny_config.update({"checkpoint_every": 0, "steps_per_dispatch": 2, "log_every": 6})
  tiny_config.data.on_device = on_device
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert summary["step"] == 12
  dispatches = [i for i, e in enumerate(events) if e == "dispatch"]
  assert len(dispatches) == 6  # steps 2, 4, ..., 12
  reads_after = [
    sum(e == "read" for e in events[i:j]) for i, j in zip(dispatches, dispatches[1:] + [None], strict=True)
  ]
  # after steps 2 (the compile is waited for, nothing read), 4, 8 and 10: no log step, nothing read
  assert reads_after[0] == reads_after[1] == reads_after[3] == reads_after[4] == 0
  assert reads_after[2] > 0 and reads_after[5] > 0  # the log steps 6 and 12 fetch the metrics


@pytest.mark.training
def test_bfloat16_training_tracks_float32(tiny_config, tmp_path):
  """bf16 compute with float32 parameters and losses: the test loss after 200 steps is within 3% of the
  float32 run's, and the parameters and optimizer state stay float32."""
  tiny_config.update({"total_steps": 200, "log_every": 100, "checkpoint_every": 0})
  f32 = loop.train_and_evaluate(tiny_config, str(tmp_path / "f32"))
  tiny_config.dtype = "bfloat16"
  bf16 = loop.train_and_evaluate(tiny_config, str(tmp_path / "bf16"))
  assert bf16["metrics"]["test/mse"] == pytest.approx(f32["metrics"]["test/mse"], rel=0.03)
  assert bf16["metrics"]["test/mse"] < 0.85 * loop_start_mse(tiny_config)  # and both learned
  leaves = jax.tree.leaves(jax.device_get((bf16["state"].params, bf16["state"].opt_state)))
  assert all(leaf.dtype in (np.float32, np.int32) for leaf in leaves)


def loop_start_mse(config):
  """The test MSE of the untrained model (a reference the trained ones must beat)."""
  dataset = get_dataset(config.data)
  model, _, tx, _ = train.build(config, dataset.info.shape)
  state = train.create_train_state(model, tx, np.zeros((1, 8, 8, 1), np.float32), config.seed)
  x = np.stack([dataset.info.preprocess(r, 0)["x"] for r in dataset.split("test")])
  recon = model.apply({"params": state.params}, x)["recon"]
  return float(np.mean(np.square(np.asarray(recon, np.float32) - x)))
