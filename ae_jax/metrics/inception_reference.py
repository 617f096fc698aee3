"""Cached Inception reference features of real images (a dataset's split), with their FID statistics, keyed
by a fingerprint of the images and of the protocol, so FIDs against one split reuse one computation.

    ref = reference("cifar10", "test", unit_images, protocol_of(weights_sha256), compute=pool_of)
    ref.mean, ref.cov        # [2048] and [2048, 2048] float64: FID's statistics (`feature_statistics`)
    ref.features             # [N, 2048] float32: for precision/recall in Inception space
    ref.cached               # True when read from the cache

The fingerprint is the sha256 of the protocol record (`protocol_of`: how images reach the network,
`inception.PROTOCOL`; the sha256 of the network weights; the features taken; the number of images N) and
of the images themselves as the network receives them (float32 [N, H, W, C] in [0, 1], shape and bytes).
The cache file is `<cache>/<dataset>-<split>-n<N>-<fingerprint[:16]>.npz` (`cache`: the `cache_dir`
argument, default `$XDG_CACHE_HOME/ae_jax/fid_reference`, else `~/.cache/ae_jax/fid_reference`) and
holds the whole fingerprint and the protocol record beside the features and statistics. A file is used
only when its stored fingerprint equals the one computed now from the images and protocol given: a
changed image (one pixel), N, resize, or weights file gives another fingerprint, and the features are
computed again and written (whole, through a temporary file). A file that cannot be read is computed
again; a cache that cannot be written costs a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ae_jax.core import workdir
from ae_jax.metrics import inception
from ae_jax.metrics.sample_metrics import feature_statistics

log = logging.getLogger(__name__)

FEATURES = "pool: the 2,048-d spatial mean of Mixed_7c"


@dataclasses.dataclass(frozen=True)
class Reference:
  """Reference features [N, 2048] float32, their mean [2048] and unbiased covariance [2048, 2048]
  (float64), the fingerprint they were computed under, and whether they came from the cache."""

  features: np.ndarray
  mean: np.ndarray
  cov: np.ndarray
  fingerprint: str
  cached: bool


def default_cache_dir() -> Path:
  """$XDG_CACHE_HOME/ae_jax/fid_reference, or ~/.cache/ae_jax/fid_reference."""
  return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ae_jax" / "fid_reference"


def protocol_of(weights_sha256: str, num_images: int) -> dict[str, Any]:
  """The protocol record a fingerprint covers: resize and scaling (`inception.PROTOCOL`), the weights'
  sha256, the features taken and N."""
  return {
    "protocol": inception.PROTOCOL,
    "weights_sha256": str(weights_sha256),
    "features": FEATURES,
    "num_images": int(num_images),
  }


def fingerprint(unit_images: np.ndarray, protocol: dict[str, Any], chunk: int = 1024) -> str:
  """sha256 (hex) of `protocol` (JSON, sorted keys) and of `unit_images` [N, H, W, C] as float32 (shape,
  then bytes, `chunk` images at a time)."""
  digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode())
  digest.update(repr(tuple(unit_images.shape)).encode())
  for start in range(0, len(unit_images), chunk):
    digest.update(np.ascontiguousarray(unit_images[start : start + chunk], np.float32).tobytes())
  return digest.hexdigest()


def cache_path(cache_dir: str | Path | None, dataset: str, split: str, num: int, key: str) -> Path:
  """<cache_dir>/<dataset>-<split>-n<num>-<key[:16]>.npz (cache_dir None: `default_cache_dir()`)."""
  folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  return folder / f"{dataset}-{split}-n{int(num)}-{key[:16]}.npz"


def _read(path: Path, key: str) -> Reference | None:
  """The cached reference at `path` when its stored fingerprint is `key`; None when absent, unreadable
  or of another fingerprint."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      if str(f["fingerprint"]) != key:
        log.info("FID reference %s: another fingerprint than these images and protocol; recomputed", path)
        return None
      return Reference(f["features"], f["mean"], f["cov"], key, cached=True)
  except (OSError, ValueError, KeyError) as e:
    log.warning("FID reference %s cannot be read (%s); recomputed", path, e)
    return None


def reference(
  dataset: str,
  split: str,
  unit_images: np.ndarray,
  protocol: dict[str, Any],
  compute: Callable[[np.ndarray], np.ndarray],
  cache_dir: str | Path | None = None,
) -> Reference:
  """The Inception reference of `unit_images` [N, H, W, C] float32 in [0, 1] (the images of `split` of
  `dataset` as the network receives them): read from the cache when a file there has their fingerprint
  (module docstring), else `compute(unit_images)` -> pool features [N, 2048], whose statistics are
  written to the cache."""
  key = fingerprint(unit_images, protocol)
  path = cache_path(cache_dir, dataset, split, len(unit_images), key)
  cached = _read(path, key)
  if cached is not None:
    log.info("FID reference of %s %s (%d images) read from %s", dataset, split, len(unit_images), path)
    return cached
  features = np.asarray(compute(unit_images), np.float32)
  mean, cov = feature_statistics(features)

  def write(f) -> None:
    np.savez(
      f,
      features=features,
      mean=mean,
      cov=cov,
      fingerprint=np.str_(key),
      protocol=np.str_(json.dumps(protocol, sort_keys=True)),
    )

  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir.write_whole(path, write)
  except OSError as e:
    log.warning("FID reference: could not cache %s (%s)", path, e)
  return Reference(features, mean, cov, key, cached=False)
