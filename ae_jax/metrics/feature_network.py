"""A small classifier trained by ae-jax on an image dataset, whose penultimate layer is the feature space of
the sample-quality metrics (`ae_jax.metrics.sample_quality`): Inception weights cannot be downloaded here, and
Inception features of 28x28 grayscale images say little anyway.

    net = load_or_train(config.data)            # trained once (a few minutes on CPU), then read from cache
    net.features(images)                        # [N, H, W, C] in the dataset's value range -> [N, F] float32
    net.predict(images)                         # -> class ids int32 [N]

The network (`FeatureCNN`): `len(channels)` blocks of a 3x3 convolution of stride 2 and a ReLU, then a
dense layer of `features` units with ReLU (the features), then the class logits. It always sees pixels in
[0, 1]: it is trained on the dataset opened with scale "unit" (or "binary" for 0/1 data), and `features`
maps images from the caller's config.data.scale to [0, 1] first, so one network serves every scale.
Training (`train_feature_network`): Adam, its learning rate decayed to 0 along a cosine, on the
cross-entropy of the training split's labels, batches from the data pipeline's step-indexed stream; the
same seed gives the same parameters bitwise.

`load_or_train` caches a network in the user's cache folder (`default_cache_dir()`:
$XDG_CACHE_HOME/ae_jax/feature_networks, else ~/.cache/ae_jax/feature_networks; or `cache_dir`) as
`<dataset>-<fingerprint>.msgpack` (flax.serialization) beside a .json with its test accuracy and settings;
the fingerprint covers everything that changes the network: the data options (minus scale and runtime-only
ones), the training settings and the architecture.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from ae_jax.core import workdir
from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import Dataset, get_dataset, pipeline, resolve
from ae_jax.data.images import SCALES

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the architecture or training changes meaning: old cache entries are then not read
CACHE_FOLDER = "feature_networks"
# config.data options that change how data is read, not what the examples are: left out of the fingerprint
_RUNTIME_OPTIONS = (
  "num_threads",
  "num_workers",
  "cache_in_memory",
  "on_device",
  "on_device_memory_fraction",
  "download",
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a feature network is built and trained (all part of the cache fingerprint)."""

  steps: int = 2000
  batch_size: int = 128
  seed: int = 0
  learning_rate: float = 1e-3
  channels: tuple[int, ...] = (16, 32, 64)
  features: int = 128

  def check(self) -> Settings:
    channels = tuple(int(c) for c in self.channels)
    if self.steps < 1 or self.batch_size < 1 or not channels or min(channels) < 1 or self.features < 1:
      raise ConfigError(
        f"feature network: steps, batch_size, features and every channel count must be positive, got {self}"
      )
    if not self.learning_rate > 0:
      raise ConfigError(f"feature network: learning_rate must be > 0, got {self.learning_rate}")
    return dataclasses.replace(self, channels=channels, learning_rate=float(self.learning_rate))

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Settings:
    """The settings held by a config (`experiments/configs/feature_network.py`: one key per field)."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)}).check()


# The shipped network of each dataset (`experiments/configs/feature_network.py`, `experiments.sample
# --quality`, the sample_quality evaluator); other datasets get Settings().
DATASET_SETTINGS = {
  "fashion_mnist": Settings(steps=2000, batch_size=128, channels=(16, 32, 64), features=128),
  "cifar10": Settings(steps=3000, batch_size=128, channels=(32, 64, 128), features=128),
}


def settings_for(data: ml_collections.ConfigDict, steps: int | None = None) -> Settings:
  """The feature network settings of dataset `data.name` (`DATASET_SETTINGS`, else `Settings()`), with
  `steps` training steps when given."""
  settings = DATASET_SETTINGS.get(str(data.get("name", "")), Settings())
  return (settings if steps is None else dataclasses.replace(settings, steps=int(steps))).check()


class FeatureCNN(nn.Module):
  """Images [B, H, W, C] in [0, 1] -> (features [B, features] (post-ReLU), logits [B, num_classes])."""

  num_classes: int
  channels: Sequence[int] = (16, 32, 64)
  features: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x.astype(jnp.float32) - 0.5
    for width in self.channels:  # stride 2 rather than pooling: a quarter of the compute per block
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2))(x))
    h = nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))
    return h, nn.Dense(self.num_classes)(h)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: FeatureCNN, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return module.apply({"params": params}, x)


def _input_scale(data: ml_collections.ConfigDict) -> str:
  """The scale the network's training data is read with: "binary" data stays 0/1, all else "unit"."""
  return "binary" if data.get("scale") == "binary" else "unit"


