"""Placing pytrees on this process's devices for `jax.pmap` (leading axis = local device count).

Since JAX 0.8 `jax.pmap` runs on jit + shard_map and its outputs are arrays sharded over a one-axis mesh of
the local devices; placing inputs the same way up front means pmap never re-transfers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def unreplicate(tree: Any) -> Any:
  """Takes device 0's copy of a replicated pytree: [local_devices, ...] -> [...]."""
  return jax.tree.map(lambda x: x[0], tree)


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
