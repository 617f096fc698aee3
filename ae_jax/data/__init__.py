"""Datasets by name: each loader returns (train source, test source, DatasetInfo) for the trainer.

A source is any random-access sequence of record dicts (a tfds data source, ArrayRecord, a list);
`DatasetInfo.preprocess(record, index)` turns a record into model-ready arrays ({"x": float32, "label"}).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from ae_jax.config import did_you_mean
from ae_jax.data import cifar10, fashion_mnist, spoken_digit, timeseries

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and trainer need to know about a dataset.

  shape: per-example model input shape; preprocess(record, stream_index) -> {"x", "label", ...};
  class_names: label names or None; to_image(x [N, ...]) -> images [N, H, W, C] in [0, 1] for display
  (e.g. a spectrogram drawn as an image), or None when the data has no picture (the grid is skipped).
  variance: per-element variance of the training inputs in model units, computed once from the whole
  training split (`with_training_variance`), or None; such datasets also put it in every example as
  "data_variance", which the `nmse` loss term divides by.
  """

  shape: tuple[int, ...]
  preprocess: Callable[[Record, int], dict[str, np.ndarray]]
  class_names: tuple[str, ...] | None = None
  to_image: Callable[[np.ndarray], np.ndarray] | None = lambda x: x
  variance: float | None = None


_SCALES = {
  # name: (uint8 -> model range, model range -> [0, 1])
  "symmetric": (lambda u: u.astype(np.float32) / 127.5 - 1.0, lambda x: (x + 1.0) / 2.0),
  "unit": (lambda u: u.astype(np.float32) / 255.0, lambda x: x),
  # [-0.5, 0.5], as the VQ-VAE references (Sonnet, PyTorch) feed CIFAR-10
  "centered": (lambda u: u.astype(np.float32) / 255.0 - 0.5, lambda x: x + 0.5),
  # already binary images stored as 0/1 (tfds binarized_mnist)
  "binary": (lambda u: u.astype(np.float32), lambda x: x),
}


def binarize(image: np.ndarray, index: int) -> np.ndarray:
  """Dynamic binarisation: pixel p/255 becomes 1 with probability p/255, as float32 {0, 1}.

  The uniform draws come from a counter-based generator keyed by the example's stream position, so a
  training image gets a fresh binarisation every epoch, evaluation images a fixed one, and resumed runs
  the same draws as uninterrupted ones.
  """
  u = np.random.Generator(np.random.Philox(key=index)).random(image.shape, dtype=np.float32)
  return (u * 255.0 < image).astype(np.float32)


def _image_info(shape: tuple[int, ...], data: ml_collections.ConfigDict, class_names=None) -> DatasetInfo:
  if data.scale not in _SCALES:
    raise ValueError(f"unknown config.data.scale '{data.scale}'; choose one of {sorted(_SCALES)}")
  if data.binarize not in ("none", "dynamic"):
    raise ValueError(f"unknown config.data.binarize '{data.binarize}'; choose 'none' or 'dynamic'")
  to_model, to_unit = _SCALES[data.scale]
  if data.binarize == "dynamic":
    to_model, to_unit = None, lambda x: x

  def preprocess(record: Record, index: int) -> dict[str, np.ndarray]:
    image = np.asarray(record["image"])
    x = binarize(image, index) if to_model is None else to_model(image)
    return {"x": x, "label": np.int32(record.get("label", -1))}

  return DatasetInfo(shape, preprocess, class_names, lambda x: np.clip(to_unit(np.asarray(x)), 0.0, 1.0))


