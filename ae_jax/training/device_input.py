"""Device-resident training input: the training split is placed on every device once, and each step
gathers and preprocesses its own batch inside the pmapped step, from its step number alone.

    plan = device_input.plan(config, dataset)       # decided before any placement; plan.line says why
    resident = device_input.Resident(config, plan)
    order = resident.order_for(step, size)          # the epochs' record orders, placed between dispatches
    p_steps(rstate, resident.arrays, order, resident.slots, size)

The batches are bitwise the host pipeline's (`pipeline.train_batch_indices` then the dataset's
`batch_preprocess`): stream positions p + P * (step * b + j) and records
`epoch_permutation(seed, position // n, n)[position % n]`. Those permutations are numpy's (the host path's),
so the host computes them and places a table of the orders of W consecutive epochs [W, n] int32: the whole
run's when it takes at most ORDER_BYTES, else a window that is re-placed between dispatches when a dispatch
reaches past it. A step itself transfers nothing (the loop runs it under `jax.transfer_guard("disallow")`).

Positions are int32 on the device: a run whose total_steps * batch_size reaches 2**31 stays on the host
path. A step whose loss is not finite does not advance `state.step`, so the next one would gather the same
batch; the loop stops such a run at its next check, before anything is saved.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data import pipeline, resolve, sources
from ae_jax.data.dataset import Dataset
from ae_jax.training import train

ORDER_BYTES = 64 * 2**20  # the epoch-order table placed at once: the whole run's when it fits
CHOICES = ("auto", "true", "false")


def size_text(nbytes: float) -> str:
  """A byte count for people: "216 B", "4.3 KB", "47.0 MB", "1.2 GB"."""
  for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
    if nbytes >= scale:
      return f"{nbytes / scale:.1f} {unit}"
  return f"{int(nbytes)} B"


@dataclasses.dataclass(frozen=True)
class Plan:
  """Whether the training split goes on the devices, the one line that says so (and why), and, when it
  does, the split's arrays as read for the decision (placed by `Resident`)."""

  enabled: bool
  line: str
  data_bytes: int = 0
  arrays: dict[str, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)


def _numeric(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: v for k, v in arrays.items() if v.dtype != object}


def _held_in_memory(source: Any) -> bool:
  if isinstance(source, sources.SplitView):
    return _held_in_memory(source.source)
  return isinstance(source, (list, sources.ArraySource))


def training_arrays(dataset: Dataset) -> dict[str, np.ndarray] | None:
  """The training split as numeric arrays {field: [n, ...]} when it is held in memory, else None."""
  source = dataset.split("train")
  if not _held_in_memory(source):
    return None
  if isinstance(source, sources.ArraySource):
    return _numeric(source.arrays)
  return _numeric(sources.gather(source, np.arange(len(source))))


def device_memory_bytes() -> int:
  """Memory of one local device: its allocator's limit where it reports one (GPU, TPU), else this host's
  physical memory shared by its local devices (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // jax.local_device_count()


def _assembly(data: ml_collections.ConfigDict) -> str:
  """What assembles the host pipeline's batches (resolved config.data), when more than the trainer's
  prefetch thread."""
  workers, threads = int(data.num_workers), int(data.num_threads)
  if workers > 0:
    return f"; {workers} worker processes assemble the batches"
  return f"; {threads} threads assemble the batches" if threads > 1 else ""


def plan(config: ml_collections.ConfigDict, dataset: Dataset) -> Plan:
  """Decides config.data.on_device ("auto", "true", "false") for this run; "true" where the split cannot
  be device-resident raises ConfigError naming why."""
  data = resolve(config.data)
  choice = str(data.on_device).lower()
  if choice not in CHOICES:
    raise ConfigError(f"config.data.on_device must be one of {CHOICES}, not {data.on_device!r}")
  if choice == "false":
    return Plan(False, f"input: host pipeline (config.data.on_device=false){_assembly(data)}")
  # the split is read (a gather, for a split not already held as arrays) only when it could be placed
  arrays = training_arrays(dataset) if dataset.info.device_preprocess is not None else None
  size = sum(v.nbytes for v in arrays.values()) if arrays is not None else 0
  budget = float(data.on_device_memory_fraction) * device_memory_bytes()
  why_not = None
  if dataset.info.device_preprocess is None:
    why_not = (
      f"dataset '{dataset.name}' preprocesses on the host under this config "
      "(e.g. resizing or cropping as it reads)"
    )
  elif arrays is None:
    why_not = "the training split is not held in memory (config.data.cache_in_memory=False)"
  elif int(config.total_steps) * int(config.batch_size) >= 2**31:
    why_not = "total_steps * batch_size reaches 2**31, past int32 stream positions on the device"
  elif size > budget:
    why_not = (
      f"the training split ({size_text(size)}) is over config.data.on_device_memory_fraction of a "
      f"device's memory ({size_text(budget)})"
    )
  if why_not is not None:
    if choice == "true":
      raise ConfigError(f"config.data.on_device=true, but {why_not}; set config.data.on_device=auto or false")
    return Plan(False, f"input: host pipeline ({why_not}){_assembly(data)}")
  return Plan(
    True,
    f"input: device-resident, {size_text(size)} of training data on each of {jax.local_device_count()} "
    "devices; each step gathers its batch there (no host work or transfer per step)",
    size,
    arrays,
  )


def host_batches(config: ml_collections.ConfigDict, dataset: Dataset, start: int = 0) -> Iterator[Any]:
  """The host pipeline's global training batches {field: [batch_size, ...]} from step `start`, for a run
  whose plan is not device-resident: `pipeline.train_batches` with the dataset's batch preprocessing, and
  config.data's num_threads or num_workers assembling them."""
  data = resolve(config.data)
  return pipeline.train_batches(
    dataset.split("train"),
    dataset.info.preprocess,
    global_batch=config.batch_size,
    seed=config.seed,
    start_step=start,
    num_threads=data.num_threads,
    num_workers=data.num_workers,
    batch_preprocess=dataset.info.batch_preprocess_for(True),
  )


