"""Deterministic, step-indexed batching, assembled a whole batch at a time.

The training stream visits the records of epoch e in the order `epoch_permutation(seed, e, n)` (a fresh
permutation every epoch); it is sliced so process p reads stream positions p, p + P, p + 2P, ... and
batched to the per-process batch b = B / P: batch s of process p holds stream positions
p + P * (s * b + j), j < b (`train_batch_indices`). Batch s of every process together is exactly stream
positions [s * B, (s + 1) * B), whatever the number of processes or devices, and batch s is computed
from s alone: a run resumed at step s reads the same batches as one that never stopped.

A batch is read with one `sources.gather` (a numpy gather for data in memory) and preprocessed as a
whole by the dataset's batch function (`DatasetInfo.batch_preprocess_for`), either when asked, by
background threads a few batches ahead (`num_threads`), or by worker processes (`num_workers`: for data
whose decoding or resizing holds the GIL too long for threads to scale). Given only a per-record
preprocess, each gathered record is preprocessed on its own and the outputs stacked (`dataset.per_record`).
Batch s is the same on every path: it is computed from s alone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ae_jax.data import dataset, sources

Record = Mapping[str, Any]
Example = dict[str, np.ndarray]
Preprocess = dataset.Preprocess
BatchPreprocess = dataset.BatchPreprocess


@functools.lru_cache(maxsize=8)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order [n] (int64, read-only) in which epoch `epoch` visits the records: a numpy permutation keyed
  by (seed, epoch), computed once per epoch (about 1 ms for 60k records)."""
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.flags.writeable = False  # shared by every caller through the cache
  return perm


def stream_record(source: Sequence[Record], seed: int, position: int) -> Record:
  """The record at `position` of the infinite shuffled training stream."""
  epoch, offset = divmod(position, len(source))
  return source[int(epoch_permutation(seed, epoch, len(source))[offset])]


def _local_batch(global_batch: int, process_count: int, what: str = "batch") -> int:
  if global_batch < 1 or global_batch % process_count:
    raise ValueError(
      f"{what} {global_batch} does not split over {process_count} processes; use a positive multiple of "
      f"{process_count}"
    )
  return global_batch // process_count


def train_batch_indices(
  seed: int, step: int, global_batch: int, n: int, process_index: int = 0, process_count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """(stream positions, record indices), both int64 [global_batch // process_count], of training batch
  `step` of process `process_index` of `process_count` over `n` records.

  Positions are p + P * (step * b + j) for j < b = global_batch / P; record indices their records,
  `epoch_permutation(seed, position // n, n)[position % n]` (a batch may span epochs).
  """
  b = _local_batch(global_batch, process_count)
  if n < 1 or step < 0 or not 0 <= process_index < process_count:
    raise ValueError(f"no training batch {step} of process {process_index}/{process_count} over {n} records")
  if (step + 1) * global_batch >= 2**63:
    raise ValueError(f"training step {step} at batch {global_batch} is past int64 stream positions")
  positions = step * global_batch + process_index + process_count * np.arange(b, dtype=np.int64)
  epochs, offsets = np.divmod(positions, n)
  records = np.empty(b, np.int64)
  for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):  # positions ascend: epochs are contiguous runs
    in_epoch = epochs == epoch
    records[in_epoch] = epoch_permutation(seed, epoch, n)[offsets[in_epoch]]
  return positions, records


def _batch_fn(
  source: Sequence[Record], preprocess: Preprocess | None, batch_preprocess: BatchPreprocess | None
) -> Callable[[np.ndarray, np.ndarray], Example]:
  """(record indices [b], stream positions [b]) -> the preprocessed batch."""
  if batch_preprocess is None:
    if preprocess is None:
      raise ValueError("give preprocess or batch_preprocess")
    batch_preprocess = dataset.per_record(preprocess)
  return lambda records, positions: batch_preprocess(sources.gather(source, records), positions)


