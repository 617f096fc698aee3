"""Fashion-MNIST as a random-access data source, offline and without TensorFlow.

Sources, in order of preference (see `load_split`):
  (a) tfds' own `fashion_mnist`, if already prepared (array_record) in `data_dir`;
  (b) the local `fashion_mnist_idx` builder below, prepared once from the four
      original idx files (`config.data.idx_dir`, else Debian's `dataset-fashion-mnist` package in
      /usr/share/datasets/fashion-mnist, else `<data root>/fashion-mnist`).

Records are dicts `{'image': uint8 [28, 28, 1], 'label': int64 scalar in [0, 10)}`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core.errors import DataError, DataNotFoundError
from ae_jax.data import images, sources

SHAPE = (28, 28, 1)

CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)

# split -> (images file stem, labels file stem); each file may end in `.gz` or not.
IDX_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# idx dtype code -> big-endian numpy dtype (only 0x08 occurs in Fashion-MNIST).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an idx file (gzipped or plain, detected from its content).

  Header: two zero bytes, a dtype code (0x08 = uint8), the number of dims,
  then one big-endian uint32 per dim; then the data, C order.

  Returns:
    Array with the header's shape, in native byte order (uint8 for
    Fashion-MNIST: images [N, 28, 28], labels [N]).

  Raises:
    DataError: the file is not a well-formed idx file.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise DataError(f"{path}: corrupt gzip data ({e})") from None
  if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{path}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
  dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: truncated idx header ({len(raw)} bytes, need {header})")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    raise DataError(f"{path}: idx size mismatch (shape {shape} needs {expected} bytes, file has {len(raw)})")
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _find_idx_file(idx_dir: str | os.PathLike, stem: str) -> str | None:
  """Returns `idx_dir/stem.gz` or `idx_dir/stem`, whichever exists, else None."""
  for name in (stem + ".gz", stem):
    path = os.path.join(idx_dir, name)
    if os.path.isfile(path):
      return path
  return None


def has_idx_files(idx_dir: str | os.PathLike | None) -> bool:
  """Whether `idx_dir` holds all four Fashion-MNIST idx files."""
  return idx_dir is not None and all(
    _find_idx_file(idx_dir, stem) for stems in IDX_FILES.values() for stem in stems
  )


def read_idx_split(idx_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N, 28, 28, 1], labels uint8 [N]) of `split` from `idx_dir`."""
  paths = [_find_idx_file(idx_dir, stem) for stem in IDX_FILES[split]]
  if None in paths:
    raise DataNotFoundError(f"Missing Fashion-MNIST {split} idx files in {idx_dir}")
  pixels, labels = read_idx(paths[0]), read_idx(paths[1])
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
    raise DataError(f"{paths[0]}: expected uint8 images [N, 28, 28], got {pixels.dtype} {pixels.shape}")
  if (
    labels.dtype != np.uint8 or labels.shape != pixels.shape[:1] or labels.max(initial=0) >= len(CLASS_NAMES)
  ):
    raise DataError(
      f"{paths[1]}: expected {len(pixels)} uint8 labels in [0, 10), got {labels.dtype} {labels.shape}"
    )
  return pixels[..., None], labels


DEBIAN_IDX_DIR = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist


def idx_dir(data: ml_collections.ConfigDict) -> Path:
  """config.data.idx_dir, else Debian's folder when it has the files, else <data root>/fashion-mnist."""
  if data.idx_dir:
    return Path(data.idx_dir)
  if has_idx_files(DEBIAN_IDX_DIR):
    return Path(DEBIAN_IDX_DIR)
  return sources.data_root(data) / "fashion-mnist"


def load_split(split: str, data: ml_collections.ConfigDict) -> Sequence[dict[str, Any]]:
  """A random-access Fashion-MNIST split: tfds' `fashion_mnist` if prepared in config.data.data_dir (or
  downloaded with config.data.download), else the local `fashion_mnist_idx` dataset, prepared once from
  the idx files (`idx_dir`). Records: {'image': uint8 [28, 28, 1], 'label': int64}."""
  folder = idx_dir(data)
  return sources.tfds_or_local(
    "fashion_mnist",
    split,
    data,
    lambda: sources.builders().FashionMnistIdx(idx_dir=folder, data_dir=data.data_dir),
    folder,
    "run `apt-get install dataset-fashion-mnist` (puts the four idx files in "
    f"{DEBIAN_IDX_DIR}), or set config.data.idx_dir to a folder with train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz), or "
    "install ae-jax[tfds-download] and set config.data.download=True to fetch tfds' fashion_mnist",
    local_ready=has_idx_files(folder),
  )


images.register_fixed_size(
  "fashion_mnist",
  load_split,
  SHAPE,
  class_names=CLASS_NAMES,
  options={"idx_dir": ml_collections.config_dict.placeholder(str)},  # None: Debian's, else the data root's
  description="Zalando's Fashion-MNIST (60,000 + 10,000 28x28 grayscale images, 10 classes)",
)
