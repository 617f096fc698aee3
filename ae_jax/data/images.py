"""Image datasets: pixel scales, dynamic binarisation, resizing and cropping, and the training variance.

Every image dataset stores uint8 pixels [H, W, C] under "image" (and an integer "label" when it has one).
`image_info` turns them into model inputs: optionally converted to `channels`, cropped and resized to
`image_size` (`Geometry`), then mapped to the model's range by `scale` ("symmetric" [-1, 1] for Tanh
outputs, "unit" [0, 1], "centered" [-0.5, 0.5], "binary" for 0/1 data) or binarised per draw.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import dataset, philox, sources

# Options of every image dataset.
IMAGE_OPTIONS: dict[str, Any] = {
  "scale": "symmetric",  # symmetric [-1, 1] | unit [0, 1] | centered [-0.5, 0.5] | binary (0/1 data)
  "binarize": "none",  # dynamic: each pixel p/255 resampled as a Bernoulli draw (binary VAEs)
}
# Options of image datasets whose images are resized (any source size to one model input size).
GEOMETRY_OPTIONS: dict[str, Any] = {
  "image_size": 0,  # side of the square model input; 0: keep the stored size (all images must share it)
  "crop": "center",  # center | random (training; center for evaluation) | none (resize, aspect not kept)
  "crop_size": 0,  # side of the square cut from the source before resizing; 0: its shorter side
  "channels": 0,  # 1 (grayscale) or 3 (RGB); 0: as stored
}

SCALES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
  # name: (uint8 -> model range, model range -> [0, 1])
  "symmetric": (lambda u: u.astype(np.float32) / 127.5 - 1.0, lambda x: (x + 1.0) / 2.0),
  "unit": (lambda u: u.astype(np.float32) / 255.0, lambda x: x),
  "centered": (lambda u: u.astype(np.float32) / 255.0 - 0.5, lambda x: x + 0.5),
  "binary": (lambda u: u.astype(np.float32), lambda x: x),
}
CROPS = ("center", "random", "none")


def binarize(image: np.ndarray, index: int) -> np.ndarray:
  """Dynamic binarisation: pixel p/255 becomes 1 with probability p/255, as float32 {0, 1}.

  The uniform draws come from a counter-based generator keyed by the example's stream position, so a
  training image gets a fresh binarisation every epoch, evaluation images a fixed one, and resumed runs
  the same draws as uninterrupted ones.
  """
  u = np.random.Generator(np.random.Philox(key=index)).random(image.shape, dtype=np.float32)
  return (u * 255.0 < image).astype(np.float32)


def binarize_batch(images: Any, indices: Any, xp: Any = np) -> Any:
  """`binarize` of a batch: uint8 images [n, ...] and stream positions [n] -> float32 {0, 1} [n, ...],
  bitwise; the Philox draws of all images at once (`philox.binarize_batch`), in numpy or, with
  xp=jax.numpy, inside a jitted step (positions as int32 there)."""
  return philox.binarize_batch(images, indices, xp)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """uint8 [H, W, C] (C in 1, 3, 4) -> [H, W, channels]: gray to RGB by repetition, RGB to gray with
  ITU-R 601 luma (as Pillow's "L"), alpha composited over black. channels 0 keeps C (alpha dropped)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] in (2, 4):  # gray+alpha, RGBA: composite over black
    alpha = image[..., -1:].astype(np.float32) / 255.0
    image = np.round(image[..., :-1].astype(np.float32) * alpha).astype(np.uint8)
  if channels in (0, image.shape[-1]):
    return image
  if channels == 3 and image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  if channels == 1 and image.shape[-1] == 3:
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
  raise DataError(f"cannot convert an image with {image.shape[-1]} channels to {channels}")


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Square crop (center, random for training, or none) then resize to image_size x image_size."""

  image_size: int = 0
  crop: str = "center"
  crop_size: int = 0
  channels: int = 0

  @classmethod
  def from_config(cls, data: ml_collections.ConfigDict) -> Geometry:
    g = cls(int(data.image_size), str(data.crop), int(data.crop_size), int(data.channels))
    if g.crop not in CROPS:
      raise ConfigError(f"unknown config.data.crop '{g.crop}'; choose one of {CROPS}")
    if g.channels not in (0, 1, 3) or g.image_size < 0 or g.crop_size < 0:
      raise ConfigError(
        "config.data.channels must be 0 (as stored), 1 or 3, and image_size, crop_size >= 0; got "
        f"channels={g.channels}, image_size={g.image_size}, crop_size={g.crop_size}"
      )
    return g

  def apply(self, image: np.ndarray, index: int, train: bool) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [image_size, image_size, channels] (or the stored size when 0)."""
    image = convert_channels(image, self.channels)
    if not self.image_size:
      return image
    h, w = image.shape[:2]
    if self.crop == "none":
      box = (0, 0, w, h)
    else:
      side = min(self.crop_size or min(h, w), h, w)
      if self.crop == "random" and train:
        rng = np.random.Generator(np.random.Philox(key=[index, 0x43524F50]))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
      else:
        top, left = (h - side) // 2, (w - side) // 2
      box = (left, top, left + side, top + side)
    if box == (0, 0, w, h) and (h, w) == (self.image_size, self.image_size):
      return image
    from PIL import Image

    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).crop(box)
    out = np.asarray(pil.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC))
    return out.reshape(self.image_size, self.image_size, image.shape[-1])

  def apply_batch(self, images: np.ndarray, indices: np.ndarray, train: bool) -> np.ndarray:
    """`apply` on a batch: images uint8 [n, H, W, C] (or an object array [n] of images of any sizes) and
    stream positions [n] -> uint8 [n, image_size, image_size, channels]. Returned as they are when
    nothing changes (stored size kept, channels as stored), else image by image."""
    unchanged = (
      not self.image_size
      and images.dtype != object
      and images.ndim == 4
      and images.shape[-1] in (1, 3)
      and self.channels in (0, images.shape[-1])
    )
    if unchanged:
      return images
    return np.stack(
      [self.apply(np.asarray(im), int(i), train) for im, i in zip(images, indices, strict=True)]
    )