def train_batches(
  source: Sequence[Record],
  preprocess: Preprocess | None,
  *,
  global_batch: int,
  seed: int,
  start_step: int = 0,
  num_threads: int = 1,
  num_workers: int = 0,
  batch_preprocess: BatchPreprocess | None = None,
) -> Iterator[Example]:
  """Yields this process's share [global_batch // process_count, ...] of global batches start_step, +1, ...

  `batch_preprocess(records, positions)` (e.g. `info.batch_preprocess_for(True)`) turns the gathered
  records {field: [b, ...]} into arrays; `positions` int64 [b] are the examples' positions in the global
  stream, so per-example randomness (e.g. dynamic binarisation) can be derived from them. Without it,
  `preprocess(record, position)` is applied record by record.

  num_threads: 1 assembles each batch in the thread that asks for it (the trainer's prefetch thread
  already runs ahead of the devices; for data in memory a second thread only adds hand-offs on 2 cores);
  N > 1 uses N background threads, 2N batches ahead (decode- or resize-heavy data). num_workers N > 0
  assembles batches in N worker processes instead, 2N batches ahead (`worker_processes.batches`).
  """
  nproc, pid = jax.process_count(), jax.process_index()
  _local_batch(global_batch, nproc)  # raises here, not at the first batch
  make = _batch_fn(source, preprocess, batch_preprocess)
  n = len(source)

  def batch(step: int) -> Example:
    positions, records = train_batch_indices(seed, step, global_batch, n, pid, nproc)
    return make(records, positions)

  return _assembled(batch, itertools.count(start_step), num_threads, num_workers)


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  return math.ceil(num_examples / global_batch)


def eval_batch_indices(
  step: int, global_batch: int, num_examples: int, process_index: int = 0, process_count: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(positions int64, record indices int64, valid bool), each [global_batch // process_count], of
  evaluation batch `step` of process `process_index` over the first `num_examples` records.

  Global batch s is positions [s * B, (s + 1) * B); process p takes its p-th contiguous slice. Positions
  past the last record are padding: record 0 with valid False.
  """
  local = _local_batch(global_batch, process_count, "eval batch")
  positions = step * global_batch + process_index * local + np.arange(local, dtype=np.int64)
  valid = positions < num_examples
  return positions, np.where(valid, positions, 0), valid


def eval_batches(
  source: Sequence[Record],
  preprocess: Preprocess | None,
  *,
  global_batch: int,
  num_threads: int = 1,
  num_workers: int = 0,
  max_examples: int | None = None,
  batch_preprocess: BatchPreprocess | None = None,
) -> Iterator[Example]:
  """Yields this process's share of every global batch of `source` in order, the last one padded.

  Each example carries "valid" (1.0, or 0.0 for padding) and "index" (its position in `source`), so sums
  over a whole evaluation are exact and every process runs the same number of batches. Preprocessing as
  in `train_batches` (with `info.batch_preprocess_for(False)`), the position being the index.
  """
  n = len(source) if max_examples is None else min(len(source), max_examples)
  nproc, pid = jax.process_count(), jax.process_index()
  _local_batch(global_batch, nproc, "eval batch")  # raises here, not at the first batch
  if num_eval_batches(n, global_batch) * global_batch > np.iinfo(np.int32).max:
    raise ValueError(f"{n} evaluation records do not fit the int32 'index' of an example")
  make = _batch_fn(source, preprocess, batch_preprocess)

  def batch(step: int) -> Example:
    positions, records, valid = eval_batch_indices(step, global_batch, n, pid, nproc)
    return {
      **make(records, positions),
      "valid": valid.astype(np.float32),
      "index": positions.astype(np.int32),
    }

  return _assembled(batch, range(num_eval_batches(n, global_batch)), num_threads, num_workers)


def _assembled(
  make: Callable[[int], Example], steps: Iterable[int], num_threads: int, num_workers: int = 0
) -> Iterator[Example]:
  """make(s) for s in steps, in order: in the caller's thread when asked (num_threads <= 1 and no
  workers), else by `num_threads` background threads, or `num_workers` worker processes, up to twice as
  many batches ahead. Errors are raised where the batch is consumed."""
  if num_workers > 0:
    from ae_jax.data import worker_processes

    yield from worker_processes.batches(make, steps, num_workers)
    return
  if num_threads <= 1:
    yield from map(make, steps)
    return
  pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="ae_jax-batches")
  yield from _ahead(pool, make, steps, 2 * num_threads)


def _ahead(
  pool: concurrent.futures.Executor, make: Callable[[int], Example], steps: Iterable[int], depth: int
) -> Iterator[Example]:
  """make(s) for s in steps, in order, computed by `pool` up to `depth` batches ahead; shuts it down."""
  steps = iter(steps)
  try:
    pending = collections.deque(pool.submit(make, s) for s in itertools.islice(steps, depth))
    while pending:
      batch = pending.popleft().result()
      pending.extend(pool.submit(make, s) for s in itertools.islice(steps, 1))
      yield batch
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
