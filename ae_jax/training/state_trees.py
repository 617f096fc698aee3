"""How a train state is written and compared by `ae_jax.training.checkpoint`: the savable view of a state
(its fields that are not None), global and host-local copies for several processes, the comparison of a
saved tree with a target, and the per-array digest saved with each step.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DIGEST_ALGORITHM = "sha256"


def global_replicated(tree: Any) -> Any:
  """With several processes, turns each process's replicated copy into one global array replicated over
  all devices: Orbax writes global arrays (once), not host-local ones. A no-op in a single process."""
  if jax.process_count() == 1:
    return tree
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("replica",)), PartitionSpec())

  def to_global(x: Any) -> Any:
    local = x.addressable_data(0) if isinstance(x, jax.Array) else x
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))

  return jax.tree.map(to_global, tree)


def savable(state: Any) -> Any:
  """What is written for a dataclass state: a dict of its fields that are not None (a run without a
  weight EMA or a discriminator saves the five fields it always saved, so its checkpoints restore across
  versions of TrainState); other trees as they are."""
  if dataclasses.is_dataclass(state) and not isinstance(state, type):
    return {
      f.name: getattr(state, f.name) for f in dataclasses.fields(state) if getattr(state, f.name) is not None
    }
  return state


def rebuild(target: Any, restored: Any) -> Any:
  """The inverse of `savable`: `target` with the restored fields."""
  if dataclasses.is_dataclass(target) and not isinstance(target, type):
    return target.replace(**restored)
  return restored


def host_local(tree: Any) -> Any:
  """The inverse of `_global_replicated`: this process's copy of each replicated array."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def _flat(tree: Any) -> dict[str, Any]:
  """Leaves by '/'-joined key names (Orbax stores dataclasses and tuples as dicts and lists)."""

  def name(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))

  return {"/".join(map(name, path)): v for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _dtype(x: Any) -> np.dtype | None:
  try:
    return np.dtype(x.dtype)
  except (AttributeError, TypeError):  # no dtype, or one numpy does not know (e.g. a typed PRNG key)
    return None


def metadata_mismatch(saved: Any, target: Any) -> str | None:
  """How the saved state's tree (Orbax metadata) differs from `target`'s, or None when they agree."""
  flat_saved, flat_target = _flat(saved), _flat(target)
  if set(flat_saved) != set(flat_target):
    missing, extra = sorted(set(flat_target) - set(flat_saved)), sorted(set(flat_saved) - set(flat_target))
    return f"different state entries (missing {missing[:3]}, unexpected {extra[:3]})"
  for key, meta in flat_saved.items():
    shape, expected = tuple(getattr(meta, "shape", ()) or ()), tuple(np.shape(flat_target[key]))
    if shape != expected:
      return f"{key} has shape {shape} in the checkpoint but {expected} here"
    dtype, wanted = _dtype(meta), _dtype(flat_target[key])
    if dtype is not None and wanted is not None and dtype != wanted:
      return f"{key} is {dtype} in the checkpoint but {wanted} here"
  return None


def _host_arrays(tree: Any) -> Any:
  """Every leaf as a host numpy array (this process's copy of a replicated array; a PRNG key's data)."""

  def local(x: Any) -> Any:
    if isinstance(x, jax.Array):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
      return x.addressable_data(0)
    return x

  return jax.device_get(jax.tree.map(local, tree))


def state_digest(state: Any) -> dict[str, str]:
  """The sha256 of each array of `state` (its dtype name, shape and bytes), by '/'-joined key path in tree
  order: what `Checkpointer` saves beside a state and compares with the restored arrays."""
  digest = {}
  for name, leaf in _flat(_host_arrays(state)).items():
    array = np.ascontiguousarray(leaf)
    h = hashlib.sha256(f"{array.dtype.name} {array.shape} ".encode())
    h.update(array.reshape(-1).view(np.uint8))
    digest[name] = h.hexdigest()
  return digest
