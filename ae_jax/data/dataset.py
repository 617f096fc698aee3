"""Datasets as plug-ins: one `DatasetSpec` per dataset (in `ae_jax.core.registry.DATASETS`), and the checked
`config.data` built from it.

A spec says everything the trainer, the inspector and the reports need before any data is read: its
options and their defaults, the example's shape and dtype, its splits (by role: "train", "validation",
"test"), class names, whether an example can be drawn as an image, whether it provides the training
variance, and whether it carries labelled anomalies. `load(config.data)` then returns a `Dataset`: the
split sources and a `DatasetInfo` (how to turn a record into model inputs).

`config.data` is checked like `config.model`: `data_config(name, **overrides)` lists every option of the
dataset with its default (so each can be set with --config.data.KEY=VALUE), and `resolve(config.data)`
rejects a key the dataset does not have, naming the closest one, before any compute.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError, did_you_mean
from ae_jax.core.registry import DATASETS, Spec
from ae_jax.data import sources

Record = Mapping[str, Any]
Source = Sequence[Record]
ROLES = ("train", "validation", "test")

# Options every dataset has (a spec may change their defaults through its own `options`).
COMMON_OPTIONS: dict[str, Any] = {
  "root": "",  # local data folder; "": $AE_JAX_DATA, else ../shared/data beside the project
  "data_dir": ml_collections.config_dict.placeholder(str),  # tfds data_dir; None: tfds' default
  "download": False,  # let tfds download and prepare (needs TensorFlow: pip install 'ae-jax[tfds-download]')
  "num_threads": 1,  # threads assembling input batches: 1 the caller's; more for decode/resize-heavy data
  # > 0: worker processes assemble the batches instead (decoding or resizing that threads cannot scale)
  "num_workers": 0,
  "cache_in_memory": True,  # read every split into RAM once (fast random access for small datasets)
  "validation_size": 0,  # > 0: the last N training records become the validation split (if there is none)
  # "auto": the training split lives on the devices and each step gathers its own batch there, when the
  # dataset allows it and the split takes at most on_device_memory_fraction of device memory; "true" insists
  # (one error line saying why not), "false": the host pipeline
  "on_device": "auto",
  "on_device_memory_fraction": 0.25,
}


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """One model input: x's shape (without the batch) and dtype, and whether examples carry a "mask" [T]."""

  shape: tuple[int, ...]
  dtype: str = "float32"
  masked: bool = False


