"""The `rfd` evaluator: the reconstruction Fréchet distance (rFD) of a split, the Fréchet distance between
the features of the split's reconstructions and of its images, in the space of the feature network ae-jax
trains on the dataset (`ae_jax.metrics.feature_network`). It is the reconstruction FID that tokenizer papers
report, computed with ae-jax's own classifier instead of Inception: its numbers compare models scored with
the same network and the same number of examples, never published rFIDs (Inception FID is another
evaluator).

    config.evals.rfd = evaluators.section("rfd", split="test")

Metrics:
  rfd: the Fréchet distance (`sample_metrics.frechet_distance`, FID's formula, in squared feature units)
    between the reconstructions' and the images' features, over every example of the split or its first
    `max_examples`;
  rfd_floor: the same distance between as many training images (the first N of the training split, or all
    of them when it has fewer) and the split's images: what a perfect autoencoder scores at this N, the
    number rfd is read against (a finite set's Fréchet distance is biased upward, roughly as 1/N);
  examples: N.

How it is computed: the feature network runs inside the pmapped sums function (`batches.section_sums`),
so no image or reconstruction is gathered to the host. Each device reconstructs its share of a batch,
maps inputs and reconstructions to [0, 1] with the dataset's `to_unit` and clips them there (displayable
images, as `image_quality` and `lpips` measure them), runs both through the feature network and returns
sum f and sum f f^T (float32, `Precision.HIGHEST`) of its valid examples (the padding of a last partial
batch is weighted 0), psum'd over devices; the host adds the batches' sums in float64 and forms each
mean and unbiased covariance (divisor N - 1, as `sample_metrics.feature_statistics`) for
`frechet_distance`. The training images of the floor take the same path (without the model) once per
evaluator and N; their statistics are kept for later evaluations.

Options: max_examples (None: the whole split); feature_steps and feature_cache (the feature network's
training steps, default the dataset's shipped network (`feature_network.settings_for`), and its cache
folder, default the user's cache: $XDG_CACHE_HOME/ae_jax/feature_networks, else
~/.cache/ae_jax/feature_networks, `feature_network.default_cache_dir`). The network is read from that
cache, or trained once and written there, when the evaluator first runs. Needs a labelled image dataset
(the network is a classifier of its labels).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError, DataError
from ae_jax.evaluators import batches
from ae_jax.metrics import feature_network
from ae_jax.metrics.sample_metrics import frechet_distance

log = logging.getLogger(__name__)


def load_feature_network(
  data: ml_collections.ConfigDict, steps: int | None, cache: str | None
) -> feature_network.FeatureNetwork:
  """The feature network of config.data `data`: the dataset's shipped settings with `steps` training steps
  when given, read from (or trained once into) `cache`, else the user cache."""
  return feature_network.load_or_train(data, cache, feature_network.settings_for(data, steps))


def _features(images: jax.Array, *, to_unit, module, params) -> jax.Array:
  """Images [B, H, W, C] in model units -> features [B, F] float32 of their [0, 1]-clipped versions."""
  unit = jnp.clip(to_unit(images.astype(jnp.float32)), 0.0, 1.0)
  return module.apply({"params": params}, unit)[0].astype(jnp.float32)


def _moments(features: jax.Array, valid: jax.Array, prefix: str) -> dict[str, jax.Array]:
  """{prefix_sum: sum of valid f [F], prefix_outer: sum of valid f f^T [F, F]}."""
  weighted = features * valid[:, None]
  return {
    f"{prefix}_sum": jnp.sum(weighted, axis=0),
    f"{prefix}_outer": jnp.einsum("bi,bj->ij", weighted, features, precision=jax.lax.Precision.HIGHEST),
  }


def reconstruction_feature_sums(state, batch, *, model, to_unit, module, params):
  """This device's feature sums of its valid examples' images ("real_*") and reconstructions ("recon_*"),
  and their count."""
  recon = batches.model_outputs(model, state, batch)["recon"]
  valid = batch["valid"].astype(jnp.float32)
  features = functools.partial(_features, to_unit=to_unit, module=module, params=params)
  return {
    **_moments(features(batch["x"]), valid, "real"),
    **_moments(features(recon), valid, "recon"),
    "count": jnp.sum(valid),
  }


def image_feature_sums(state, batch, *, to_unit, module, params):
  """This device's feature sums of its valid examples' images ("real_*"), and their count (no model)."""
  del state
  valid = batch["valid"].astype(jnp.float32)
  features = _features(batch["x"], to_unit=to_unit, module=module, params=params)
  return {**_moments(features, valid, "real"), "count": jnp.sum(valid)}


def statistics(sums: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
  """Mean [F] and unbiased covariance [F, F] (divisor N - 1), float64, from the host's float64 sums."""
  n = float(sums["count"])
  if n < 2:
    raise DataError(f"rfd: a Fréchet distance needs at least 2 examples, got {n:g}")
  mean = np.asarray(sums[f"{prefix}_sum"], np.float64) / n
  outer = np.asarray(sums[f"{prefix}_outer"], np.float64)
  cov = (outer - n * np.outer(mean, mean)) / (n - 1.0)
  return mean, 0.5 * (cov + cov.T)


