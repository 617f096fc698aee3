"""The device-resident training input: the same batches as the host pipeline (bitwise), the same training,
nothing placed per step, and a plan that says why a split stays on the host."""

import dataclasses

import chex
import jax
import numpy as np
import pytest

from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config, get_dataset, pipeline
from ae_jax.runner import loop
from ae_jax.training import device_input


def _host_batches(dataset, config, steps):
  info = dataset.info
  it = pipeline.train_batches(
    dataset.split("train"),
    None,
    global_batch=config.batch_size,
    seed=config.seed,
    batch_preprocess=info.batch_preprocess_for(True),
  )
  return [next(it) for _ in range(steps)]


@pytest.mark.parametrize(
  "data",
  [
    data_config("synthetic", shape=(8, 8, 1), num_train=40, num_test=8, scale="symmetric"),
    data_config("synthetic", shape=(4, 4, 3), num_train=40, num_test=8, scale="unit"),
    data_config("synthetic", shape=(8, 8, 1), num_train=40, num_test=8, scale="centered"),
    data_config("synthetic", shape=(8, 8, 1), num_train=40, num_test=8, binarize="dynamic"),
    data_config("synthetic_sequences", num_train=40, num_test=8),
  ],
  ids=["symmetric", "unit_rgb", "centered", "binarized", "sequences"],
)
def test_device_gathered_batches_equal_the_host_pipelines_bitwise(tiny_config, data, monkeypatch):
  """Steps 0-11 over 40 records at batch 16 cross epochs inside batches; a one-epoch order window is
  re-placed as the run moves on."""
  monkeypatch.setattr(device_input, "ORDER_BYTES", 4 * 40)  # one epoch's order: the window must move
  tiny_config.data = data
  dataset = get_dataset(data)
  plan = device_input.plan(tiny_config, dataset)
  assert plan.enabled, plan.line
  resident = device_input.Resident(tiny_config, plan)
  host = _host_batches(dataset, tiny_config, 12)
  for step, size in [(0, 3), (3, 1), (4, 5), (9, 3)]:
    device = device_input.batches(resident, dataset.info.device_preprocess, step, size)
    for i in range(size):
      expected = host[step + i]
      assert set(device) == set(expected)
      for key in expected:
        assert device[key][i].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(device[key][i], expected[key], err_msg=f"step {step + i} {key}")
  assert resident.order_bytes_placed > 4 * 40 * jax.local_device_count()  # placed more than once


@pytest.mark.training
def test_device_resident_training_equals_the_host_pipelines_and_places_nothing_per_step(
  tiny_config, tmp_path
):
  tiny_config.total_steps, tiny_config.steps_per_dispatch = 12, 2
  tiny_config.data.on_device = "false"
  host = loop.train_and_evaluate(tiny_config, str(tmp_path / "host"))
  tiny_config.data.on_device = "true"
  device = loop.train_and_evaluate(tiny_config, str(tmp_path / "device"))
  assert host["input"].startswith("input: host pipeline") and device["input"].startswith(
    "input: device-resident"
  )
  chex.assert_trees_all_close(
    jax.device_get(host["state"].params), jax.device_get(device["state"].params), rtol=1e-6, atol=1e-7
  )
  assert host["metrics"]["test/loss"] == pytest.approx(device["metrics"]["test/loss"], rel=1e-5)
  batch_bytes = tiny_config.batch_size * 8 * 8 * 4  # x float32 [16, 8, 8, 1] a step, plus labels
  assert host["input_bytes_placed"] >= tiny_config.total_steps * batch_bytes
  # the whole run's epoch order (12 * 16 / 96 + 1 = 3 epochs of 96 int32 on 8 devices), placed once
  assert device["input_bytes_placed"] == 3 * 96 * 4 * jax.local_device_count()


@pytest.mark.training
def test_resuming_on_the_device_equals_not_stopping(tiny_config, tmp_path):
  tiny_config.data.on_device = "true"
  tiny_config.total_steps = 12
  full = loop.train_and_evaluate(tiny_config, str(tmp_path / "full"))
  tiny_config.total_steps = 8
  loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  tiny_config.total_steps = 12
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path / "split"))
  chex.assert_trees_all_equal(jax.device_get(full["state"].params), jax.device_get(resumed["state"].params))


def test_the_plan_says_why_a_split_stays_on_the_host(tiny_config):
  dataset = get_dataset(tiny_config.data)
  assert device_input.plan(tiny_config, dataset).enabled  # "auto" on a small in-memory split
  host_only = dataclasses.replace(dataset, info=dataclasses.replace(dataset.info, device_preprocess=None))
  plan = device_input.plan(tiny_config, host_only)
  assert not plan.enabled and "preprocesses on the host" in plan.line
  tiny_config.data.on_device_memory_fraction = 1e-12
  plan = device_input.plan(tiny_config, dataset)
  assert not plan.enabled and "on_device_memory_fraction" in plan.line
  tiny_config.data.on_device = "true"
  with pytest.raises(ConfigError, match="on_device=true, but the training split .* is over"):
    device_input.plan(tiny_config, dataset)
  tiny_config.data.on_device = "yes"
  with pytest.raises(ConfigError, match="must be one of"):
    device_input.plan(tiny_config, dataset)
  tiny_config.data.on_device, tiny_config.data.on_device_memory_fraction = "auto", 0.25
  tiny_config.total_steps = 2**31 // tiny_config.batch_size
  assert "int32" in device_input.plan(tiny_config, dataset).line
