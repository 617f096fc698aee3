"""The `fid`, `inception_score` and `rfid` evaluators: Fréchet Inception Distance, Inception Score and
precision/recall in the space of the FID Inception network (`ae_jax.metrics.inception`, pytorch-fid's
weights), the numbers papers print.

    config.evals.rfid = evaluators.section("rfid", split="test")            # the tokenizer number
    config.evals.fid = evaluators.section("fid", split="test", num=10000)   # samples against the split

rfid: the reconstructions of `split` (all of it, or its first `max_examples`) against the same images.
fid: `num` images the run generates (as the `sample_quality` evaluator draws them: a prior run's tokens
through its stage one, an autoencoder's or VAE's codes from `prior`) against as many images of `split`
(of the stage one's dataset for a prior run), with the floor (as many training images against the same
split images, `floor`), the samples' Inception Score (`splits`) and k-NN precision/recall (`k`) on the
pool features (`inception_features.score_samples`). The split's and the training images' features are
cached with a fingerprint of the images and the protocol (`reference_cache`: the folder, default
$XDG_CACHE_HOME/ae_jax/fid_reference; `ae_jax.metrics.inception_reference`).
inception_score: the Inception Score of `num` generated images alone (no real images).

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

Metrics: rfid: `rfid`, `num_images`, `images_per_second`; fid: `fid`, `fid_floor`, `inception_score`,
`inception_score_std`, `precision`, `recall`, `num_images`, `images_per_second`, `reference_cached`;
inception_score: `inception_score`, `inception_score_std`, `num_images`, `images_per_second`. Single-process
runs only (the features are gathered on the host).
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
from ae_jax.evaluators import batches, inception_features, samples
from ae_jax.metrics import inception, inception_weights, sample_metrics
from ae_jax.metrics.sample_metrics import feature_statistics, frechet_distance
from ae_jax.training.outputs import Progress

log = logging.getLogger(__name__)


def load_weights(path: str | None, allow_download: bool) -> Any:
  """InceptionV3's variables (`inception_weights.load_variables`); tests replace this function."""
  return inception_weights.load_variables(path, allow_download=allow_download)


def _unit(x: jax.Array, to_unit: Callable) -> jax.Array:
  return jnp.clip(to_unit(x.astype(jnp.float32)), 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _pmapped_recon_pool(model: Any, to_unit: Callable, devices: tuple) -> Callable:
  """(replicated state, replicated variables, batch) -> (pool of the inputs, pool of the reconstructions)."""

  def fn(state, variables, batch):
    recon = batches.model_outputs(model, state, batch)["recon"]
    both = jnp.concatenate([_unit(batch["x"], to_unit), _unit(recon, to_unit)])
    real, fake = jnp.split(inception.InceptionV3().apply(variables, both)["pool"], 2)
    return real, fake

  return jax.pmap(fn, axis_name=parallel.AXIS, devices=devices)


def reconstruction_features(
  rstate: Any,
  rvariables: Any,
  ctx: evaluators.Context,
  sec: ml_collections.ConfigDict,
  throughput: inception_features.Throughput,
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


def _result(
  metric: str, fid: float, n: int, throughput: inception_features.Throughput, what: str
) -> evaluators.Result:
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
    throughput = inception_features.Throughput()
    real, fake = reconstruction_features(rstate, replicated[devices], ctx, sec, throughput)
    return _result("rfid", _fid(real, fake), len(real), throughput, f"reconstructions of {sec.split}")

  return evaluate


def _build_fid(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  from ae_jax import data

  need = max(2, int(sec.k) + 1, int(sec.splits))
  if int(sec.k) < 1 or int(sec.splits) < 1 or int(sec.num) < need:
    raise ConfigError(
      f"config.evals.{name}: needs k >= 1, splits >= 1 and num >= max(2, k + 1, splits) = {need} samples, "
      f"got k={sec.k}, splits={sec.splits}, num={sec.num}"
    )
  variables = _weights(name, sec)
  digest = inception_features.variables_digest(variables)
  draw = samples.sample_drawer(name, sec, ctx, "ae_jax_fid_")

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    drawn = draw(rstate, step)
    data_config = drawn.source.config.data
    quality = inception_features.score_samples(
      drawn.images,
      data.get_dataset(data_config),
      data_config.name,
      parallel.replicate(variables, parallel.devices_of(rstate)),
      digest,
      split=sec.split,
      floor=bool(sec.floor),
      k=int(sec.k),
      splits=int(sec.splits),
      batch_size=int(sec.batch_size),
      reference_cache=sec.reference_cache,
    )
    n, rate = int(quality["num_images"]), quality["images_per_second"]
    log.info("fid: %.1f images/s through the network", rate)
    metrics = {k: float(v) for k, v in quality.items() if k != "protocol"}
    line = f"{name}: {inception_features.describe(quality)} ({n:,} images, {drawn.what} against {sec.split}; "
    return evaluators.Result(
      metrics, {"protocol": inception.PROTOCOL}, lines=[line + f"{rate:.1f} images/s; {inception.PROTOCOL})"]
    )

  return evaluate


def _build_inception_score(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  from ae_jax import data

  if not 1 <= int(sec.splits) <= int(sec.num):
    raise ConfigError(
      f"config.evals.{name}: needs 1 <= splits <= num, got splits={sec.splits}, num={sec.num}"
    )
  variables = _weights(name, sec)
  draw = samples.sample_drawer(name, sec, ctx, "ae_jax_is_")

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    drawn = draw(rstate, step)
    to_unit = data.get_dataset(drawn.source.config.data).info.to_unit
    throughput = inception_features.Throughput()
    _, logits = inception_features.network_outputs(
      inception_features.unit_images(drawn.images, to_unit),
      parallel.replicate(variables, parallel.devices_of(rstate)),
      batch_size=int(sec.batch_size),
      label="Inception Score",
      throughput=throughput,
    )
    score = sample_metrics.inception_score(logits, splits=int(sec.splits))
    n, rate = len(logits), throughput.per_second
    metrics = {**score, "num_images": float(n), "images_per_second": rate}
    line = (
      f"{name}: Inception Score {score['inception_score']:.3f} +- {score['inception_score_std']:.3f} ({n:,} "
      f"images, {drawn.what}; {int(sec.splits)} splits; {rate:.1f} images/s; {inception.PROTOCOL})"
    )
    return evaluators.Result(metrics, {"protocol": inception.PROTOCOL}, lines=[line])

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
    options={
      **_COMMON,
      **samples.DRAW_OPTIONS,
      "reference_cache": ml_collections.config_dict.placeholder(str),
      "floor": True,
      "k": 3,
      "splits": 10,
    },
    needs=_samples_scorable,
    description="Fréchet Inception Distance, its train-vs-split floor, Inception Score and precision/recall "
    "in Inception space of images the run generates",
  )
)
evaluators.register(
  evaluators.EvaluatorSpec(
    name="inception_score",
    build=_build_inception_score,
    options={**_COMMON, **samples.DRAW_OPTIONS, "splits": 10},
    needs=_samples_scorable,
    description="Inception Score of images the run generates",
  )
)