def _fashion_mnist(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  idx_dir = data.get("idx_dir") or fashion_mnist.DEFAULT_IDX_DIR
  kwargs = dict(data_dir=data.data_dir, idx_dir=idx_dir, download=data.download)
  train = fashion_mnist.load_fashion_mnist("train", **kwargs)
  test = fashion_mnist.load_fashion_mnist("test", **kwargs)
  return train, test, _image_info((28, 28, 1), data, fashion_mnist.CLASS_NAMES)


def _tfds_source(name: str, split: str, data: ml_collections.ConfigDict) -> Sequence:
  """tfds.data_source(name) if prepared (or downloadable with config.data.download); else one clear error."""
  import tensorflow_datasets as tfds

  try:
    return tfds.data_source(name, split=split, data_dir=data.data_dir, download=bool(data.download))
  except Exception as e:  # noqa: BLE001 - tfds raises assorted errors for a missing or unpreparable dataset
    raise FileNotFoundError(
      f"tfds dataset '{name}' ({split}) is not prepared in data_dir={data.data_dir!r} ({type(e).__name__}); "
      f"prepare it online with `pip install 'ae-jax[tfds-download]'` and --config.data.download=True, "
      f"or point --config.data.data_dir at a tfds directory that has it"
    ) from e


def _mnist(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  digits = tuple(str(i) for i in range(10))
  return (
    _tfds_source("mnist", "train", data),
    _tfds_source("mnist", "test", data),
    _image_info((28, 28, 1), data, digits),
  )


def _binarized_mnist(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  """Larochelle's statically binarised MNIST (tfds binarized_mnist: images in {0, 1}, no labels)."""
  if data.scale != "binary" or data.binarize != "none":
    raise ValueError(
      "binarized_mnist is already binary: set config.data.scale='binary' and data.binarize='none'"
    )
  return (
    _tfds_source("binarized_mnist", "train", data),
    _tfds_source("binarized_mnist", "test", data),
    (_image_info((28, 28, 1), data)),
  )


def synthetic_images(num: int, shape: Sequence[int], seed: int) -> list[dict[str, Any]]:
  """Deterministic uint8 images [*shape] built from a few smooth random patterns, with 10 labels."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  basis = np.stack([np.sin(np.pi * (a * yy + b * xx)) for a, b in rng.uniform(0.5, 3, (4, 2))], -1)
  labels = rng.integers(0, 10, num)
  coef = rng.normal(size=(num, 4)) + labels[:, None] / 5.0
  images = np.tanh(np.einsum("hwk,nk->nhw", basis, coef))[..., None].repeat(c, -1)
  images = ((images + 1) * 127.5).round().astype(np.uint8)
  return [{"image": images[i], "label": int(labels[i])} for i in range(num)]


def _synthetic(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  shape = tuple(data.get("shape", (28, 28, 1)))
  train = synthetic_images(data.get("num_train", 512), shape, seed=1)
  test = synthetic_images(data.get("num_test", 128), shape, seed=2)
  return train, test, _image_info(shape, data)


class ArraySource:
  """A random-access source held in memory as one stacked numpy array per record field.

  Reading a tfds ArrayRecord source record by record costs about 0.3 ms each on a 2-core CPU, which
  starves a small model; read once in bulk (`__getitems__`, ~40 us a record) and serve from memory.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)
    self._len = len(next(iter(self.arrays.values())))

  @classmethod
  def from_source(cls, source: Sequence[Record], chunk: int = 10_000) -> ArraySource:
    fields: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(source), chunk):
      keys = list(range(start, min(start + chunk, len(source))))
      getitems = getattr(source, "__getitems__", None)
      records = getitems(keys) if getitems else [source[i] for i in keys]
      for k in records[0]:
        fields.setdefault(k, []).append(np.stack([np.asarray(r[k]) for r in records]))
    return cls({k: np.concatenate(v) for k, v in fields.items()})

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}


def _maybe_cache(sources: tuple[Sequence, Sequence, DatasetInfo], data: ml_collections.ConfigDict):
  train, test, info = sources
  if not data.cache_in_memory or isinstance(train, (list, ArraySource)):
    return train, test, info
  return ArraySource.from_source(train), ArraySource.from_source(test), info


