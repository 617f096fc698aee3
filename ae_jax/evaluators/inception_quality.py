"""The `fid` and `rfid` evaluators: Fréchet Inception Distance in the space of the FID Inception network
(`ae_jax.metrics.inception`, pytorch-fid's weights), the numbers papers print.

    config.evals.rfid = evaluators.section("rfid", split="test")            # the tokenizer number
    config.evals.fid = evaluators.section("fid", split="test", num=10000)   # samples against the split

rfid: the reconstructions of `split` (all of it, or its first `max_examples`) against the same images.
fid: `num` images the run generates (as the `sample_quality` evaluator draws them: a prior run's tokens
through its stage one, an autoencoder's or VAE's codes from `prior`) against as many images of `split`
(of the stage one's dataset for a prior run).

Images are mapped to [0, 1] by the dataset's `to_unit` and clipped there, then given to the network under
`inception.PROTOCOL` (pytorch-fid's: bilinear F.interpolate to 299x299, align_corners=False, float32, no
quantisation to uint8, 2x - 1; grayscale repeated to RGB). FID is `sample_metrics.frechet_distance` of the
means and unbiased covariances (float64) of the 2,048-d pool features, as pytorch-fid computes it.
Features are computed in batches of `batch_size` images split over the run's devices (pmap), with
progress lines; the throughput is logged and returned as `images_per_second` (fid: images through the
Inception forward; rfid: images through the model and the Inception forward, inputs and reconstructions
counted; the first batch, which compiles, is left out when there are others).

Weights: the `weights` option (a file or folder), else $AE_JAX_INCEPTION, else the caches
(`inception_weights.find_weights`), downloaded when `download` is true and the machine is online. When
they are absent the evaluator is refused when it is built, before any training or computation, with one
ConfigError naming $AE_JAX_INCEPTION and the cache path.

Metrics: `fid` or `rfid`, `num_images` (images on each side) and `images_per_second`. Single-process runs
only (the features are gathered on the host).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data import resolve
from ae_jax.data.pipeline import eval_batches
from ae_jax.evaluators import batches, samples
from ae_jax.metrics import inception, inception_weights
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance
from ae_jax.training.outputs import Progress

log = logging.getLogger(__name__)


def load_weights(path: str | None, allow_download: bool) -> Any:
  """InceptionV3's variables (`inception_weights.load_variables`); tests replace this function."""
  return inception_weights.load_variables(path, allow_download=allow_download)


def _unit(x: jax.Array, to_unit: Callable) -> jax.Array:
  return jnp.clip(to_unit(x.astype(jnp.float32)), 0.0, 1.0)


def _pool(variables: Any, images: jax.Array) -> jax.Array:
  return inception.InceptionV3().apply(variables, images)["pool"]


@functools.lru_cache(maxsize=16)
def _pmapped_pool(to_unit: Callable, devices: tuple) -> Callable:
  """(replicated variables, images [D, b, H, W, C] in model units) -> pool features [D, b, 2048]."""
  return jax.pmap(lambda v, x: _pool(v, _unit(x, to_unit)), axis_name=parallel.AXIS, devices=devices)


@functools.lru_cache(maxsize=16)
def _pmapped_recon_pool(model: Any, to_unit: Callable, devices: tuple) -> Callable:
  """(replicated state, replicated variables, batch) -> (pool of the inputs, pool of the reconstructions)."""

  def fn(state, variables, batch):
    recon = batches.model_outputs(model, state, batch)["recon"]
    both = jnp.concatenate([_unit(batch["x"], to_unit), _unit(recon, to_unit)])
    real, fake = jnp.split(_pool(variables, both), 2)
    return real, fake

  return jax.pmap(fn, axis_name=parallel.AXIS, devices=devices)


class _Throughput:
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


def pool_features(
  images: np.ndarray,
  rvariables: Any,
  to_unit: Callable,
  *,
  batch_size: int,
  label: str,
  throughput: _Throughput | None = None,
) -> np.ndarray:
  """Pool features [N, 2048] float32 of images [N, H, W, C] in model units, `batch_size` at a time over the
  devices `rvariables` (replicated) live on; the last batch padded by repetition."""
  devices = parallel.devices_of(rvariables)
  per = max(1, -(-batch_size // len(devices)))
  fn = _pmapped_pool(to_unit, devices)
  out, progress = [], Progress(label, len(images))
  for start in range(0, len(images), per * len(devices)):
    chunk = images[start : start + per * len(devices)]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], per * len(devices) - len(chunk), axis=0)])
    begin = time.perf_counter()
    pool = np.asarray(
      jax.device_get(
        fn(rvariables, parallel.shard(padded.reshape(len(devices), per, *chunk.shape[1:]), devices))
      )
    )
    if throughput is not None:
      throughput.add(time.perf_counter() - begin, len(padded))
    out.append(pool.reshape(-1, pool.shape[-1])[: len(chunk)])
    progress.update(start + len(chunk))
  progress.close()
  return np.concatenate(out)


