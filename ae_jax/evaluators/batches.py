"""Machinery the evaluators share: examples stacked into batches, and exact sums of per-example values
over a whole split, pmapped over every device and process (with `outputs.Progress` lines when it takes a
while). The model's outputs on one device, `outputs.reconstruct`, live in `ae_jax.training.outputs`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from ae_jax.core import parallel
from ae_jax.data import DatasetInfo, resolve
from ae_jax.data.dataset import stack_examples
from ae_jax.data.pipeline import eval_batches
from ae_jax.training.outputs import Progress
from ae_jax.training.train import TrainState, apply_model, eval_rng


def split_sums(
  sums_fn: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]],
  rstate: TrainState,
  source: Sequence,
  info: DatasetInfo,
  *,
  batch_size: int,
  num_threads: int = 1,
  num_workers: int = 0,
  max_examples: int | None = None,
  label: str = "evaluation",
) -> dict[str, np.ndarray]:
  """Exact sums over every example of `source` of what `sums_fn(state, batch)` (one device's share of a
  global batch, run under pmap with the device axis bound) returns, psum'd over devices: the caller's fn
  weights each example by batch["valid"] (0 for the padding of a last partial batch). Every process runs
  the same batches, so multi-host sums are exact too. Returns host float64 arrays (scalars or vectors,
  e.g. a code histogram).

  `sums_fn` must be hashable across calls (a module-level function or a functools.partial of one) for
  its compilation to be reused. A long evaluation logs its progress as `label` (`Progress`).
  """
  devices = parallel.devices_of(rstate)
  p_sums = _pmapped(sums_fn, devices)
  out: dict[str, np.ndarray] = {}
  batches = eval_batches(
    source,
    info.preprocess_for(train=False),
    global_batch=batch_size,
    num_threads=num_threads,
    num_workers=num_workers,
    max_examples=max_examples,
    batch_preprocess=info.batch_preprocess_for(False),
  )
  n = len(source) if max_examples is None else min(len(source), max_examples)
  progress = Progress(label, n)
  for i, batch in enumerate(batches):
    values = jax.device_get(
      p_sums(rstate, parallel.shard(parallel.split_for_devices(batch, len(devices)), devices))
    )
    for k, v in values.items():
      v = np.asarray(v, np.float64)[0]
      out[k] = out[k] + v if k in out else v
    progress.update(min((i + 1) * batch_size, n))
  progress.close()
  return out


def section_sums(sums_fn: Callable, rstate: TrainState, context: Any, section: Any) -> dict[str, np.ndarray]:
  """`split_sums` over the split an evaluator section names, with the run's evaluation batch size and
  read threads and the section's `max_examples`; its progress lines say "<type> on <split>"."""
  assembly = resolve(context.config.data)
  return split_sums(
    sums_fn,
    rstate,
    context.dataset.split(section.split),
    context.dataset.info,
    batch_size=context.config.eval_batch_size,
    num_threads=assembly.num_threads,
    num_workers=assembly.num_workers,
    max_examples=section.get("max_examples"),
    label=f"{section.get('type', 'evaluation')} on {section.split}",
  )


@functools.lru_cache(maxsize=64)
def _pmapped(sums_fn: Callable, devices: tuple) -> Callable:
  def device_sums(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.lax.psum(sums_fn(state, batch), parallel.AXIS)

  return jax.pmap(device_sums, axis_name=parallel.AXIS, devices=devices if jax.process_count() == 1 else None)


def model_outputs(model: nn.Module, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The model's evaluation-mode outputs on one device's share of a batch (under pmap): the outputs the
  `losses` evaluator scores."""
  outputs, _ = apply_model(
    model, state.params, state.model_state, batch, train=False, rng=eval_rng(state, batch)
  )
  outputs.pop("metrics", None)
  return outputs


def _chunks(source: Sequence, info: DatasetInfo, batch: int):
  """(x, weights) per chunk of `source`: weights broadcast a padding mask [n, T] (if any) over x's shape."""
  for start in range(0, len(source), batch):
    examples = stack_examples(source, info, range(start, min(start + batch, len(source))))
    x = examples["x"].astype(np.float64)
    mask = examples.get("mask", np.ones(x.shape[:1], np.float64)).astype(np.float64)
    yield x, np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)


def mean_image_mse(train: Sequence, test: Sequence, info: DatasetInfo, batch: int = 5000) -> float:
  """Test MSE (model input space, per element) of always predicting the training set's mean example.

  With a padding mask, the mean and the error count real positions only, like the masked `mse` term.
  """
  sums = counts = 0.0
  for x, w in _chunks(train, info, batch):
    sums, counts = sums + (x * w).sum(0), counts + w.sum(0)
  mean = sums / np.maximum(counts, 1.0)
  sq = n = 0.0
  for x, w in _chunks(test, info, batch):
    sq, n = sq + float((np.square(x - mean) * w).sum()), n + float(w.sum())
  return sq / n