def _to_unit(data: ml_collections.ConfigDict) -> Callable[[np.ndarray], np.ndarray]:
  """config.data's value range -> [0, 1] (binarised data already is 0/1)."""
  data = resolve(data)
  if data.get("binarize") == "dynamic" or "scale" not in data:
    return lambda x: x
  return SCALES[data.scale][1]


class FeatureNetwork:
  """A trained `FeatureCNN` with what it was trained on. Its methods take images [N, H, W, C] in the
  value range of the config.data it was loaded for (`to_unit` maps them to [0, 1]), `batch_size` at a
  time through one jitted function (a short last batch is zero-padded)."""

  def __init__(
    self,
    module: FeatureCNN,
    params: Any,
    *,
    dataset: str,
    shape: tuple[int, ...],
    test_accuracy: float,
    settings: Settings,
    to_unit: Callable[[np.ndarray], np.ndarray] = lambda x: x,
    batch_size: int = 500,
    train_seconds: float | None = None,
  ):
    self.module, self.params, self.dataset, self.shape = module, params, dataset, tuple(shape)
    self.test_accuracy, self.settings, self.train_seconds = float(test_accuracy), settings, train_seconds
    self.to_unit, self.batch_size = to_unit, batch_size

  @property
  def num_features(self) -> int:
    return self.module.features

  def describe(self) -> str:
    """What the network is, in words (for logs and reports)."""
    return (
      f"a feature network trained by ae-jax on {self.dataset} (test accuracy {self.test_accuracy:.4f}), "
      "not Inception"
    )

  def outputs(self, images: np.ndarray, *, unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, F] float32, logits [N, num_classes] float32) of images [N, *shape]; `unit`: the
    images are already in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != self.shape:
      raise DataError(
        f"feature network ({self.dataset}): expects images [N, {', '.join(map(str, self.shape))}], got "
        f"{list(images.shape)}"
      )
    if not np.all(np.isfinite(images)):
      raise DataError(f"feature network: the images contain NaN or inf ({int(np.sum(~np.isfinite(images)))})")
    if not len(images):
      return np.zeros((0, self.num_features), np.float32), np.zeros((0, self.module.num_classes), np.float32)
    feats, logits = [], []
    for start in range(0, len(images), self.batch_size):
      chunk = np.asarray(images[start : start + self.batch_size], np.float32)
      chunk = chunk if unit else np.asarray(self.to_unit(chunk), np.float32)
      n = len(chunk)
      padded = np.concatenate([chunk, np.zeros((self.batch_size - n, *self.shape), np.float32)])
      f, lg = jax.device_get(_apply(self.module, self.params, padded))
      feats.append(f[:n])
      logits.append(lg[:n])
    return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float32)

  def features(self, images: np.ndarray) -> np.ndarray:
    """The penultimate layer's activations: images [N, *shape] -> [N, F] float32."""
    return self.outputs(images)[0]

  def predict(self, images: np.ndarray) -> np.ndarray:
    """The most likely class of each image: [N, *shape] -> int32 [N]."""
    return np.argmax(self.outputs(images)[1], axis=1).astype(np.int32)


def _open(data: ml_collections.ConfigDict | Dataset) -> tuple[Dataset, ml_collections.ConfigDict | None]:
  """The dataset the network trains on (a config is opened with the input scale) and the config asked for
  (resolved; None for a Dataset)."""
  if isinstance(data, Dataset):
    return data, None
  requested = resolve(data)
  opened = resolve(data)
  if "scale" in opened:
    opened.scale = _input_scale(opened)
  return get_dataset(opened), requested


def _check_dataset(dataset: Dataset) -> tuple[tuple[int, ...], int]:
  shape, classes = dataset.info.shape, dataset.info.class_names
  if len(shape) != 3 or dataset.info.to_unit is None:
    raise ConfigError(
      f"feature network: dataset '{dataset.name}' has examples of shape {list(shape)}, not images "
      "[H, W, C]; choose an image dataset"
    )
  if not classes or len(classes) < 2:
    raise ConfigError(
      f"feature network: dataset '{dataset.name}' has no class labels to train a classifier on; choose a "
      "labelled image dataset (fashion_mnist, cifar10, ...)"
    )
  return tuple(shape), len(classes)


