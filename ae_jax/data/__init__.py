"""Datasets by name (`DATASETS`, one `DatasetSpec` each, `ae_jax.core.registry`) and the batching pipeline.

    dataset = get_dataset(config.data)        # splits by role + how to read them
    dataset.split("train"), dataset.info.preprocess(record, index) -> {"x", "label", ...}

Built in: fashion_mnist, mnist, binarized_mnist, cifar10, tfds (any tfds image dataset), image_folder,
spoken_digit, series_file (your own series; the shipped discord series and ECG5000 are presets in
`shipped_series.PRESETS`), synthetic, synthetic_sequences. `register(DatasetSpec(...))` in any module adds
one: the modules of this package are found by name (see ae_jax/core/registry.py), a module of your own by
`config.data.name = "your.module:name"` (docs/extending.md).
"""

from ae_jax.data.dataset import (
  COMMON_OPTIONS,
  DATASETS,
  ROLES,
  Dataset,
  DatasetInfo,
  DatasetSpec,
  ExampleSpec,
  data_config,
  example_spec,
  get_dataset,
  get_spec,
  register,
  resolve,
  split_roles,
)
from ae_jax.data.images import binarize, synthetic_images, training_variance
from ae_jax.data.sources import ArraySource, data_root

__all__ = [
  "COMMON_OPTIONS",
  "DATASETS",
  "ROLES",
  "ArraySource",
  "Dataset",
  "DatasetInfo",
  "DatasetSpec",
  "ExampleSpec",
  "binarize",
  "data_config",
  "data_root",
  "example_spec",
  "get_dataset",
  "get_spec",
  "register",
  "resolve",
  "split_roles",
  "synthetic_images",
  "training_variance",
]
