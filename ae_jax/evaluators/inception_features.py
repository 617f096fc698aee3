"""The FID Inception network's outputs over many images: batched, split over devices (pmap), with progress
lines and a throughput count; and the Inception-space quality of generated images (`score_samples`), which
the `fid` and `inception_score` evaluators and `experiments.sample --quality` report.

Images are mapped to [0, 1] by the dataset's `to_unit` and clipped there (`unit_images`, on the host), then
given to the network under `inception.PROTOCOL`. `score_samples` returns, for N samples against N images
of a split (N: the fewest of the samples, the split's images and the training images):
  fid: `sample_metrics.frechet_distance` of the samples' and the split's pool-feature statistics (float64);
  fid_floor: the same between N training images and the split (what a perfect generator scores at N);
  inception_score, inception_score_std: `sample_metrics.inception_score` of the samples' logits (without
    the fc bias, as torch-fidelity), 10 splits;
  precision, recall: `sample_metrics.precision_recall` (k = 3) on the 2,048-d pool features;
  num_images, images_per_second (images through the Inception forward; the first batch, which compiles,
    left out when there are others), reference_cached (1.0 when the split's features came from the cache).
The real images' features are cached per dataset, split and N with a fingerprint of the images and the
protocol (`ae_jax.metrics.inception_reference`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.metrics import inception, inception_reference
from ae_jax.metrics.sample_metrics import (
  feature_statistics,
  frechet_distance,
  inception_score,
  precision_recall,
)
from ae_jax.training.outputs import Progress


def unit_images(images: np.ndarray, to_unit: Callable, chunk: int = 1024) -> np.ndarray:
  """Images [N, H, W, C] in model units -> float32 in [0, 1] (`to_unit`, then clipped), on the host."""
  out = np.empty(images.shape, np.float32)
  for start in range(0, len(images), chunk):
    x = np.asarray(images[start : start + chunk], np.float32)
    out[start : start + chunk] = np.clip(np.asarray(to_unit(x), np.float32), 0.0, 1.0)
  return out


def variables_digest(variables: Any) -> str:
  """sha256 (hex) of the network's variables (names, shapes and float32 bytes): which weights computed a
  set of features (pytorch-fid's file, or random weights in tests)."""
  digest = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0], key=lambda kv: str(kv[0])):
    value = np.ascontiguousarray(np.asarray(leaf, np.float32))
    digest.update(f"{jax.tree_util.keystr(path)}{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class Throughput:
  """Seconds spent in the forward passes and the images they saw; the first call (which compiles) counts
  only when it is the only one."""

  def __init__(self) -> None:
    self.first: tuple[float, int] | None = None
    self.seconds, self.images = 0.0, 0

  def add(self, seconds: float, images: int) -> None:
    if self.first is None:
      self.first = (seconds, images)
    else:
      self.seconds, self.images = self.seconds + seconds, self.images + images

  @property
  def per_second(self) -> float:
    seconds, images = (self.seconds, self.images) if self.images else (self.first or (0.0, 0))
    return images / seconds if seconds > 0 else float("nan")


@functools.lru_cache(maxsize=16)
def _pmapped_outputs(devices: tuple) -> Callable:
  """(replicated variables, unit images [D, b, H, W, C]) -> (pool [D, b, 2048], logits_unbiased [D, b,
  1008])."""

  def fn(variables, x):
    out = inception.InceptionV3().apply(variables, x)
    return out["pool"], out["logits_unbiased"]

  return jax.pmap(fn, axis_name=parallel.AXIS, devices=devices)


def network_outputs(
  unit: np.ndarray,
  rvariables: Any,
  *,
  batch_size: int,
  label: str,
  throughput: Throughput | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Pool features [N, 2048] and bias-free logits [N, 1008] (float32) of images [N, H, W, C] in [0, 1],
  `batch_size` at a time over the devices `rvariables` (replicated) live on; the last batch padded by
  repetition."""
  inception.check_images((1, *unit.shape[1:]))
  devices = parallel.devices_of(rvariables)
  per = max(1, -(-batch_size // len(devices)))
  fn = _pmapped_outputs(devices)
  pools, logits, progress = [], [], Progress(label, len(unit))
  for start in range(0, len(unit), per * len(devices)):
    chunk = unit[start : start + per * len(devices)]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], per * len(devices) - len(chunk), axis=0)])
    begin = time.perf_counter()
    pool, logit = jax.device_get(
      fn(rvariables, parallel.shard(padded.reshape(len(devices), per, *chunk.shape[1:]), devices))
    )
    if throughput is not None:
      throughput.add(time.perf_counter() - begin, len(padded))
    pools.append(np.asarray(pool).reshape(-1, pool.shape[-1])[: len(chunk)])
    logits.append(np.asarray(logit).reshape(-1, logit.shape[-1])[: len(chunk)])
    progress.update(start + len(chunk))
  progress.close()
  return np.concatenate(pools), np.concatenate(logits)


def score_samples(
  samples: np.ndarray,
  dataset: Any,
  dataset_name: str,
  rvariables: Any,
  weights_digest: str,
  *,
  split: str = "test",
  floor: bool = True,
  k: int = 3,
  splits: int = 10,
  batch_size: int = 64,
  reference_cache: str | None = None,
) -> dict[str, Any]:
  """Inception-space quality (module docstring) of `samples` [N, H, W, C] in the model units of the opened
  `dataset` (`dataset_name`: its config's name, for the cache's file names) against its `split` (and, with
  `floor`, its training split), through the network variables `rvariables` (replicated over the devices
  to use) whose `variables_digest` is `weights_digest`."""
  reference_split = dataset.split(split)
  sizes = [len(samples), len(reference_split)] + ([len(dataset.split("train"))] if floor else [])
  n = min(sizes)
  if n < max(2, k + 1, splits):
    raise ConfigError(
      f"Inception quality needs at least {max(2, k + 1, splits)} samples and images on each side (k={k} "
      f"neighbours, {splits} Inception Score splits), got {n}"
    )
  from ae_jax.data.dataset import stack_examples

  throughput = Throughput()
  common = {"batch_size": batch_size, "throughput": throughput}
  to_unit = dataset.info.to_unit
  pool, logits = network_outputs(
    unit_images(samples[:n], to_unit), rvariables, label="Inception on samples", **common
  )

  def reference(name: str) -> inception_reference.Reference:
    images = unit_images(stack_examples(dataset.split(name), dataset.info, range(n))["x"], to_unit)
    return inception_reference.reference(
      dataset_name,
      name,
      images,
      inception_reference.protocol_of(weights_digest, n),
      lambda x: network_outputs(x, rvariables, label=f"Inception on {name}", **common)[0],
      reference_cache,
    )

  real = reference(split)
  sample_mean, sample_cov = feature_statistics(pool)
  result: dict[str, Any] = {"fid": frechet_distance(sample_mean, sample_cov, real.mean, real.cov)}
  if floor:
    train = reference("train")
    result["fid_floor"] = frechet_distance(train.mean, train.cov, real.mean, real.cov)
  result.update(inception_score(logits, splits=splits))
  result.update(precision_recall(real.features, pool, k=k))
  result.update(
    num_images=float(n),
    images_per_second=throughput.per_second,
    reference_cached=float(real.cached),
    protocol=inception.PROTOCOL,
  )
  return result


def describe(result: dict[str, Any]) -> str:
  """One line of a `score_samples` result, FID named as such (the Inception space)."""
  floor = f" (train-vs-split floor {result['fid_floor']:.4g})" if "fid_floor" in result else ""
  return (
    f"FID {result['fid']:.4g}{floor}, Inception Score {result['inception_score']:.3f} +- "
    f"{result['inception_score_std']:.3f}, precision {result['precision']:.3f}, recall {result['recall']:.3f}"
  )


MIN_IMAGES = 10  # the Inception Score's 10 splits


def weights_for_quality(path: str | None, num: int) -> tuple[Any, str | None]:
  """The Inception variables for a quality report of `num` samples, and a note when there are none: with
  `path` (or $AE_JAX_INCEPTION) given, the weights must load (ConfigError otherwise: the caller asked for
  them); without, they are looked for in the caches and downloaded when online, and when that fails the
  report has the feature network's space only, with the note saying where to put the file. Fewer than
  MIN_IMAGES samples are not measured in Inception space (a note)."""
  from ae_jax.metrics import inception_weights

  if path is not None or os.environ.get(inception_weights.ENV_VAR):
    variables = inception_weights.load_variables(path)
  else:
    try:
      variables = inception_weights.load_variables(None)
    except ConfigError as e:
      return None, f"Inception space not measured: {e}"
  if num < MIN_IMAGES:
    return None, f"Inception space not measured: it needs at least {MIN_IMAGES} samples, got {num}"
  return variables, None


def score_drawn(drawn: Any, variables: Any, *, split: str = "test", batch_size: int = 64) -> dict[str, Any]:
  """`score_samples` of a `samplers.Drawn` against its source run's dataset, on this process's devices."""
  from ae_jax import data

  data_config = drawn.source.config.data
  devices = tuple(jax.local_devices())
  return score_samples(
    drawn.images,
    data.get_dataset(data_config),
    data_config.name,
    parallel.replicate(variables, devices),
    variables_digest(variables),
    split=split,
    batch_size=batch_size,
  )


def report_lines(inception_space: dict[str, Any] | None, feature_space: dict[str, Any]) -> list[str]:
  """Both spaces side by side, each distance named for its space (FID only for Inception's): a header and
  one row per space (`score_samples` and `samplers.score` results; Inception's row absent when None)."""
  cells = "{:<16}  {:<34}  {:>10}  {:>10}  {:>9}  {:>6}  {}"
  rows = [cells.format("space", "distance", "value", "floor", "precision", "recall", "Inception Score")]
  if inception_space is not None:
    q = inception_space
    score = f"{q['inception_score']:.3f} +- {q['inception_score_std']:.3f}"
    floor = f"{q['fid_floor']:.4g}" if "fid_floor" in q else "-"
    rows.append(
      cells.format(
        "Inception", "FID", f"{q['fid']:.4g}", floor, f"{q['precision']:.3f}", f"{q['recall']:.3f}", score
      )
    )
  f = feature_space
  rows.append(
    cells.format(
      "feature network",
      "Fréchet distance (feature network)",
      f"{f['frechet_feature_distance']:.4g}",
      f"{f['floor_frechet_feature_distance']:.4g}",
      f"{f['precision']:.3f}",
      f"{f['recall']:.3f}",
      "-",
    )
  )
  return rows