def _accuracy(net: FeatureNetwork, dataset: Dataset, role: str, batch_size: int) -> float:
  """The fraction of split `role` the network classifies correctly (every example, in [0, 1] pixels)."""
  source = dataset.split(role)
  correct = total = 0
  batches = pipeline.eval_batches(
    source, None, global_batch=batch_size, batch_preprocess=dataset.info.batch_preprocess_for(False)
  )
  for batch in batches:
    valid = batch["valid"] > 0
    x = np.asarray(dataset.info.to_unit(batch["x"][valid]), np.float32)
    predicted = np.argmax(net.outputs(x, unit=True)[1], axis=1)
    correct += int(np.sum(predicted == batch["label"][valid]))
    total += int(valid.sum())
  return correct / max(total, 1)


def _param_shapes(module: FeatureCNN, shape: tuple[int, ...]) -> Any:
  """The parameter tree of `module` on images [*, *shape], as jax.ShapeDtypeStructs (nothing computed)."""
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))["params"])


def init_params(module: FeatureCNN, seed: int, shape: tuple[int, ...]) -> Any:
  """He-normal kernels (std sqrt(2 / fan_in), for the ReLUs) and zero biases, float32, drawn in numpy from
  `seed`: jax's initializers cost a minute of XLA compilation on a loaded 2-core CPU for a network this
  small."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == "bias":
      return np.zeros(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, _param_shapes(module, shape))


def _optimizer(settings: Settings) -> optax.GradientTransformation:
  """Adam with the learning rate decayed to 0 along a cosine over the steps."""
  return optax.adam(optax.cosine_decay_schedule(settings.learning_rate, settings.steps))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_step(module: FeatureCNN, settings: Settings, params, opt_state, x, labels):
  """One Adam step on the mean cross-entropy of images x [B, H, W, C] in [0, 1] and int32 labels [B]."""

  def loss_fn(p):
    logits = module.apply({"params": p}, x)[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = _optimizer(settings).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_feature_network(
  data: ml_collections.ConfigDict | Dataset, settings: Settings = Settings()
) -> FeatureNetwork:
  """Trains a `FeatureCNN` on the training split's labels of `data` (a config.data, opened with the input
  scale, or an opened image Dataset) for `settings.steps` Adam steps of `settings.batch_size` examples, and
  measures its accuracy on the test split. Deterministic: the same arguments give the same parameters
  bitwise."""
  settings = settings.check()
  dataset, requested = _open(data)
  shape, num_classes = _check_dataset(dataset)
  train = dataset.split("train")
  dataset.split("test")  # raises before training when there is none
  module = FeatureCNN(num_classes, settings.channels, settings.features)
  params = init_params(module, settings.seed, shape)
  opt_state = _optimizer(settings).init(params)

  to_unit = dataset.info.to_unit
  batches = pipeline.train_batches(
    train,
    None,
    global_batch=settings.batch_size,
    seed=settings.seed,
    batch_preprocess=dataset.info.batch_preprocess_for(True),
  )
  log.info(
    "training a feature network on %s's labels: %d Adam steps of %d images",
    dataset.name,
    settings.steps,
    settings.batch_size,
  )
  start, report_every = time.monotonic(), max(settings.steps // 5, 1)
  for i, batch in zip(range(settings.steps), batches, strict=False):
    labels = np.asarray(batch["label"], np.int32)
    if labels.min() < 0 or labels.max() >= num_classes:
      raise DataError(
        f"feature network: dataset '{dataset.name}' has training labels outside [0, {num_classes}) "
        f"(e.g. {int(labels.min())}); it needs every training image labelled"
      )
    x = np.asarray(to_unit(batch["x"]), np.float32)
    params, opt_state, loss = _train_step(module, settings, params, opt_state, x, labels)
    if (i + 1) % report_every == 0:
      log.info("feature network: step %d/%d, loss %.4f", i + 1, settings.steps, float(loss))
  seconds = time.monotonic() - start
  net = FeatureNetwork(
    module,
    jax.device_get(params),
    dataset=dataset.name,
    shape=shape,
    test_accuracy=0.0,
    settings=settings,
    to_unit=to_unit if requested is None else _to_unit(requested),
    train_seconds=seconds,
  )
  net.test_accuracy = _accuracy(net, dataset, "test", 500)
  log.info("%s, trained in %.0f s", net.describe(), net.train_seconds)
  return net


# ----------------------------------------------------------------------------- cache


def fingerprint(data: ml_collections.ConfigDict, settings: Settings) -> str:
  """12 hex digits of a hash of what determines the network: the data options (scale as trained,
  runtime-only options left out), the settings and FORMAT."""
  resolved = resolve(data).to_dict()
  if "scale" in resolved:
    resolved["scale"] = _input_scale(resolved)
  for key in _RUNTIME_OPTIONS:
    resolved.pop(key, None)
  text = json.dumps(
    {"data": resolved, "settings": dataclasses.asdict(settings), "format": FORMAT},
    sort_keys=True,
    default=str,
  )
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
  """Where feature networks are cached when no cache_dir is given: the user's cache folder, never the data
  root (which may be read-only or shared): $XDG_CACHE_HOME/ae_jax/feature_networks, else
  ~/.cache/ae_jax/feature_networks."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "ae_jax" / CACHE_FOLDER


