"""Input batches assembled by worker processes (`config.data.num_workers`), for data whose decoding or
resizing holds the GIL too long for threads to scale.

    for batch in batches(make, itertools.count(start), num_workers=8):   # make(step) -> {field: array}
      ...

Each worker is a spawned process (not forked: the parent runs JAX's threads, which a fork does not
carry over safely) that receives `make` once, serialised with cloudpickle, and computes whole batches
from their step numbers, so the batches are bitwise those of the caller's thread. They come back in
order, up to 2 x num_workers ahead. Arrays travel through shared-memory slots that the consumer creates
once the first batch shows their size, one per batch in flight, and reuses: each worker keeps its
mappings, so after the first batches a batch costs one copy in and one copy out (a pipe carries
about 170 MB/s on the 2-core machine measured, page-faulting a fresh block per batch about as little).
Without room in /dev/shm (or without /dev/shm), or for ragged (object) fields, batches go through the
pipe. The slots belong to the consumer: they are unlinked when the stream ends, and by
multiprocessing's resource tracker if the consumer dies.

Workers die with the consumer: each watches its parent (`os.getppid()`, every PARENT_POLL_SECONDS) and,
once the consumer is gone (kill -9 included), unlinks the slots it mapped and exits at once; the resource
tracker, whose pipe the workers held open, then sees every user gone, unlinks any slot left and exits too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ae_jax.core.errors import ConfigError, DataError

Example = dict[str, np.ndarray]
SHM = "/dev/shm"  # where Linux keeps POSIX shared-memory blocks
MIN_SLOT_BYTES = 1 << 16  # smaller batches travel pickled through the pipe
_ALIGN = 64  # bytes: each array of a batch starts at a multiple of this in its slot
PARENT_POLL_SECONDS = 0.25  # how often a worker checks that the consumer still runs
SLOT_PREFIX = "ae_jax_slot_"  # slot names: SLOT_PREFIX + the consumer's pid + "_" + random hex


def slot_prefix(pid: int | None = None) -> str:
  """The name prefix of the shared-memory slots consumer `pid` (default: this process) makes."""
  return f"{SLOT_PREFIX}{os.getpid() if pid is None else pid}_"


@dataclasses.dataclass(frozen=True)
class _InSlot:
  """An array of a batch that a worker wrote into the batch's slot."""

  offset: int
  shape: tuple[int, ...]
  dtype: str


