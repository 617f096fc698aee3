"""Orbax checkpoints of the full train state plus the config; the only module that imports orbax.

Layout: `WORKDIR/checkpoints/<step>/{state,config}`. Orbax writes each step into a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous checkpoint as the latest one.
The state is saved unreplicated (one copy) and restores on any number of devices; with several processes
(multi-host), each process's copy becomes a global replicated array for Orbax, which writes it once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

# Config entries that decide the shape of the state: a checkpoint can only resume a run that agrees on them.
_STRUCTURAL_KEYS = ("model", "optimizer.name", "data.name", "freeze")


def _global_replicated(tree: Any) -> Any:
  """With several processes, turns each process's replicated copy into one global array replicated over
  all devices: Orbax writes global arrays (once), not host-local ones. A no-op in a single process."""
  if jax.process_count() == 1:
    return tree
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("replica",)), PartitionSpec())

  def to_global(x: Any) -> Any:
    local = x.addressable_data(0) if isinstance(x, jax.Array) else x
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))

  return jax.tree.map(to_global, tree)


def _host_local(tree: Any) -> Any:
  """The inverse of `_global_replicated`: this process's copy of each replicated array."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir belongs to a different experiment than the config being run."""


def _lookup(config: dict, dotted: str) -> Any:
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


class Checkpointer:
  """Saves and restores `TrainState` pytrees with the run's config (a JSON dict) beside them.

  Args:
    directory: where step directories go (created if missing).
    keep: how many of the latest checkpoints to keep (an Orbax LatestN preservation policy).
    async_save: write in a background thread; `wait()` blocks until every save is on disk.
  """

  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "config"))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, config: dict) -> None:
    """Saves `state` (unreplicated pytree) and `config` (JSON-able dict) as checkpoint `step`."""
    if step in self._manager.all_steps():
      return  # already on disk (e.g. the final step coincides with a periodic save)
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_global_replicated(state)), config=ocp.args.JsonSave(config)
      ),
      force=True,
    )

  def restore_config(self, step: int) -> dict:
    """The config saved with checkpoint `step`."""
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def restore(self, step: int, target: Any, config: dict) -> Any:
    """Restores checkpoint `step` into the structure, dtypes and shardings of `target` (e.g. a fresh state).

    Raises CheckpointMismatchError (without touching the checkpoint) when the saved run's model, optimizer
    or dataset differ from `config`, or when the saved state does not fit `target`.
    """
    saved = self.restore_config(step)
    config = json.loads(json.dumps(config))  # compare as saved: tuples become lists
    for key in _STRUCTURAL_KEYS:
      if _lookup(saved, key) != _lookup(config, key):
        raise CheckpointMismatchError(
          f"{self.directory} holds step {step} of a run with {key}={_lookup(saved, key)!r}, but this config "
          f"has {key}={_lookup(config, key)!r}; use a new --workdir (the existing checkpoint is kept)"
        )
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_global_replicated(target)))
      )
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointMismatchError(
        f"checkpoint {self.directory}/{step} does not fit this model's state ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200]}); use a new --workdir (the existing checkpoint is kept)"
      ) from e
    log.info("restored step %d from %s", step, self.directory)
    return _host_local(restored["state"])

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are complete."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class BestCheckpoint:
  """The state with the lowest value of one evaluation metric so far, in its own directory (one step kept).

  The evaluation metrics are saved with the checkpoint, so a resumed run keeps comparing against the same
  best and the best state's metrics need no second evaluation.
  """

  def __init__(self, directory: str, metric: str, *, async_save: bool = True):
    self.metric = metric
    self._ckpt = Checkpointer(directory, keep=1, async_save=async_save)
    self.step = self._ckpt.latest_step()
    self.metrics: dict[str, float] = {}
    if self.step is not None:
      saved = self._ckpt.restore_config(self.step)["best"]
      if saved["metric"] != metric:
        raise CheckpointMismatchError(
          f"{self._ckpt.directory} keeps the best state by {saved['metric']}, but config.keep_best is "
          f"'{metric}'; use the same metric or a new --workdir (the existing checkpoints are kept)"
        )
      self.metrics = saved["metrics"]

  @property
  def value(self) -> float:
    """The best value of the metric so far (inf before any save)."""
    return float(self.metrics.get(self.metric, float("inf")))

  def improves(self, metrics: dict[str, float]) -> bool:
    """Whether these evaluation metrics beat the best so far (so the state is worth saving)."""
    if self.metric not in metrics:
      raise ValueError(
        f"config.keep_best='{self.metric}' is not an evaluation metric; use one of {sorted(metrics)}"
      )
    return float(metrics[self.metric]) < self.value

  def save(self, step: int, metrics: dict[str, float], state: Any, config: dict) -> None:
    """Keeps `state` (unreplicated), evaluated as `metrics` at `step`, as the best (replacing the last)."""
    metrics = {k: float(v) for k, v in metrics.items()}
    self._ckpt.save(step, state, {**config, "best": {"metric": self.metric, "metrics": metrics}})
    self.step, self.metrics = step, metrics

  def restore(self, target: Any, config: dict) -> Any:
    """The best state, restored into the structure of `target`."""
    self._ckpt.wait()
    return self._ckpt.restore(self.step, target, config)

  def close(self) -> None:
    self._ckpt.close()
