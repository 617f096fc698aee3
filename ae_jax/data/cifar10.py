"""CIFAR-10 as a random-access data source, offline and without TensorFlow.

Sources, in order of preference (see `load_cifar10`):
  (a) tfds' own `cifar10`, if already prepared (array_record) in `data_dir`;
  (b) the local `cifar10_jpeg` builder below, prepared once from an archive of JPEG files laid out as
      `*/{train,test}/<class name>/*.jpg` (the offline copy `../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz`
      relative to the repository root; `config.data.archive` or env `CIFAR10_JPEG` override it).

Records are dicts `{'image': uint8 [32, 32, 3], 'label': int64 scalar in [0, 10)}`. The JPEG copy is lossy
(about quality 75): its pixels, and so its training variance, differ slightly from the original PNGs.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

log = logging.getLogger(__name__)

# tfds' cifar10 label order; the archive's folder names.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SHAPE = (32, 32, 3)
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARCHIVE = str(_REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz")


def default_archive() -> str:
  """$CIFAR10_JPEG if set, else `../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz` from the repository root."""
  return os.environ.get("CIFAR10_JPEG") or DEFAULT_ARCHIVE


def read_archive(archive: str | os.PathLike) -> dict[str, list[tuple[str, int, bytes]]]:
  """The JPEG files of a tar(.gz) archive: {split: [(member path, label, jpeg bytes)]}.

  Sorted by (file name, label), so the classes take turns (airplane/0000, automobile/0000, ...): the first
  records of a split, shown in reconstruction grids, cover every class.

  A member counts when its path ends in `<split>/<class name>/<file>.jpg` (any leading folders). Raises
  ValueError for an unknown class folder or a split without images.
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
        raise ValueError(
          f"{archive}: unknown class folder '{label_name}' in {member.name}; expected {CLASS_NAMES}"
        )
      out[split].append((member.name, CLASS_NAMES.index(label_name), tar.extractfile(member).read()))
  for split, items in out.items():
    if not items:
      raise ValueError(f"{archive}: no {split}/<class>/*.jpg images found")
    items.sort(key=lambda item: (item[0].rsplit("/", 1)[-1], item[1], item[0]))
  return out


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> uint8 [32, 32, 3] RGB (Pillow); raises ValueError for another size."""
  from PIL import Image

  with Image.open(io.BytesIO(data)) as im:
    image = np.asarray(im.convert("RGB"), np.uint8)
  if image.shape != SHAPE:
    raise ValueError(f"expected a {SHAPE} image, got {image.shape}")
  return image


class Cifar10Jpeg(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10 from an archive of JPEG files, decoded with Pillow and stored as array_record.

  Not in tfds' global registry (use the class, not `tfds.builder(name)`). Features: image uint8 Tensor
  [32, 32, 3] (tfds' Image feature would need TensorFlow to encode), label ClassLabel (10 classes, from the
  folder names). Splits `train` and `test`, records in `read_archive`'s order (no shuffling on write).
  """

  name = "cifar10_jpeg"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release, from JPEG files in {train,test}/<class>/."}

  def __init__(self, *, archive: str | os.PathLike | None = None, **kwargs: Any):
    """`archive` is only read by `download_and_prepare`; other kwargs go to tfds."""
    self._archive = None if archive is None else os.fspath(archive)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._original_state = dict(self._original_state, archive=self._archive)  # tfds re-creates on unpickling

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="CIFAR-10 (Krizhevsky 2009) decoded from a JPEG re-encoding (lossy).",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=SHAPE, dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # everything is local
    if not self._archive or not os.path.isfile(self._archive):
      raise FileNotFoundError(f"CIFAR-10 JPEG archive not found: {self._archive!r}")
    files = read_archive(self._archive)
    return {split: self._generate_examples(files[split]) for split in SPLITS}

  def _generate_examples(self, items: list[tuple[str, int, bytes]]) -> Iterator[tuple[str, dict]]:
    for path, label, data in items:
      yield path, {"image": decode_jpeg(data), "label": label}


def _tfds_cifar10(split: str, data_dir: str | None) -> Sequence | None:
  """Source (a): tfds' own `cifar10` if prepared as array_record in data_dir; else None."""
  root = data_dir or os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  if not os.path.isdir(os.path.join(root, "cifar10")):
    return None
  builder = tfds.builder("cifar10", data_dir=data_dir)
  if not builder.is_prepared():
    return None
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError:  # prepared, but as tfrecord
    log.warning("tfds cifar10 in %s is not array_record; skipping it.", builder.data_dir)
    return None
  log.info("CIFAR-10 %s: tfds cifar10 from %s (%d records)", split, builder.data_dir, len(source))
  return source


def load_cifar10(
  split: str, *, data_dir: str | None, archive: str | None = None, download: bool = False
) -> Sequence[dict[str, Any]]:
  """A random-access CIFAR-10 split: tfds' `cifar10` if prepared, else the local `cifar10_jpeg` dataset,
  prepared from `archive` on first use (then read from `data_dir`; the archive is not needed again).

  Args:
    split: tfds split spec ("train", "test", "train[:10%]", ...).
    data_dir: tfds data dir; None means $TFDS_DATA_DIR or ~/tensorflow_datasets.
    archive: the JPEG archive; None means `default_archive()`.
    download: let tfds download and prepare its own `cifar10` (needs TensorFlow).
  Returns:
    Sequence with `len()` and `[i]` -> {'image': uint8 [32, 32, 3], 'label': int64 scalar}.
  Raises:
    FileNotFoundError: nothing prepared and no archive (one line saying how to get one).
  """
  source = _tfds_cifar10(split, data_dir)
  if source is not None:
    return source
  if download:
    return tfds.data_source("cifar10", split=split, data_dir=data_dir, download=True)
  archive = archive or default_archive()
  builder = Cifar10Jpeg(archive=archive, data_dir=data_dir)
  if not builder.is_prepared():
    if not os.path.isfile(archive):
      raise FileNotFoundError(
        f"CIFAR-10 not found (nothing prepared in data_dir={data_dir!r}, no archive at {archive!r}): set "
        "config.data.archive or env CIFAR10_JPEG to a tar(.gz) of {train,test}/<class>/*.jpg, or install "
        "ae-jax[tfds-download] (TensorFlow) and set config.data.download=True to fetch tfds' cifar10"
      )
    log.info("Preparing cifar10_jpeg from %s into %s (decodes 60,000 JPEGs once)", archive, builder.data_dir)
    builder.download_and_prepare()
  source = builder.as_data_source(split=split)
  log.info("CIFAR-10 %s: cifar10_jpeg from %s (%d records)", split, builder.data_dir, len(source))
  return source