def _build(name: str, sec: ml_collections.ConfigDict, ctx: evaluators.Context):
  info = ctx.dataset.info
  classes = info.class_names
  if not classes or len(classes) < 2:  # reported before training, not when the evaluator first runs
    raise ConfigError(
      f"config.evals.{name} (type 'rfd'): dataset '{ctx.config.data.name}' has no class labels to train the "
      "feature network on; use a labelled image dataset or remove the evaluator"
    )
  # made when the evaluator first runs: the network (trained once when not cached), the sums functions
  # (one object each, so their compilation is reused) and the floor's training statistics per N
  cache: dict = {}

  def prepared():
    if "net" not in cache:
      net = load_feature_network(ctx.config.data, sec.feature_steps, sec.feature_cache)
      if tuple(net.shape) != tuple(info.shape):
        raise DataError(
          f"rfd: the feature network takes images {list(net.shape)}, the dataset's are {list(info.shape)}"
        )
      common = dict(to_unit=info.to_unit, module=net.module, params=net.params)
      cache["net"] = net
      cache["recon_fn"] = functools.partial(reconstruction_feature_sums, model=ctx.model, **common)
      cache["train_fn"] = functools.partial(image_feature_sums, **common)
    return cache["net"], cache["recon_fn"], cache["train_fn"]

  def evaluate(rstate, step: int, final: bool) -> evaluators.Result:
    net, recon_fn, train_fn = prepared()
    sums = batches.section_sums(recon_fn, rstate, ctx, sec)
    n = int(round(float(sums["count"])))
    real = statistics(sums, "real")
    rfd = frechet_distance(*statistics(sums, "recon"), *real)
    if ("floor", n) not in cache:
      train = ml_collections.ConfigDict({"type": f"{sec.get('type', 'rfd')} floor", "split": "train"})
      train.max_examples = n
      cache[("floor", n)] = statistics(batches.section_sums(train_fn, rstate, ctx, train), "real")
    floor = frechet_distance(*cache[("floor", n)], *real)
    line = (
      f"{name}: reconstruction Fréchet distance {rfd:.4g} (train-vs-{sec.split} floor {floor:.4g}) over "
      f"{n:,} {sec.split} images, in the space of {net.describe()}"
    )
    return evaluators.Result(
      {"rfd": rfd, "rfd_floor": floor, "examples": float(n)},
      {"feature_network": net.describe()},
      lines=[line],
    )

  return evaluate


def _images(spec, data) -> str | None:
  """Why the dataset cannot be scored (None: it can): its examples must be images [H, W, C] with a known
  pixel range."""
  shape = tuple(spec.example(data).shape)
  if len(shape) != 3 or not spec.bits_per_value or spec.name == "spoken_digit":
    return (
      f"its examples (shape {list(shape)}) are not images [H, W, C] with a known pixel range; rfd compares "
      "images in a feature network's space"
    )
  return None


evaluators.register(
  evaluators.EvaluatorSpec(
    name="rfd",
    build=_build,
    options={
      "max_examples": ml_collections.config_dict.placeholder(int),
      "feature_steps": ml_collections.config_dict.placeholder(int),
      "feature_cache": ml_collections.config_dict.placeholder(str),
    },
    needs=_images,
    description="reconstruction Fréchet distance of a split in ae-jax's feature network's space (not "
    "Inception FID), with its train-vs-split floor",
  )
)