def training_variance(images: np.ndarray, levels: np.ndarray, chunk: int = 5000) -> float:
  """Per-element variance of `levels[images]` over uint8 images [N, ...], in float64.

  Counts the 256 pixel values (exact integers) and maps them through the elementwise scale `levels` [256],
  so the same data always gives the same number, on resume too. For scales "unit" and "centered" it is
  np.var(images / 255) (to float32 rounding of the 256 levels, ~1e-7 relative).
  """
  counts = np.zeros(256, np.int64)
  for start in range(0, len(images), chunk):
    counts += np.bincount(np.asarray(images[start : start + chunk], np.uint8).reshape(-1), minlength=256)
  p = counts / counts.sum()
  levels = np.asarray(levels, np.float64)
  mean = p @ levels
  return float(p @ np.square(levels - mean))


def _stacked_images(
  source: Sequence, transform: Callable[[np.ndarray, int], np.ndarray] | None, limit: int, key: str
) -> np.ndarray:
  """Field `key` of the first `limit` records (all when 0), transformed, as one uint8 array."""
  n = min(limit, len(source)) if limit else len(source)
  if transform is not None:
    return np.stack([transform(np.asarray(source[i][key]), i) for i in range(n)])
  if isinstance(source, sources.ArraySource):
    return source.arrays[key][:n]
  return np.stack([np.asarray(source[i][key]) for i in range(n)])