Preprocess = Callable[[Record, int], dict[str, np.ndarray]]
# (records {field: [n, ...]} as `sources.gather` returns them, stream positions int64 [n]) -> batch [n, ...]
BatchPreprocess = Callable[[Mapping[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


def stack_outputs(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Examples (dicts of arrays with the same keys) stacked into one batch {key: [n, ...]}."""
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def stack_examples(source: Sequence, info: DatasetInfo, indices: Sequence[int]) -> dict[str, np.ndarray]:
  """source[i] for i in `indices`, preprocessed for evaluation, as one batch {"x": [n, ...], ...}."""
  indices = np.asarray(indices, np.int64)
  return info.batch_preprocess_for(False)(sources.gather(source, indices), indices)


def per_record(preprocess: Preprocess) -> BatchPreprocess:
  """The batch form of a per-record preprocess: applied to each record of the batch, outputs stacked.

  Record j is {field: records[field][j]}: a stacked field gives numpy scalars or array views where the
  source held Python scalars or arrays, an object field the values as the source held them.
  """

  def batch_preprocess(records: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    return stack_outputs(
      [preprocess({k: v[j] for k, v in records.items()}, int(i)) for j, i in enumerate(indices)]
    )

  return batch_preprocess


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """How records become model inputs, known once the data is opened.

  preprocess(record, stream_index) -> {"x", "label", optional "mask"} for training; eval_preprocess the
  same for evaluation (deterministic: e.g. a center crop where training crops at random). to_image maps
  x [N, ...] to images [N, H, W, C] in [0, 1] for display, or is None. variance_fn: () -> per-element
  variance of the training inputs in model units (computed on first use, then cached), or None.

  batch_preprocess(records, stream_indices) is preprocess on a whole batch: records {field: [n, ...]}
  (as `sources.gather` returns them) and stream_indices int64 [n] -> {"x": [n, ...], ...}, bitwise equal
  to stacking preprocess(record_j, stream_indices[j]); eval_batch_preprocess likewise for
  eval_preprocess. None: `batch_preprocess_for` applies the per-record function to each record.

  device_preprocess is batch_preprocess written for jax arrays (traceable: it runs inside the pmapped
  step on records gathered on the device, with int32 stream positions), bitwise equal to it; None: the
  training split cannot be device-resident (`config.data.on_device`, see ae_jax/training/device_input.py).
  """

  example: ExampleSpec
  preprocess: Preprocess
  eval_preprocess: Preprocess | None = None
  class_names: tuple[str, ...] | None = None
  to_image: Callable[[np.ndarray], np.ndarray] | None = None
  variance_fn: Callable[[], float] | None = None
  to_unit: Callable[[Any], Any] | None = None  # image datasets: model range -> [0, 1] (works on jax arrays)
  batch_preprocess: BatchPreprocess | None = None
  eval_batch_preprocess: BatchPreprocess | None = None
  device_preprocess: BatchPreprocess | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    return self.example.shape

  @property
  def variance(self) -> float | None:
    """The training inputs' per-element variance (computed once, on first use), or None."""
    return None if self.variance_fn is None else float(self.variance_fn())

  def preprocess_for(self, train: bool) -> Preprocess:
    """The training or evaluation preprocessing."""
    return self.preprocess if train or self.eval_preprocess is None else self.eval_preprocess

  def batch_preprocess_for(self, train: bool) -> BatchPreprocess:
    """The training or evaluation preprocessing of whole batches: the dataset's own batch function, else
    `per_record(preprocess_for(train))`."""
    if train or self.eval_preprocess is None:
      fn = self.batch_preprocess
    else:
      fn = self.eval_batch_preprocess
    return fn if fn is not None else per_record(self.preprocess_for(train))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An opened dataset: split sources by role, how to read them, and (series with labelled anomalies)
  the segments the anomaly detector scores (`ae_jax.data.shipped_series.AnomalySplits`)."""

  name: str
  splits: Mapping[str, Source]
  info: DatasetInfo
  anomaly: Any = None
  finished: bool = False  # `finish_splits` already applied by the loader (it is applied once)

  def split(self, role: str) -> Source:
    if role not in self.splits:
      raise ConfigError(
        f"dataset '{self.name}' has no '{role}' split (it has {sorted(self.splits)}); "
        + ("set config.data.validation_size=N to hold out N training records" if role == "validation" else "")
      )
    return self.splits[role]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSpec(Spec):
  """A registered dataset (register it with `ae_jax.data.register(DatasetSpec(...))`).

  load: resolved config.data -> Dataset (reads or prepares data).
  options: the dataset's own options with defaults (and any changed COMMON_OPTIONS defaults).
  example: resolved config.data -> ExampleSpec, without reading data.
  splits: resolved config.data -> the roles `load` provides.
  class_names: static label names (None: none, or known only once loaded).
  drawable: an example can be shown as an image (reconstruction grids).
  provides_variance: `load` sets info.variance (needed by the `nmse` loss term).
  anomaly_labels: `load` sets Dataset.anomaly (needed by anomaly detection).
  bits_per_value: bits of one stored input value (8 for uint8 pixels), or None (real-valued data).
  """

  load: Callable[[ml_collections.ConfigDict], Dataset]
  example: Callable[[ml_collections.ConfigDict], ExampleSpec]
  splits: Callable[[ml_collections.ConfigDict], tuple[str, ...]] = lambda data: ("train", "test")
  class_names: tuple[str, ...] | None = None
  drawable: bool = False
  provides_variance: bool = False
  anomaly_labels: bool = False
  bits_per_value: int | None = None

  @property
  def target(self) -> Any:
    return self.load

  def details(self) -> list[str]:
    return [f for f in ("drawable", "provides_variance", "anomaly_labels") if getattr(self, f)]


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds `spec` to `DATASETS` (the same module may register a name again; another module may not)."""
  if "name" in spec.options:
    raise ValueError(f"dataset '{spec.name}': 'name' cannot be an option")
  return DATASETS.register(spec)


def get_spec(name: str) -> DatasetSpec:
  """The registered dataset `name` (or `module:name`); ConfigError naming the closest one if unknown."""
  return DATASETS.lookup(name)


def _defaults(spec: DatasetSpec) -> dict[str, Any]:
  return {"name": spec.name, **copy.deepcopy(COMMON_OPTIONS), **spec.defaults()}


def data_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.data` for dataset `name`: every option with its default, then `overrides` (checked)."""
  spec = get_spec(name)
  values = _defaults(spec)
  for key in overrides:
    if key not in values:
      raise ConfigError(
        f"'{key}' is not an option of dataset '{name}'; {did_you_mean(key, values)}options: {sorted(values)}"
      )
  return ml_collections.ConfigDict({**values, **overrides})


def resolve(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.data with the dataset's defaults for every option it leaves out; raises ConfigError for an
  unknown dataset or an option the dataset does not have (naming the closest valid one)."""
  spec = get_spec(data.name)
  values = _defaults(spec)
  for key in data.keys():
    if key not in values:
      others = sorted(n for n, other in DATASETS.items() if key in other.options)
      hint = (
        f"it is an option of {others}: build config.data with data_config('{data.name}', ...) when "
        "switching datasets"
        if others
        else f"{did_you_mean(key, values, 'data.')}its options: {sorted(k for k in values if k != 'name')}"
      )
      raise ConfigError(f"config.data.{key} is not an option of dataset '{data.name}'; {hint}")
  resolved = ml_collections.ConfigDict(values)
  resolved.update(data.to_dict())
  return resolved


def example_spec(data: ml_collections.ConfigDict) -> ExampleSpec:
  """The model input of dataset config.data.name (shape, dtype, mask), without reading any data."""
  resolved = resolve(data)
  return get_spec(resolved.name).example(resolved)


def split_roles(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The split roles the dataset provides under this config (e.g. ("train", "validation", "test"))."""
  resolved = resolve(data)
  roles = tuple(get_spec(resolved.name).splits(resolved))
  if resolved.validation_size and "validation" in roles:
    raise ConfigError(
      f"dataset '{resolved.name}' has its own validation split; set config.data.validation_size=0"
    )
  if resolved.validation_size:
    roles = ("train", "validation", *(r for r in roles if r != "train"))
  return roles


def finish_splits(data: ml_collections.ConfigDict, splits: Mapping[str, Source]) -> dict[str, Source]:
  """Applies config.data.validation_size (the last N training records become the validation split) and
  config.data.cache_in_memory (every split read into RAM once) to a loader's splits."""
  splits = dict(splits)
  if data.validation_size and "validation" not in splits:
    splits["train"], splits["validation"] = sources.hold_out(splits["train"], int(data.validation_size))
  if data.cache_in_memory:
    splits = {role: sources.in_memory(s) for role, s in splits.items()}
  return {r: splits[r] for r in ROLES if r in splits}


def get_dataset(data: ml_collections.ConfigDict) -> Dataset:
  """Opens dataset config.data.name: its splits by role and how to read them (see `finish_splits`)."""
  resolved = resolve(data)
  roles = split_roles(resolved)
  dataset = get_spec(resolved.name).load(resolved)
  if not dataset.finished:
    dataset = dataclasses.replace(dataset, splits=finish_splits(resolved, dataset.splits), finished=True)
  if set(dataset.splits) != set(roles):  # a loader that disagrees with its spec is a bug
    raise AssertionError(
      f"dataset '{resolved.name}' declares splits {roles} but loaded {sorted(dataset.splits)}"
    )
  return dataset
