"""A folder of images as a dataset (`config.data.name = "image_folder"`, `config.data.path = DIR`).

Every PNG, JPEG, BMP, GIF or WebP file under DIR counts. Splits: the subfolders `train/`, `test/` (and
`validation/` or `val/`) when DIR has them; otherwise each file's split is a stable hash of its path
relative to DIR (a `test_fraction` of them are test), so adding files never moves old ones between
splits. Class labels come from the folder names below the split level when every image sits in one.

On first use the images are decoded with Pillow, converted to `channels` (grayscale, RGB; alpha
composited over black), center-cropped (`crop="center"`, optional `crop_size`) or not (`crop="none"`),
resized to `image_size`, and written once as an ArrayRecord tfds dataset in the tfds data dir, under a
name derived from the folder's listing and these options; later runs read that at full speed (and
re-prepare only when files or options change). A file that cannot be decoded stops the preparation with
its path, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import ml_collections
import numpy as np

from ae_jax.core.errors import ConfigError, DataError, DataNotFoundError
from ae_jax.data import dataset, images, sources

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
MAX_CACHE_BYTES = 4 << 30  # cache_in_memory reads a prepared folder into RAM only up to this size

OPTIONS = {
  **images.IMAGE_OPTIONS,
  **images.GEOMETRY_OPTIONS,
  "path": "",  # the folder of images
  "test_fraction": 0.1,  # without train/ and test/ subfolders: the share of files (by path hash) in test
}


@dataclasses.dataclass(frozen=True)
class Listing:
  """The image files under a folder: (relative path, split, label) each, and the class names."""

  root: Path
  files: tuple[tuple[str, str, int], ...]
  class_names: tuple[str, ...] | None

  def count(self, split: str) -> int:
    return sum(s == split for _, s, _ in self.files)


def _hash_fraction(relpath: str) -> float:
  return int.from_bytes(hashlib.sha1(relpath.encode()).digest()[:8], "big") / 2.0**64


def scan(root: Path, test_fraction: float) -> Listing:
  """Lists the images under `root` with their splits and labels (see the module docstring)."""
  if not root.is_dir():
    raise DataNotFoundError(f"config.data.path {str(root)!r} is not a folder of images")
  found = sorted(
    str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
  )
  if not found:
    raise DataNotFoundError(f"no images ({', '.join(SUFFIXES)}) under {root}")
  by_folder = [p.split(os.sep) for p in found]
  explicit = any(parts[0] in SPLIT_FOLDERS and len(parts) > 1 for parts in by_folder)
  rows = []
  for rel, parts in zip(found, by_folder, strict=True):
    if explicit:
      if parts[0] not in SPLIT_FOLDERS or len(parts) < 2:
        continue  # files beside the split folders belong to no split
      split, below = SPLIT_FOLDERS[parts[0]], parts[1:]
    else:
      split, below = ("test" if _hash_fraction(rel) < test_fraction else "train"), parts
    rows.append((rel, split, below[0] if len(below) > 1 else None))
  classes = None
  if all(c is not None for _, _, c in rows):
    classes = tuple(sorted({c for _, _, c in rows}))
  files = tuple((rel, split, classes.index(c) if classes else -1) for rel, split, c in rows)
  listing = Listing(root, files, classes)
  for split in ("train", "test"):
    if not listing.count(split):
      hint = "add images to it" if explicit else "raise config.data.test_fraction or add images"
      raise DataError(f"{root}: the {split} split has no image; {hint}")
  return listing


def read_image(path: Path) -> np.ndarray:
  """uint8 [H, W, C] of an image file (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA); DataError if corrupt."""
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return (
          np.round(np.asarray(im, np.float64) / (257.0 if im.mode.startswith("I;16") else 1.0))
          .clip(0, 255)
          .astype(np.uint8)[..., None]
        )
      mode = "LA" if im.mode in ("LA", "La") else "L" if im.mode in ("1", "L") else None
      if mode is None:
        has_alpha = im.mode in ("RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info)
        mode = "RGBA" if has_alpha else "RGB"
      array = np.asarray(im.convert(mode), np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DataError(
      f"{path}: cannot decode this image ({type(e).__name__}: {e}); remove or replace it"
    ) from None
  return array if array.ndim == 3 else array[..., None]


def _channels(path: Path, requested: int) -> int:
  if requested:
    return requested
  return 1 if read_image(path).shape[-1] in (1, 2) else 3


def _fingerprint(listing: Listing, geometry: images.Geometry, test_fraction: float, channels: int) -> str:
  h = hashlib.sha1(f"{listing.root.resolve()}|{geometry}|{channels}|{test_fraction}|v1".encode())
  for rel, split, label in listing.files:
    st = (listing.root / rel).stat()
    h.update(f"{rel}|{split}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:12]


def _geometry(data: ml_collections.ConfigDict) -> images.Geometry:
  geometry = images.Geometry.from_config(data)
  if geometry.crop == "random":
    raise ConfigError(
      "image_folder stores images cropped once; config.data.crop must be 'center' or 'none' ('random' "
      "needs the full images at read time: use the tfds dataset for that)"
    )
  return geometry


def _first_image(listing: Listing) -> Path:
  return listing.root / listing.files[0][0]


def _example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  if not data.path:
    raise ConfigError("config.data.path is empty: set it to the folder of images")
  geometry = _geometry(data)
  listing = scan(sources.resolve_path(data.path, data, "config.data.path"), float(data.test_fraction))
  first = _first_image(listing)
  channels = _channels(first, geometry.channels)
  if geometry.image_size:
    return dataset.ExampleSpec((geometry.image_size, geometry.image_size, channels))
  h, w = read_image(first).shape[:2]
  return dataset.ExampleSpec((h, w, channels))


def _load(data: ml_collections.ConfigDict) -> dataset.Dataset:
  shape = _example(data).shape
  geometry = dataclasses.replace(_geometry(data), channels=shape[-1])
  listing = scan(sources.resolve_path(data.path, data, "config.data.path"), float(data.test_fraction))
  fingerprint = _fingerprint(listing, geometry, float(data.test_fraction), shape[-1])
  folder_dir = Path(sources.tfds_root(data.data_dir)) / "image_folder" / f"{listing.root.name}-{fingerprint}"
  builder = sources.builders().ImageFolderBuilder(
    listing=listing, geometry=geometry, shape=shape, data_dir=str(folder_dir)
  )
  if not sources.is_prepared(builder):
    sources.prepare(builder, listing.root)
  roles = [r for r in dataset.ROLES if listing.count(r)]
  splits = {role: builder.as_data_source(split=role) for role in roles}
  if data.cache_in_memory and sum(len(s) for s in splits.values()) * int(np.prod(shape)) > MAX_CACHE_BYTES:
    data = ml_collections.ConfigDict({**data.to_dict(), "cache_in_memory": False})
  return images.image_dataset("image_folder", data, splits, shape, listing.class_names)


def _roles(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  listing = scan(sources.resolve_path(data.path, data, "config.data.path"), float(data.test_fraction))
  return tuple(r for r in dataset.ROLES if listing.count(r))


dataset.register(
  dataset.DatasetSpec(
    name="image_folder",
    load=_load,
    options=OPTIONS,
    example=_example,
    splits=_roles,
    drawable=True,
    bits_per_value=8,
    provides_variance=True,
    description="every image under config.data.path, converted once to ArrayRecord at image_size",
  )
)
