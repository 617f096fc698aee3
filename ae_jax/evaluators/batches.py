"""Machinery the evaluators share: examples stacked into batches, jitted reconstruction on one device,
exact sums of per-example values over a whole split, pmapped over every device and process, and progress
lines for the evaluations that take a while (`Progress`)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from flax import linen as nn

from ae_jax import parallel
from ae_jax.data import DatasetInfo, sources
from ae_jax.data.pipeline import eval_batches
from ae_jax.train import TrainState, apply_model, eval_rng

log = logging.getLogger(__name__)  # ae_jax's INFO lines reach the console (`console.setup`)

PROGRESS_AFTER_S = 5.0  # an evaluation says nothing for its first seconds ...
PROGRESS_EVERY_S = 15.0  # ... then a progress line at most this often


def _duration(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
  """Progress lines (the ae_jax logger, INFO: console and log.txt, process 0 only) for a loop over
  `total` examples, like training's progress bar: nothing while it is short, then, once it has run
  `after` seconds, at most one line every `every` seconds,

      likelihood on test: 3,000 / 10,000 examples (30%), 0m41s so far, about 1m36s left

  and a last line with its duration when it printed any. The time left extrapolates the rate since the
  first update (which includes compilation); `clock` (seconds) is replaceable for tests.
  """

  def __init__(
    self,
    what: str,
    total: int,
    *,
    after: float = PROGRESS_AFTER_S,
    every: float = PROGRESS_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.what, self.total, self.after, self.every, self.clock = what, int(total), after, every, clock
    self.start = self.last_line = clock()
    self.first: tuple[float, int] | None = None  # (time, examples) of the first update
    self.printed = False
    self.enabled = jax.process_index() == 0

  def update(self, done: int) -> None:
    """`done` of the `total` examples are evaluated."""
    now = self.clock()
    if self.first is None:
      self.first = (now, done)
      return
    if (
      not self.enabled
      or now - self.start < self.after
      or (self.printed and now - self.last_line < self.every)
    ):
      return
    t0, n0 = self.first
    left = (now - t0) / max(done - n0, 1) * (self.total - done)
    share = 100 * done // max(self.total, 1)
    so_far = _duration(now - self.start)
    self._log(f"{done:,} / {self.total:,} examples ({share}%), {so_far} so far, about {_duration(left)} left")
    self.printed, self.last_line = True, now

  def close(self) -> None:
    if self.enabled and self.printed:
      self._log(f"{self.total:,} examples in {_duration(self.clock() - self.start)}")

  def _log(self, text: str) -> None:
    # a progress bar (training's) is cleared for the line and drawn again below it
    with tqdm.tqdm.external_write_mode(file=sys.stderr):
      log.info("%s: %s", self.what, text)


def stack_examples(source: Sequence, info: DatasetInfo, indices: Sequence[int]) -> dict[str, np.ndarray]:
  """source[i] for i in `indices`, preprocessed for evaluation, as one batch {"x": [n, ...], ...}."""
  indices = np.asarray(indices, np.int64)
  return info.batch_preprocess_for(False)(sources.gather(source, indices), indices)


def reconstruct(
  model: nn.Module, state: TrainState, x: np.ndarray, batch_size: int = 500, label: str = "reconstruction"
) -> dict[str, np.ndarray]:
  """The model's batch-first outputs for inputs x [n, ...] in evaluation mode (one device, no pmap),
  computed `batch_size` examples at a time with one jitted function (one compile: a short last chunk is
  padded with zeros, and its padding's outputs dropped).

  Outputs that are not batch-first (a VAE's sample-first [k, B] log-densities) are kept only when x fits
  in one batch. A long one logs its progress as `label` (`Progress`).
  """

  def fn(s: TrainState, x: jax.Array) -> dict[str, jax.Array]:
    outputs = apply_model(model, s.params, s.model_state, {"x": x}, train=False, rng=s.rng)[0]
    outputs.pop("metrics", None)
    return outputs

  run = jax.jit(parallel.with_named_axis(fn))
  if len(x) <= batch_size:
    return jax.device_get(run(state, x))
  chunks, sizes = [], []
  progress = Progress(label, len(x))
  for i in range(0, len(x), batch_size):
    chunk = np.asarray(x[i : i + batch_size])
    sizes.append(len(chunk))
    padding = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    chunks.append(jax.device_get(run(state, np.concatenate([chunk, padding]))))
    progress.update(i + len(chunk))
  progress.close()
  batch_first = [k for k in chunks[0] if np.shape(chunks[0][k])[:1] == (batch_size,)]
  return {k: np.concatenate([c[k][:n] for c, n in zip(chunks, sizes, strict=True)]) for k in batch_first}


def split_sums(
  sums_fn: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]],
  rstate: TrainState,
  source: Sequence,
  info: DatasetInfo,
  *,
  batch_size: int,
  num_threads: int = 1,
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
  return split_sums(
    sums_fn,
    rstate,
    context.dataset.split(section.split),
    context.dataset.info,
    batch_size=context.config.eval_batch_size,
    num_threads=context.config.data.num_threads,
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