def _offsets(arrays: dict[str, np.ndarray]) -> tuple[dict[str, int], int]:
  """Aligned byte offsets of the non-object arrays packed one after another, and their total size."""
  offsets, total = {}, 0
  for key, value in arrays.items():
    if value.dtype != object:
      offsets[key] = total
      total += -(-value.nbytes // _ALIGN) * _ALIGN
  return offsets, total


# ----------------------------------------------------------------------------- in a worker process

_make: Callable[[int], Example] | None = None
_attached: dict[str, shared_memory.SharedMemory] = {}  # the slots this worker has mapped, by name


def _start(payload: bytes, parent: int) -> None:
  """A worker's initializer: the batch function, and a watcher that ends the worker with its parent."""
  global _make
  threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
  _make = pickle.loads(payload)


def _watch_parent(parent: int) -> None:
  """Ends this worker once `parent` (the consumer) is gone: a worker whose parent died is re-parented,
  so its parent process id changes. The slots it mapped are unlinked first (the consumer cannot)."""
  while os.getppid() == parent:
    time.sleep(PARENT_POLL_SECONDS)
  for block in list(_attached.values()):
    try:
      block.close()
      block.unlink()
    except Exception:  # noqa: BLE001 - already unlinked, or the resource tracker gone: nothing to keep
      pass
  os._exit(1)


def _slot(name: str) -> shared_memory.SharedMemory:
  if name not in _attached:
    _attached[name] = shared_memory.SharedMemory(name=name)
  return _attached[name]


def _batch(step: int, slot: str | None) -> tuple[dict[str, Any], int]:
  """(batch `step`, its arrays written into `slot` when it is given and they fit, else the arrays
  themselves; the bytes its arrays take in a slot)."""
  arrays = {key: np.asarray(value) for key, value in _make(step).items()}
  offsets, total = _offsets(arrays)
  if slot is None:
    return arrays, total
  block = _slot(slot)
  if total > block.size:
    return arrays, total
  out: dict[str, Any] = dict(arrays)
  for key, offset in offsets.items():
    value = arrays[key]
    np.ndarray(value.shape, value.dtype, buffer=block.buf, offset=offset)[...] = value
    out[key] = _InSlot(offset, value.shape, value.dtype.str)
  return out, total


# ----------------------------------------------------------------------------- in the consumer


class _Slots:
  """The consumer's shared-memory slots: made once a batch's size is known, then taken and returned."""

  def __init__(self, count: int):
    self.count = count
    self.blocks: list[shared_memory.SharedMemory] = []
    self.free: list[shared_memory.SharedMemory] = []
    self.sized = False

  def fit(self, nbytes: int) -> None:
    """Makes `count` slots of `nbytes` (once; none when batches are small or /dev/shm lacks room)."""
    if self.sized:
      return
    self.sized = True
    try:
      stat = os.statvfs(SHM)
      room = stat.f_bavail * stat.f_frsize
    except OSError:  # no /dev/shm (e.g. macOS): the pipe carries every batch
      return
    if nbytes < MIN_SLOT_BYTES or 2 * self.count * nbytes > room:
      return
    self.blocks = [
      shared_memory.SharedMemory(name=slot_prefix() + secrets.token_hex(6), create=True, size=nbytes)
      for _ in range(self.count)
    ]
    self.free = list(self.blocks)

  def take(self) -> shared_memory.SharedMemory | None:
    return self.free.pop() if self.free else None

  def copied(self, batch: dict[str, Any], block: shared_memory.SharedMemory | None) -> Example:
    """The batch with its slot's arrays copied out; the slot is free again."""
    out = {}
    for key, value in batch.items():
      if isinstance(value, _InSlot):
        view = np.ndarray(value.shape, np.dtype(value.dtype), buffer=block.buf, offset=value.offset)
        value = view.copy()
        del view
      out[key] = value
    if block is not None:
      self.free.append(block)
    return out

  def close(self) -> None:
    for block in self.blocks:
      block.close()
      block.unlink()
    self.blocks, self.free = [], []


def batches(make: Callable[[int], Example], steps: Iterable[int], num_workers: int) -> Iterator[Example]:
  """make(s) for s in steps, in order, computed by `num_workers` worker processes (see the module
  docstring). A worker's own error (e.g. a DataError naming a corrupt file) is raised here, where its
  batch is consumed; a reader that cannot be sent to workers is a ConfigError, a worker that dies a
  DataError."""
  import cloudpickle

  try:
    payload = cloudpickle.dumps(make)
  except Exception as e:  # noqa: BLE001 - pickling raises TypeError, PicklingError, AttributeError, ...
    raise ConfigError(
      f"config.data.num_workers={num_workers}: this dataset's reader cannot be sent to worker processes "
      f"({type(e).__name__}: {e}); set config.data.num_workers=0 and use num_threads"
    ) from None
  depth = 2 * num_workers
  pool = concurrent.futures.ProcessPoolExecutor(
    num_workers,
    mp_context=multiprocessing.get_context("spawn"),
    initializer=_start,
    initargs=(payload, os.getpid()),
  )
  slots = _Slots(depth)
  steps = iter(steps)
  pending: collections.deque = collections.deque()  # (future, slot)

  def submit(step: int) -> None:
    block = slots.take()
    pending.append((pool.submit(_batch, step, None if block is None else block.name), block))

  try:
    for step in itertools.islice(steps, depth):
      submit(step)
    while pending:
      future, block = pending.popleft()
      batch, nbytes = future.result()
      out = slots.copied(batch, block)
      slots.fit(nbytes)
      for step in itertools.islice(steps, 1):
        submit(step)
      yield out
  except concurrent.futures.process.BrokenProcessPool as e:
    raise DataError(
      f"a data worker process died ({e}); it may have run out of memory: lower config.data.num_workers "
      "or set it to 0"
    ) from None
  finally:
    pool.shutdown(wait=True, cancel_futures=True)  # no worker writes into a slot after this
    slots.close()
