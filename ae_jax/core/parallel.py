"""Placing pytrees on this process's devices for `jax.pmap` (leading axis = local device count).

Since JAX 0.8 `jax.pmap` runs on jit + shard_map and its outputs are arrays sharded over a one-axis mesh of
the local devices; placing inputs the same way up front means pmap never re-transfers them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"  # the named axis of every pmapped step: pmean / psum over it average across all devices


def device_sharding(devices: Sequence[jax.Device] | None = None) -> NamedSharding:
  """Sharding of a [len(devices), ...] array with one slice per device (default: all local devices)."""
  return NamedSharding(Mesh(np.array(devices or jax.local_devices()), (AXIS,)), PartitionSpec(AXIS))


def shard(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
  """Puts host arrays shaped [len(devices), ...] onto the devices, one slice each (asynchronous)."""
  return jax.device_put(tree, device_sharding(devices))


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
  """Copies every leaf onto each device: [...] -> [len(devices), ...]."""
  n = len(devices or jax.local_devices())
  return shard(jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree), devices)


def devices_of(rtree: Any) -> tuple[jax.Device, ...]:
  """The local devices a replicated pytree [devices, ...] lives on, in order."""
  leaf = jax.tree.leaves(rtree)[0]
  return tuple(shard.device for shard in sorted(leaf.addressable_shards, key=lambda s: s.index[0].start or 0))


def unreplicate(tree: Any) -> Any:
  """This process's first copy of a replicated pytree: [devices, ...] -> [...].

  Reads the copy held by this process's first local device (`addressable_data(0)`), never another
  process's: indexing a pmap output (a global array over every process's devices) would run a
  cross-process gather, a collective that every process must enter in the same order.
  """
  return jax.tree.map(lambda x: x.addressable_data(0)[0] if isinstance(x, jax.Array) else x[0], tree)


def with_named_axis(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with the device axis name bound (size 1), for running pmap-style code on one device.

  Models with cross-device statistics call collectives (`lax.psum(..., AXIS)`) that need the axis to be
  bound; this runs `fn(*args)` under `jax.vmap(axis_name=AXIS, axis_size=1)`, which binds it, and drops
  the added leading axis from the result.
  """

  def wrapped(*args: Any) -> Any:
    out = jax.vmap(fn, in_axes=None, axis_name=AXIS, axis_size=1)(*args)
    return jax.tree.map(lambda x: x[0], out)

  return wrapped


def split_for_devices(batch: dict[str, np.ndarray], devices: int | None = None) -> dict[str, np.ndarray]:
  """Reshapes a host batch [local_batch, ...] to [devices, local_batch // devices, ...]."""
  devices = devices or jax.local_device_count()

  def split(x: np.ndarray) -> np.ndarray:
    if x.shape[0] % devices:
      raise ValueError(f"batch of {x.shape[0]} examples does not split over {devices} local devices")
    return x.reshape(devices, x.shape[0] // devices, *x.shape[1:])

  return {k: split(v) for k, v in batch.items()}


# ----------------------------------------------------------------------------- feeding the training loop


def dispatch_sizes(
  start: int, total: int, k: int, intervals: tuple[int, ...], stops: tuple[int, ...] = ()
) -> Iterator[int]:
  """Steps per dispatch from `start` to `total`: k at a time, cut short so that every multiple of each
  interval (log, evaluation, checkpoint) and every step in `stops` ends a dispatch. With intervals that are
  multiples of k, every dispatch but perhaps the last has k steps."""
  step = start
  while step < total:
    ends = [
      total,
      step + k,
      *(((step // e) + 1) * e for e in intervals if e),
      *(s for s in stops if s > step),
    ]
    size = min(ends) - step
    yield size
    step += size


def stack_steps(host_batches: list[dict[str, np.ndarray]], devices: int) -> dict[str, np.ndarray]:
  """k host batches [local_batch, ...] -> one dispatch [devices, k, local_batch // devices, ...]."""
  out = {}
  for key in host_batches[0]:
    x = np.stack([b[key] for b in host_batches])  # [k, local_batch, ...]
    k, n = x.shape[:2]
    if n % devices:
      raise ValueError(f"batch of {n} examples does not split over {devices} local devices")
    out[key] = np.swapaxes(x.reshape(k, devices, n // devices, *x.shape[2:]), 0, 1)
  return out


class Prefetcher:
  """Yields dispatches [devices, k, ...] already on the devices, assembled by a background thread that
  stays `depth` dispatches ahead (depth 0: assembled when asked). `close` stops the thread."""

  def __init__(self, batches: Iterator[dict], sizes: list[int], depth: int):
    self._batches, self._sizes, self._devices = batches, sizes, jax.local_device_count()
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._stop = threading.Event()
    self._thread = None
    if depth:
      self._thread = threading.Thread(target=self._fill, daemon=True, name="ae_jax-prefetch")
      self._thread.start()
    self._served = 0

  def _make(self, size: int) -> Any:
    return shard(stack_steps([next(self._batches) for _ in range(size)], self._devices))

  def _fill(self) -> None:
    try:
      for size in self._sizes:
        item = self._make(size)
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
      self._queue.put(e)

  def next(self) -> Any:
    if self._thread is None:
      item = self._make(self._sizes[self._served])
    else:
      item = self._queue.get()
      if isinstance(item, BaseException):
        raise item
    self._served += 1
    return item

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
