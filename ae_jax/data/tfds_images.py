"""Image datasets read through tfds: MNIST, binarised MNIST, and any tfds image dataset by name.

`config.data.name = "tfds"` with `tfds_name` (e.g. "celeb_a", "imagenet2012", "lsun/church_outdoor",
"cifar10") reads prepared ArrayRecord files with `tfds.data_source` (no TensorFlow); with
`download=True` tfds downloads and prepares them first (that needs TensorFlow: the `tfds-download`
extra). Images are cropped and resized to `image_size` as they are read (`images.Geometry`), so a large
dataset is never read into memory (`cache_in_memory` defaults to False here). Each process reads only its
own slice of every global batch (`ae_jax.data.pipeline`).
"""

from __future__ import annotations

import functools
import logging

import ml_collections

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import dataset, images, sources

log = logging.getLogger(__name__)

DIGITS = tuple(str(i) for i in range(10))


def _load_binarized_mnist(data: ml_collections.ConfigDict) -> dataset.Dataset:
  """Larochelle's statically binarised MNIST (tfds binarized_mnist: images in {0, 1}, no labels)."""
  if data.scale != "binary" or data.binarize != "none":
    raise ConfigError(
      "binarized_mnist is already binary: set config.data.scale='binary' and data.binarize='none'"
    )
  roles = {"train": "train", "validation": "validation", "test": "test"}
  splits = {role: sources.tfds_source("binarized_mnist", split, data) for role, split in roles.items()}
  return images.image_dataset("binarized_mnist", data, splits, (28, 28, 1))


images.register_fixed_size(
  "mnist",
  lambda split, data: sources.tfds_source("mnist", split, data),
  (28, 28, 1),
  class_names=DIGITS,
  description="tfds mnist (prepared, or download=True with TensorFlow)",
)
dataset.register(
  dataset.DatasetSpec(
    name="binarized_mnist",
    load=_load_binarized_mnist,
    options={**images.IMAGE_OPTIONS, "scale": "binary"},
    example=lambda data: dataset.ExampleSpec((28, 28, 1)),
    splits=lambda data: ("train", "validation", "test"),
    drawable=True,
    bits_per_value=1,
    description="tfds binarized_mnist: Larochelle's fixed binarisation (50,000 / 10,000 / 10,000)",
  )
)

# ----------------------------------------------------------------------------- any tfds image dataset

TFDS_OPTIONS = {
  **images.IMAGE_OPTIONS,
  **images.GEOMETRY_OPTIONS,
  "tfds_name": "",  # e.g. celeb_a, imagenet2012, lsun/church_outdoor, cifar10
  "train_split": "train",
  "validation_split": "",  # "": none (e.g. "validation"; tfds slices such as "train[-5000:]" work too)
  "test_split": "test",
  "image_key": "image",
  "label_key": "label",  # "": no labels
  "variance_examples": 5000,  # the training variance (for the nmse loss) is estimated on this many images
  "cache_in_memory": False,
}


@functools.lru_cache(maxsize=16)
def _tfds_features(name: str, data_dir: str | None):
  """tfds' declared features of dataset `name` (from its code or prepared metadata; reads no data)."""
  import tensorflow_datasets as tfds

  try:
    return tfds.builder(name, data_dir=data_dir).info.features
  except Exception as e:  # noqa: BLE001 - tfds raises DatasetNotFoundError and others for unknown names
    raise ConfigError(
      f"config.data.tfds_name='{name}' is not a tfds dataset ({type(e).__name__}); see "
      "https://www.tensorflow.org/datasets/catalog for names (e.g. celeb_a, imagenet2012)"
    ) from e


def _native_shape(data: ml_collections.ConfigDict) -> tuple:
  if not data.tfds_name:
    raise ConfigError("config.data.name='tfds' needs config.data.tfds_name, e.g. 'celeb_a'")
  features = _tfds_features(data.tfds_name, data.data_dir)
  if data.image_key not in features:
    raise ConfigError(
      f"tfds '{data.tfds_name}' has no feature config.data.image_key='{data.image_key}'; it has "
      f"{sorted(features)}"
    )
  return tuple(features[data.image_key].shape)


def _example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  geometry = images.Geometry.from_config(data)
  native = _native_shape(data)
  if geometry.image_size:
    channels = geometry.channels or native[-1]
    if channels is None:
      raise ConfigError(
        f"tfds '{data.tfds_name}' images have no fixed channel count; set config.data.channels"
      )
    return dataset.ExampleSpec((geometry.image_size, geometry.image_size, int(channels)))
  if None in native:
    raise ConfigError(
      f"tfds '{data.tfds_name}' images vary in size ({native}); set config.data.image_size to resize them"
    )
  return dataset.ExampleSpec((*native[:2], geometry.channels or native[2]))


def _roles(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  return ("train", "validation", "test") if data.validation_split else ("train", "test")


def _class_names(data: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  features = _tfds_features(data.tfds_name, data.data_dir)
  label = features[data.label_key] if data.label_key and data.label_key in features else None
  names = getattr(label, "names", None)
  return tuple(names) if names else None


def _load_tfds(data: ml_collections.ConfigDict) -> dataset.Dataset:
  example = _example(data)
  names = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
  splits = {role: sources.tfds_source(data.tfds_name, names[role], data) for role in _roles(data)}
  first = splits["train"][0]
  if data.image_key not in first:
    raise DataError(f"tfds '{data.tfds_name}' records have no '{data.image_key}'; they have {sorted(first)}")
  label_key = data.label_key if data.label_key in first else ""
  return images.image_dataset(
    "tfds",
    data,
    splits,
    example.shape,
    _class_names(data) if label_key else None,
    images.Geometry.from_config(data),
    variance_examples=int(data.variance_examples),
    image_key=data.image_key,
    label_key=label_key,
  )


dataset.register(
  dataset.DatasetSpec(
    name="tfds",
    load=_load_tfds,
    options=TFDS_OPTIONS,
    example=_example,
    splits=_roles,
    drawable=True,
    bits_per_value=8,
    provides_variance=True,
    description="any tfds image dataset by config.data.tfds_name, cropped and resized to image_size",
  )
)