class Resident:
  """The training split on this process's devices ([devices, n, ...] each field), each device's place
  in the local batch (`slots`), and the epoch-order table (`order_for`)."""

  def __init__(self, config: ml_collections.ConfigDict, plan_: Plan):
    if not plan_.enabled:
      raise ValueError(f"not device-resident: {plan_.line}")
    arrays = plan_.arrays
    self.n = len(next(iter(arrays.values())))
    self.seed, self.global_batch = int(config.seed), int(config.batch_size)
    self.process_count, self.process_index = jax.process_count(), jax.process_index()
    self.local_batch = self.global_batch // self.process_count
    devices = jax.local_device_count()
    if self.local_batch % devices:
      raise ConfigError(f"batch of {self.local_batch} examples does not split over {devices} local devices")
    self.per_device = self.local_batch // devices
    self.arrays = parallel.replicate(arrays)
    self.slots = parallel.shard(np.arange(devices, dtype=np.int32) * self.per_device)
    last_position = int(config.total_steps) * self.global_batch
    run_epochs = last_position // self.n + 1
    self.window = max(1, min(run_epochs, ORDER_BYTES // (4 * self.n)))  # epochs in the order table
    self._order: Any = None
    self._first = -1
    self.order_bytes_placed = 0  # host-to-device bytes of epoch orders placed so far

  def _epochs(self, step: int, size: int) -> tuple[int, int]:
    """The first and last epoch that steps [step, step + size) read."""
    first = step * self.global_batch
    return first // self.n, ((step + size) * self.global_batch - 1) // self.n

  def order_for(self, step: int, size: int) -> dict[str, jax.Array]:
    """The placed order table covering the dispatch of steps [step, step + size) (placing a new one first
    when the current one does not): {"table": [devices, W, n] int32, "first": [devices] int32}."""
    lo, hi = self._epochs(step, size)
    if self._order is None or lo < self._first or hi >= self._first + self.window:
      self.window = max(self.window, hi - lo + 1)
      table = np.stack(
        [pipeline.epoch_permutation(self.seed, e, self.n) for e in range(lo, lo + self.window)]
      ).astype(np.int32)
      self._order = {
        "table": parallel.replicate(table),
        "first": parallel.replicate(np.int32(lo)),
      }
      self._first = lo
      self.order_bytes_placed += table.nbytes * jax.local_device_count()
    return self._order

  def batch(
    self,
    arrays: Mapping[str, jax.Array],
    order: Mapping[str, jax.Array],
    slot: jax.Array,
    step: jax.Array,
    preprocess: Any,
  ) -> dict[str, jax.Array]:
    """This device's share of training batch `step` (traced, inside the pmapped step)."""
    local = step * self.local_batch + slot + jnp.arange(self.per_device, dtype=jnp.int32)
    positions = self.process_index + self.process_count * local
    epochs, offsets = positions // self.n, positions % self.n
    records = order["table"][epochs - order["first"], offsets]
    gathered = {k: jnp.take(v, records, axis=0) for k, v in arrays.items()}
    return preprocess(gathered, positions)


def train_steps(
  state: train.TrainState,
  arrays: Mapping[str, jax.Array],
  order: Mapping[str, jax.Array],
  slot: jax.Array,
  k: int,
  *,
  resident: Resident,
  preprocess: Any,
  **step_options: Any,
) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """k optimisation steps, each on the batch it gathers from the resident split for its own step number
  (`state.step`); as `train.train_steps` otherwise (scanned on accelerators, traced one after another on
  XLA:CPU), returning every step's metrics [k]."""

  def one(state: train.TrainState, _: Any) -> tuple[train.TrainState, dict[str, jax.Array]]:
    batch = resident.batch(arrays, order, slot, state.step, preprocess)
    return train.train_step(state, batch, **step_options)

  if jax.default_backend() != "cpu":
    return jax.lax.scan(one, state, None, length=k)
  metrics = []
  for _ in range(k):
    state, m = one(state, None)
    metrics.append(m)
  return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)


def pmapped_steps(resident: Resident, preprocess: Any, **step_options: Any) -> Any:
  """`train_steps` pmapped as the loop calls it: (rstate, arrays, order, slots, k) -> (rstate, metrics)."""
  fn = functools.partial(train_steps, resident=resident, preprocess=preprocess, **step_options)
  return jax.pmap(fn, axis_name=parallel.AXIS, donate_argnums=(0,), static_broadcasted_argnums=(4,))


def batches(resident: Resident, preprocess: Any, step: int, size: int) -> dict[str, np.ndarray]:
  """The device-gathered batches of steps [step, step + size), on the host as [size, local_batch, ...]:
  what the resident path trains on, for comparing with the host pipeline."""

  def gather(arrays, order, slot, first):
    return jax.vmap(lambda s: resident.batch(arrays, order, slot, s, preprocess))(first + jnp.arange(size))

  fn = jax.pmap(gather, axis_name=parallel.AXIS, in_axes=(0, 0, 0, None))
  out = jax.device_get(fn(resident.arrays, resident.order_for(step, size), resident.slots, np.int32(step)))
  # [devices, size, per_device, ...] -> [size, devices * per_device, ...]
  return {k: np.swapaxes(v, 0, 1).reshape(size, -1, *v.shape[3:]) for k, v in out.items()}
