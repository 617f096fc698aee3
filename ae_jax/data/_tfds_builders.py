"""The tfds builders of the local datasets (prepared once as ArrayRecord, read without TensorFlow).

Kept apart from the dataset modules so that `ae_jax.data` imports without tensorflow_datasets: a dataset
module imports this one only when it prepares or opens its local copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from ae_jax.core.errors import DataError, DataNotFoundError
from ae_jax.data import cifar10, fashion_mnist, image_folder, images, spoken_digit


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """The DatasetInfo of a dataset prepared from local files: nothing to look up in tfds' bucket.

  tfds looks up the info of a builder that is not prepared yet in its GCS bucket, and that lookup creates
  a temporary folder (`tempfile.mkdtemp("tfds")`) that it never removes, one per builder.
  """

  def initialize_from_bucket(self) -> None:
    """Does nothing: a local dataset has no pre-computed info in the bucket."""


class Cifar10Jpeg(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10 from an archive of JPEG files, decoded with Pillow and stored as array_record.

  Not in tfds' global registry (use the class, not `tfds.builder(name)`). Features: image uint8 Tensor
  [32, 32, 3] (tfds' Image feature would need TensorFlow to encode), label ClassLabel (10 classes, from the
  folder names). Splits `train` and `test`, records in `cifar10.read_archive`'s
  order (no shuffling on write).
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
    return LocalDatasetInfo(
      builder=self,
      description="CIFAR-10 (Krizhevsky 2009) decoded from a JPEG re-encoding (lossy).",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=cifar10.SHAPE, dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=list(cifar10.CLASS_NAMES)),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # everything is local
    if not self._archive or not os.path.isfile(self._archive):
      raise DataNotFoundError(f"CIFAR-10 JPEG archive not found: {self._archive!r}")
    files = cifar10.read_archive(self._archive)
    return {split: self._generate_examples(files[split]) for split in cifar10.SPLITS}

  def _generate_examples(self, items: list[tuple[str, int, bytes]]) -> Iterator[tuple[str, dict]]:
    for path, label, data in items:
      yield path, {"image": cifar10.decode_jpeg(data), "label": label}


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Fashion-MNIST built from the four original idx files, stored as array_record.

  Not added to tfds' global registry (`skip_registration=True`), so the module
  can be re-imported/reloaded and same-named classes defined without tfds'
  "already registered" error; use the class directly, not `tfds.builder(name)`.

  Features: image uint8 [28, 28, 1], label ClassLabel (10 classes). Splits
  `train` and `test` with sizes taken from the files (60000 / 10000).
  Records keep the idx files' order (shuffling on write is disabled).
  """

  name = "fashion_mnist_idx"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release, from the original idx files."}

  def __init__(self, *, idx_dir: str | os.PathLike | None = None, **kwargs: Any):
    """`idx_dir` is only read by `download_and_prepare`; other kwargs go to tfds."""
    self._idx_dir = None if idx_dir is None else os.fspath(idx_dir)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    # tfds re-creates builders on unpickling via `__init__(**_original_state)`.
    self._original_state = dict(self._original_state, idx_dir=self._idx_dir)

  def _info(self) -> tfds.core.DatasetInfo:
    return LocalDatasetInfo(
      builder=self,
      description="Fashion-MNIST (Xiao et al., 2017) read from the original idx files.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=list(fashion_mnist.CLASS_NAMES)),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://github.com/zalandoresearch/fashion-mnist",
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # Everything is local.
    if not fashion_mnist.has_idx_files(self._idx_dir):
      raise DataNotFoundError(f"Fashion-MNIST idx files not found in idx_dir={self._idx_dir!r}")
    files = fashion_mnist.IDX_FILES
    return {s: self._generate_examples(*fashion_mnist.read_idx_split(self._idx_dir, s)) for s in files}

  def _generate_examples(self, pixels: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict]]:
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
      yield i, {"image": image, "label": int(label)}


class SpokenDigitWav(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """FSDD read from the release archive's wavs, stored as array_record without TensorFlow.

  Not in tfds' registry (`skip_registration=True`); use the class. Features: audio int16 [None] (raw
  samples), label ClassLabel (10 digits), speaker and filename text, index int32 (the recording's number).
  Splits `train` (index >= 5) and `test` (index 0-4), records sorted by file name.
  """

  name = "spoken_digit_wav"
  VERSION = tfds.core.Version("1.0.9")
  RELEASE_NOTES = {"1.0.9": "FSDD v1.0.9 wavs with the official split (recordings 0-4 are the test set)."}

  def __init__(self, *, archive: str | os.PathLike | None = None, **kwargs: Any):
    """`archive` (the FSDD tar.gz) is only read by `download_and_prepare`; other kwargs go to tfds."""
    self._archive = None if archive is None else os.fspath(archive)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._original_state = dict(self._original_state, archive=self._archive)  # for unpickling

  def _info(self) -> tfds.core.DatasetInfo:
    return LocalDatasetInfo(
      builder=self,
      description="Free Spoken Digit Dataset: 8 kHz recordings of spoken digits, raw int16 samples.",
      features=tfds.features.FeaturesDict(
        {
          "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
          "label": tfds.features.ClassLabel(names=list(spoken_digit.CLASS_NAMES)),
          "speaker": tfds.features.Text(),
          "index": tfds.features.Scalar(dtype=np.int32),
          "filename": tfds.features.Text(),
        }
      ),
      supervised_keys=("audio", "label"),
      homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # everything is local
    if not self._archive or not os.path.isfile(self._archive):
      raise DataNotFoundError(f"FSDD archive not found: {self._archive!r}")
    splits: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for filename, audio in spoken_digit.read_archive(self._archive):
      splits[spoken_digit.split_of(spoken_digit.parse_name(filename)[2])].append((filename, audio))
    return {split: self._generate_examples(items) for split, items in splits.items()}

  def _generate_examples(self, items: list[tuple[str, np.ndarray]]) -> Iterator[tuple[str, dict]]:
    for filename, audio in items:
      digit, speaker, index = spoken_digit.parse_name(filename)
      record = {"audio": audio, "label": digit, "speaker": speaker, "index": index, "filename": filename}
      yield filename, record


class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes an `image_folder.Listing` as ArrayRecord: image uint8 Tensor [S, S, C], label int64, path Text."""

  name = "image_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Images decoded with Pillow, converted, cropped and resized once."}

  def __init__(
    self, *, listing: image_folder.Listing, geometry: images.Geometry, shape: tuple[int, ...], **kwargs: Any
  ):
    self._listing, self._geometry, self._shape = listing, geometry, tuple(shape)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._original_state = dict(self._original_state, listing=listing, geometry=geometry, shape=self._shape)

  def _info(self) -> tfds.core.DatasetInfo:
    return LocalDatasetInfo(
      builder=self,
      description=f"The images under {self._listing.root}, {self._geometry}.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=self._shape, dtype=np.uint8),
          "label": tfds.features.Scalar(dtype=np.int64),
          "path": tfds.features.Text(),
        }
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # everything is local
    splits = sorted({split for _, split, _ in self._listing.files})
    return {split: self._generate_examples(split) for split in splits}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    for rel, file_split, label in self._listing.files:
      if file_split != split:
        continue
      path = self._listing.root / rel
      image = self._geometry.apply(image_folder.read_image(path), 0, train=False)
      if image.shape != self._shape:
        raise DataError(
          f"{path}: {image.shape[1]}x{image.shape[0]} pixels, but the first image has "
          f"{self._shape[1]}x{self._shape[0]}; set config.data.image_size to resize them all"
        )
      yield rel, {"image": image, "label": label, "path": rel}