def image_info(
  data: ml_collections.ConfigDict,
  shape: tuple[int, ...],
  *,
  class_names: tuple[str, ...] | None = None,
  geometry: Geometry | None = None,
  train: Sequence | None = None,
  variance_examples: int = 0,
  image_key: str = "image",
  label_key: str = "label",
) -> dataset.DatasetInfo:
  """DatasetInfo for uint8 image records (`record[image_key]`, optional `record[label_key]`) of model
  shape `shape` under config.data's scale and binarize.

  With `train` given, info.variance is the training split's per-element variance in model units
  (over its first `variance_examples` records when > 0), computed on first use.
  """
  if data.scale not in SCALES:
    raise ConfigError(f"unknown config.data.scale '{data.scale}'; choose one of {sorted(SCALES)}")
  if data.binarize not in ("none", "dynamic"):
    raise ConfigError(f"unknown config.data.binarize '{data.binarize}'; choose 'none' or 'dynamic'")
  to_model, to_unit = SCALES[data.scale]
  dynamic = data.binarize == "dynamic"
  if dynamic:
    to_unit = lambda x: x  # noqa: E731 - binarised pixels are already in [0, 1]

  def make(train_mode: bool) -> Callable[[Mapping[str, Any], int], dict[str, np.ndarray]]:
    def preprocess(record: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
      image = np.asarray(record[image_key])
      if geometry is not None:
        image = geometry.apply(image, index, train_mode)
      x = binarize(image, index) if dynamic else to_model(image)
      label = record.get(label_key, -1) if label_key else -1
      return {"x": x, "label": np.int32(label)}

    return preprocess

  def make_batch(train_mode: bool) -> dataset.BatchPreprocess:
    def batch_preprocess(records: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
      images = records[image_key]
      if geometry is not None:
        images = geometry.apply_batch(images, indices, train_mode)
      if dynamic:
        x = binarize_batch(images, indices)
      else:  # elementwise float32 ops: bitwise the per-image values (and faster than a 256-entry lookup)
        x = to_model(images)
      n = len(indices)
      label = records[label_key] if label_key and label_key in records else np.full(n, -1)
      return {"x": x, "label": np.asarray(label).astype(np.int32)}

    return batch_preprocess

  levels = to_model(np.arange(256, dtype=np.uint8))  # float32 [256]: the model value of each pixel value

  def device_preprocess(records: Mapping[str, Any], indices: Any) -> dict[str, Any]:
    """The training batch on the device, bitwise the host's: a lookup of the 256 host-computed levels, or
    the same Philox draws."""
    import jax.numpy as jnp

    images = records[image_key]
    x = binarize_batch(images, indices, jnp) if dynamic else jnp.asarray(levels)[images.astype(jnp.int32)]
    n = indices.shape[0]
    label = records[label_key] if label_key and label_key in records else jnp.full(n, -1)
    return {"x": x, "label": label.astype(jnp.int32)}

  variance_fn = None
  if train is not None and not dynamic:
    transform = None if geometry is None else (lambda im, i: geometry.apply(im, i, False))
    variance_fn = functools.cache(
      lambda: training_variance(_stacked_images(train, transform, variance_examples, image_key), levels)
    )
  return dataset.DatasetInfo(
    example=dataset.ExampleSpec(tuple(shape)),
    preprocess=make(True),
    eval_preprocess=make(False),
    class_names=class_names,
    to_image=lambda x: np.clip(to_unit(np.asarray(x)), 0.0, 1.0),
    variance_fn=variance_fn,
    to_unit=to_unit,
    batch_preprocess=make_batch(True),
    eval_batch_preprocess=make_batch(False),
    device_preprocess=device_preprocess if geometry is None else None,
  )


def image_dataset(
  name: str,
  data: ml_collections.ConfigDict,
  splits: Mapping[str, Sequence],
  shape: tuple[int, ...],
  class_names: tuple[str, ...] | None = None,
  geometry: Geometry | None = None,
  **info_options: Any,
) -> dataset.Dataset:
  """A Dataset of uint8 image records (`dataset.finish_splits` applied here, with this `data`, so the
  variance is the training split's and a loader's own choices, such as a large folder not cached in
  memory, hold); `info_options` go to `image_info` (variance_examples, image_key, label_key)."""
  splits = dataset.finish_splits(data, splits)
  info = image_info(
    data, shape, class_names=class_names, geometry=geometry, train=splits["train"], **info_options
  )
  return dataset.Dataset(name, splits, info, finished=True)


def register_fixed_size(
  name: str,
  load_split: Callable[[str, ml_collections.ConfigDict], Sequence],
  shape: tuple[int, ...],
  *,
  class_names: tuple[str, ...] | None = None,
  options: Mapping[str, Any] | None = None,
  description: str = "",
) -> dataset.DatasetSpec:
  """Registers a dataset of train and test images of one known `shape`, read by `load_split(split, data)`."""

  def load(data: ml_collections.ConfigDict) -> dataset.Dataset:
    splits = {split: load_split(split, data) for split in ("train", "test")}
    return image_dataset(name, data, splits, shape, class_names)

  return dataset.register(
    dataset.DatasetSpec(
      name=name,
      load=load,
      options={**IMAGE_OPTIONS, **(options or {})},
      example=lambda data: dataset.ExampleSpec(shape),
      class_names=class_names,
      drawable=True,
      provides_variance=True,
      bits_per_value=8,
      description=description,
    )
  )


# ----------------------------------------------------------------------------- synthetic images


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


def _load_synthetic(data: ml_collections.ConfigDict) -> dataset.Dataset:
  shape = tuple(data.shape)
  splits = {
    "train": synthetic_images(data.num_train, shape, seed=1),
    "test": synthetic_images(data.num_test, shape, seed=2),
  }
  return image_dataset("synthetic", data, splits, shape, tuple(str(i) for i in range(10)))


dataset.register(
  dataset.DatasetSpec(
    name="synthetic",
    load=_load_synthetic,
    options={**IMAGE_OPTIONS, "shape": (28, 28, 1), "num_train": 512, "num_test": 128},
    example=lambda data: dataset.ExampleSpec(tuple(data.shape)),
    class_names=tuple(str(i) for i in range(10)),
    drawable=True,
    provides_variance=True,
    bits_per_value=8,
    description="smooth random patterns with 10 labels, generated in memory (tests, smoke runs)",
  )
)