def training_variance(train: Sequence[Record], info: DatasetInfo, chunk: int = 5000) -> float:
  """Per-element variance of `preprocess(record)["x"]` over a split of uint8 "image" records, in float64.

  Counts the 256 pixel values (exact integers) and maps them through the elementwise preprocessing, so the
  same data always gives the same number, on resume too. For scales "unit" and "centered" it is the
  reference's np.var(train_images / 255) (to float32 rounding of the 256 levels, ~1e-7 relative).
  """
  images = (train if isinstance(train, ArraySource) else ArraySource.from_source(train)).arrays["image"]
  counts = np.zeros(256, np.int64)
  for start in range(0, len(images), chunk):
    counts += np.bincount(np.asarray(images[start : start + chunk], np.uint8).reshape(-1), minlength=256)
  levels = np.asarray(info.preprocess({"image": np.arange(256, dtype=np.uint8)}, 0)["x"], np.float64)
  p = counts / counts.sum()
  mean = p @ levels
  return float(p @ np.square(levels - mean))


def with_training_variance(
  sources: tuple[Sequence, Sequence, DatasetInfo], data: ml_collections.ConfigDict
) -> tuple[Sequence, Sequence, DatasetInfo]:
  """Sets `info.variance` from the training split and adds it to every example as "data_variance" (float32
  scalar) for the `nmse` loss term. Reads the training split once (into memory if data.cache_in_memory)."""
  if data.binarize != "none":
    raise ValueError("the training variance needs deterministic pixels; set config.data.binarize='none'")
  train, test, info = _maybe_cache(sources, data)
  variance = training_variance(train, info)
  preprocess = info.preprocess

  def preprocess_with_variance(record: Record, index: int) -> dict[str, np.ndarray]:
    return {**preprocess(record, index), "data_variance": np.float32(variance)}

  return train, test, dataclasses.replace(info, preprocess=preprocess_with_variance, variance=variance)


def _cifar10(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  """tfds cifar10 if prepared, else the JPEG archive (config.data.archive, $CIFAR10_JPEG, ../shared/data)."""
  kwargs = dict(data_dir=data.data_dir, archive=data.get("archive"), download=data.download)
  train, test = cifar10.load_cifar10("train", **kwargs), cifar10.load_cifar10("test", **kwargs)
  return with_training_variance((train, test, _image_info(cifar10.SHAPE, data, cifar10.CLASS_NAMES)), data)


DATASETS: dict[str, Callable[[ml_collections.ConfigDict], tuple[Sequence, Sequence, DatasetInfo]]] = {
  "fashion_mnist": _fashion_mnist,
  "mnist": _mnist,
  "binarized_mnist": _binarized_mnist,
  "synthetic": _synthetic,
  "spoken_digit": spoken_digit.load_dataset,
  **dict.fromkeys(timeseries.ANOMALY_DATASETS, timeseries.load_anomaly_dataset),  # time series, anomalies
  "synthetic_sequences": timeseries.load_synthetic_sequences,
  "cifar10": _cifar10,
}


# Per-example model input shape of each dataset, known without reading it (for the inspector and tests).
EXAMPLE_SHAPES: dict[str, Callable[[ml_collections.ConfigDict], tuple[int, ...]]] = {
  "fashion_mnist": lambda data: (28, 28, 1),
  "mnist": lambda data: (28, 28, 1),
  "binarized_mnist": lambda data: (28, 28, 1),
  "synthetic": lambda data: tuple(data.get("shape", (28, 28, 1))),
  "spoken_digit": spoken_digit.example_shape,
  **dict.fromkeys(timeseries.ANOMALY_DATASETS, timeseries.anomaly_example_shape),
  "synthetic_sequences": timeseries.synthetic_shape,
  "cifar10": lambda data: cifar10.SHAPE,
}


def example_shape(data: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The per-example input shape of dataset `data.name`, without loading it."""
  if data.name not in EXAMPLE_SHAPES:
    raise ValueError(f"unknown config.data.name '{data.name}'; {did_you_mean(data.name, EXAMPLE_SHAPES)}")
  return EXAMPLE_SHAPES[data.name](data)


def get_dataset(data: ml_collections.ConfigDict) -> tuple[Sequence, Sequence, DatasetInfo]:
  """(train source, test source, info) for `config.data`."""
  if data.name not in DATASETS:
    hint = did_you_mean(data.name, DATASETS)
    raise ValueError(f"unknown config.data.name '{data.name}'; {hint}registered datasets: {sorted(DATASETS)}")
  return _maybe_cache(DATASETS[data.name](data), data)