def reconstruction_features(
  rstate: Any,
  rvariables: Any,
  ctx: evaluators.Context,
  sec: ml_collections.ConfigDict,
  throughput: _Throughput,
) -> tuple[np.ndarray, np.ndarray]:
  """Pool features of the images of `sec.split` and of their reconstructions: two [N, 2048] float32."""
  devices = parallel.devices_of(rstate)
  info, assembly = ctx.dataset.info, resolve(ctx.config.data)
  source = ctx.dataset.split(sec.split)
  fn = _pmapped_recon_pool(ctx.model, info.to_unit, devices)
  n = len(source) if sec.max_examples is None else min(len(source), int(sec.max_examples))
  real, fake, progress = [], [], Progress(f"rfid on {sec.split}", n)
  for batch in eval_batches(
    source,
    info.preprocess_for(train=False),
    global_batch=int(sec.batch_size),
    num_threads=assembly.num_threads,
    num_workers=assembly.num_workers,
    max_examples=sec.max_examples,
    batch_preprocess=info.batch_preprocess_for(False),
  ):
    valid = batch["valid"] > 0
    begin = time.perf_counter()
    r, f = jax.device_get(
      fn(rstate, rvariables, parallel.shard(parallel.split_for_devices(batch, len(devices)), devices))
    )
    throughput.add(time.perf_counter() - begin, 2 * len(valid))
    real.append(np.asarray(r).reshape(-1, r.shape[-1])[valid])
    fake.append(np.asarray(f).reshape(-1, f.shape[-1])[valid])
    progress.update(sum(len(x) for x in real))
  progress.close()
  return np.concatenate(real), np.concatenate(fake)


def _fid(real: np.ndarray, fake: np.ndarray) -> float:
  return frechet_distance(*feature_statistics(fake), *feature_statistics(real))


def _weights(name: str, sec: ml_collections.ConfigDict) -> Any:
  if jax.process_count() > 1:
    raise ConfigError(f"config.evals.{name} (type '{sec.type}') runs in single-process runs only")
  if int(sec.batch_size) < 1:
    raise ConfigError(f"config.evals.{name}.batch_size must be >= 1, got {sec.batch_size}")
  return load_weights(sec.weights, bool(sec.download))  # absent or damaged: refused now, before training


def _result(metric: str, fid: float, n: int, throughput: _Throughput, what: str) -> evaluators.Result:
  rate = throughput.per_second
  log.info("%s: %.1f images/s through the network (%s)", metric, rate, what)
  return evaluators.Result(
    {metric: fid, "num_images": float(n), "images_per_second": rate},
    {"protocol": inception.PROTOCOL},
    lines=[f"{metric}: {fid:.4g} ({n:,} images, {what}; {rate:.1f} images/s; {inception.PROTOCOL})"],
  )


def _build_rfid(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  variables = _weights(name, sec)
  replicated: dict[tuple, Any] = {}

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    devices = parallel.devices_of(rstate)
    if devices not in replicated:
      replicated[devices] = parallel.replicate(variables, devices)
    throughput = _Throughput()
    real, fake = reconstruction_features(rstate, replicated[devices], ctx, sec, throughput)
    return _result("rfid", _fid(real, fake), len(real), throughput, f"reconstructions of {sec.split}")

  return evaluate


def _build_fid(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  from ae_jax import data
  from ae_jax.data.dataset import stack_examples

  variables = _weights(name, sec)
  draw = samples.sample_drawer(name, sec, ctx, "ae_jax_fid_")

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    drawn = draw(rstate, step)
    dataset = data.get_dataset(drawn.source.config.data)
    reference = dataset.split(sec.split)
    n = min(len(drawn.images), len(reference))
    if n < 2:
      raise ConfigError(f"config.evals.{name}: FID needs at least 2 images on each side, got {n}")
    rvariables = parallel.replicate(variables, parallel.devices_of(rstate))
    throughput = _Throughput()
    common = {"batch_size": int(sec.batch_size), "throughput": throughput}
    to_unit = dataset.info.to_unit
    fake = pool_features(drawn.images[:n], rvariables, to_unit, label="fid on samples", **common)
    real_images = stack_examples(reference, dataset.info, range(n))["x"]
    real = pool_features(real_images, rvariables, to_unit, label=f"fid on {sec.split}", **common)
    return _result("fid", _fid(real, fake), n, throughput, f"{drawn.what} against {sec.split}")

  return evaluate


_COMMON = {
  "weights": ml_collections.config_dict.placeholder(str),
  "download": True,
  "batch_size": 64,
}


def _split_images(spec, data) -> str | None:
  """Why rfid cannot run on this dataset (None: it can): it needs images [H, W, 1 or 3] of a known range."""
  if not spec.bits_per_value or spec.name == "spoken_digit":
    return "its examples are not images with a known pixel range"
  shape = spec.example(data).shape
  if len(shape) != 3 or shape[-1] not in (1, 3):
    return f"the FID Inception network measures images [H, W, 1 or 3], these are {list(shape)}"
  return None


def _samples_scorable(spec, data) -> str | None:
  from ae_jax.generation import samplers

  return samplers.quality_unavailable(data)


evaluators.register(
  evaluators.EvaluatorSpec(
    name="rfid",
    build=_build_rfid,
    options={**_COMMON, "max_examples": ml_collections.config_dict.placeholder(int)},
    needs=_split_images,
    description="Fréchet Inception Distance of the reconstructions of a split to its images",
  )
)
evaluators.register(
  evaluators.EvaluatorSpec(
    name="fid",
    build=_build_fid,
    options={**_COMMON, **samples.DRAW_OPTIONS},
    needs=_samples_scorable,
    description="Fréchet Inception Distance of images the run generates to a split's images",
  )
)
