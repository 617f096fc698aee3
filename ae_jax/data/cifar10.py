"""CIFAR-10 as a random-access data source, offline and without TensorFlow.

Sources, in order of preference (see `load_split`):
  (a) tfds' own `cifar10`, if already prepared (array_record) in `data_dir`;
  (b) the local `cifar10_jpeg` builder below, prepared once from an archive of JPEG files laid out as
      `*/{train,test}/<class name>/*.jpg` (`config.data.archive`, else
      `<data root>/cifar10-jpeg/cifar10-jpeg.tar.gz`, the offline copy in ../shared/data).

Records are dicts `{'image': uint8 [32, 32, 3], 'label': int64 scalar in [0, 10)}`. The JPEG copy is lossy
(about quality 75): its pixels, and so its training variance, differ slightly from the original PNGs.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import DataError
from ae_jax.data import images, sources

# tfds' cifar10 label order; the archive's folder names.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SHAPE = (32, 32, 3)


def read_archive(archive: str | os.PathLike) -> dict[str, list[tuple[str, int, bytes]]]:
  """The JPEG files of a tar(.gz) archive: {split: [(member path, label, jpeg bytes)]}.

  Sorted by (file name, label), so the classes take turns (airplane/0000, automobile/0000, ...): the first
  records of a split, shown in reconstruction grids, cover every class.

  A member counts when its path ends in `<split>/<class name>/<file>.jpg` (any leading folders). Raises
  DataError for an unknown class folder or a split without images.
  """
  out: dict[str, list[tuple[str, int, bytes]]] = {split: [] for split in SPLITS}
  with tarfile.open(archive) as tar:
    for member in tar:
      parts = member.name.split("/")
      if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg")):
        continue
      split, label_name = parts[-3], parts[-2]
      if split not in out:
        continue
      if label_name not in CLASS_NAMES:
        raise DataError(
          f"{archive}: unknown class folder '{label_name}' in {member.name}; expected {CLASS_NAMES}"
        )
      out[split].append((member.name, CLASS_NAMES.index(label_name), tar.extractfile(member).read()))
  for split, items in out.items():
    if not items:
      raise DataError(f"{archive}: no {split}/<class>/*.jpg images found")
    items.sort(key=lambda item: (item[0].rsplit("/", 1)[-1], item[1], item[0]))
  return out


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> uint8 [32, 32, 3] RGB (Pillow); raises DataError for another size."""
  from PIL import Image

  with Image.open(io.BytesIO(data)) as im:
    image = np.asarray(im.convert("RGB"), np.uint8)
  if image.shape != SHAPE:
    raise DataError(f"expected a {SHAPE} image, got {image.shape}")
  return image


ARCHIVE = Path("cifar10-jpeg") / "cifar10-jpeg.tar.gz"  # under the data root


def load_split(split: str, data: ml_collections.ConfigDict) -> Sequence[dict[str, Any]]:
  """A random-access CIFAR-10 split: tfds' `cifar10` if prepared in config.data.data_dir (or downloaded
  with config.data.download), else the local `cifar10_jpeg` dataset, prepared once from the JPEG archive
  (config.data.archive, relative to the working directory or else the data root; by default
  <data root>/cifar10-jpeg/cifar10-jpeg.tar.gz). Records: {'image': uint8 [32, 32, 3], 'label': int64}."""
  # A prepared dataset no longer needs its archive, so a missing one is reported only if it is needed.
  candidates = (
    sources.path_candidates(data.archive, data) if data.archive else [sources.data_root(data) / ARCHIVE]
  )
  archive = next((c for c in candidates if c.exists()), candidates[-1])
  return sources.tfds_or_local(
    "cifar10",
    split,
    data,
    lambda: sources.builders().Cifar10Jpeg(archive=archive, data_dir=data.data_dir),
    archive,
    "set config.data.archive to a tar(.gz) of {train,test}/<class>/*.jpg, or install "
    "ae-jax[tfds-download] (TensorFlow) and set config.data.download=True to fetch tfds' cifar10",
  )


images.register_fixed_size(
  "cifar10",
  load_split,
  SHAPE,
  class_names=CLASS_NAMES,
  options={"archive": ml_collections.config_dict.placeholder(str)},  # None: <data root>/cifar10-jpeg/...
  description="CIFAR-10 (tfds cifar10, or a local archive of JPEGs in {train,test}/<class>/)",
)