def cache_paths(
  data: ml_collections.ConfigDict, settings: Settings, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, Path]:
  """(parameters .msgpack, metadata .json) of the network for `data` and `settings`, under `cache_dir`,
  else `default_cache_dir()`."""
  folder = Path(cache_dir) if cache_dir else default_cache_dir()
  stem = folder / f"{data.name}-{fingerprint(data, settings)}"
  return stem.with_suffix(".msgpack"), stem.with_suffix(".json")


def _load(params_path: Path, meta_path: Path, data: ml_collections.ConfigDict, settings: Settings):
  try:
    meta = json.loads(meta_path.read_text())
    shape = tuple(meta["shape"])
    module = FeatureCNN(int(meta["num_classes"]), settings.channels, settings.features)
    target = _param_shapes(module, shape)
    params = flax.serialization.from_bytes(target, params_path.read_bytes())
  except Exception as e:  # noqa: BLE001 - json, msgpack and flax raise several types for a damaged file
    raise DataError(
      f"{params_path} (or its .json): not a readable feature network ({type(e).__name__}: {e}); delete both "
      "to retrain"
    ) from e
  got = jax.tree.map(lambda a: np.shape(a), params)
  if got != jax.tree.map(lambda s: s.shape, target):
    raise DataError(f"{params_path}: parameters do not match the feature network; delete it to retrain")
  return FeatureNetwork(
    module,
    params,
    dataset=meta["dataset"],
    shape=shape,
    test_accuracy=meta["test_accuracy"],
    settings=settings,
    to_unit=_to_unit(data),
  )


def load_or_train(
  data: ml_collections.ConfigDict,
  cache_dir: str | os.PathLike | None = None,
  settings: Settings = Settings(),
) -> FeatureNetwork:
  """The feature network of config.data `data` with these settings: read from the cache (`cache_paths`)
  when there, else trained (`train_feature_network`) and written there. A cache folder that cannot be
  written costs a warning (the network is still returned). Logs what the network is."""
  settings = settings.check()
  params_path, meta_path = cache_paths(data, settings, cache_dir)
  if params_path.exists() and meta_path.exists():
    net = _load(params_path, meta_path, data, settings)
    log.info("feature network: %s, read from %s", net.describe(), params_path)
    return net
  log.info("feature network: none cached in %s; training it once", params_path.parent)
  net = train_feature_network(data, settings)
  meta = {
    "what": net.describe(),
    "dataset": net.dataset,
    "shape": list(net.shape),
    "num_classes": net.module.num_classes,
    "test_accuracy": net.test_accuracy,
    "train_seconds": round(net.train_seconds, 1),
    "settings": dataclasses.asdict(settings),
    "data": {k: v for k, v in resolve(data).to_dict().items() if k not in _RUNTIME_OPTIONS},
    "format": FORMAT,
  }
  try:
    params_path.parent.mkdir(parents=True, exist_ok=True)
    params = flax.serialization.to_bytes(net.params)
    meta_text = (json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n").encode()
    workdir.write_whole(params_path, lambda f: f.write(params))
    workdir.write_whole(meta_path, lambda f: f.write(meta_text))
    log.info("feature network: cached at %s", params_path)
  except OSError as e:
    log.warning(
      "feature network: could not cache it in %s (%s); to keep it, name a writable folder (--feature_cache "
      "for experiments.sample, --cache_dir for experiments.feature_network) or set XDG_CACHE_HOME",
      params_path.parent,
      e,
    )
  return net
