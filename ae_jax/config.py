"""Config keys every experiment shares, and the check that catches typos before any compute is spent.

Experiment files (`experiments/configs/*.py`) start from `default_config()` and override fields. A config
may not add keys the trainer would silently ignore: `check_config` rejects them with the closest valid key.
Sections owned by a registry are checked against it: `config.model` against the model's fields,
`config.loss` against the registered loss terms, `config.data` against the dataset's declared options.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import ml_collections

from ae_jax.errors import ConfigError, did_you_mean  # noqa: F401 - did_you_mean is re-exported


def parse_flags_or_exit(
  argv: list[str], flag_values: Any, usage: str, config_flag: str = "config"
) -> list[str]:
  """Parses absl flags (a config file with --config.KEY=VALUE overrides); a bad command line or config file
  exits with one line naming the problem, instead of a traceback."""
  try:
    rest = flag_values(argv)
    config = getattr(flag_values, config_flag)
    if config is not None:
      config.keys()  # config files load lazily: surface a missing or broken file now
    return rest
  except Exception as e:  # noqa: BLE001 - absl / ml_collections raise several types for bad flags
    text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    if m := re.match(r"^'*([\w.]+)'*\s+Did you mean \"([\w.]+)\"", text):  # ml_collections' unknown key
      text = f"unknown config key '{m.group(1)}'; did you mean '{m.group(2)}'?"
    sys.exit(f"error: {text} (usage: {usage})")


# Sections whose keys are owned by a registry or a dataset and validated there.
_FREE_FORM = ("model", "loss", "loss_schedules", "data")


def default_config() -> ml_collections.ConfigDict:
  """The shared experiment schema with its defaults."""
  from ae_jax import data  # here: ae_jax.data's modules import this module's helpers

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 128  # global: split over processes, then over each process's local devices
  c.log_every = 50
  c.eval_every = 500  # 0 disables evaluation during training; the final evaluation always runs
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # An evaluation metric (e.g. "test/loss"; lower is better): the state with its lowest value is kept in
  # WORKDIR/best and is the one reported after training (early stopping's model selection). "": the last.
  c.keep_best = ""
  c.async_checkpoints = True
  c.eval_batch_size = 1000

  c.model = ml_collections.ConfigDict({"name": "mlp_ae"})
  c.loss = ml_collections.ConfigDict({"mse": 1.0})
  # Optional warm-up of loss weights: {term: steps}; the term's weight ramps linearly from 0 to its value.
  c.loss_schedules = ml_collections.ConfigDict()

  # Regexes over '/'-joined parameter paths (e.g. "decoder/.*"): matching parameters are frozen, i.e. never
  # updated and given no optimizer state.
  c.freeze = ()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # adam | adamw | sgd
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.boundaries = ()  # piecewise: steps where the next scale starts
  c.optimizer.scales = (1.0,)  # piecewise: learning_rate multipliers, one more than boundaries
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  # The dataset and its options (ae_jax/data: every option of the named dataset with its default).
  c.data = data.data_config("fashion_mnist")

  c.visualize = ml_collections.ConfigDict()
  c.visualize.num_images = 16
  c.visualize.num_latents = 2000  # examples in the latent scatter plot; 0 disables it

  # Importance-sampled log-likelihood of the test set after training (models with importance weights,
  # i.e. VAEs); num_samples = 0 disables it.
  c.likelihood_eval = ml_collections.ConfigDict()
  c.likelihood_eval.num_samples = 0
  c.likelihood_eval.chunk_size = 100
  c.likelihood_eval.batch_size = 100
  c.likelihood_eval.max_examples = ml_collections.config_dict.placeholder(int)  # None: the whole test set

  # Anomaly detection after training (ae_jax/anomaly.py): time-series data sets with labelled anomalies.
  c.anomaly = ml_collections.ConfigDict()
  c.anomaly.enabled = False
  c.anomaly.beta = 0.1  # the threshold maximises F-beta on the validation split (0.1: the paper's)
  c.anomaly.score = "mahalanobis"  # mahalanobis | neg_log_density, of the Gaussian of normal errors
  c.anomaly.shrinkage = 0.0  # covariance blended towards its diagonal (1.0: diagonal)
  c.anomaly.stride = 1  # between the windows whose errors are averaged into each point's error vector
  c.anomaly.normalise_positions = True  # divide errors by their mean at each window position first
  c.anomaly.batch_size = 512
  c.anomaly.contamination = 0.05  # unsupervised: share of points with the largest errors left out of the fit
  c.anomaly.top_k = 3  # unsupervised: discords reported

  # Robust training on data with unlabelled anomalies: after `after` steps, the `fraction` of each global
  # batch's examples with the largest loss is left out of the loss (trimmed mean).
  c.trim = ml_collections.ConfigDict()
  c.trim.fraction = 0.0
  c.trim.after = 0
  return c


def _check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      hint = did_you_mean(key, schema.keys(), prefix)
      raise ConfigError(f"unknown config key '{path}'; {hint}valid keys here: {sorted(schema.keys())}")
    if isinstance(schema[key], ml_collections.ConfigDict) and key not in _FREE_FORM:
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{path}' must be a section (ConfigDict), got {config[key]!r}")
      _check_keys(config[key], schema[key], path + ".")


def evaluation_losses(config: ml_collections.ConfigDict) -> list[str]:
  """The loss metrics evaluation reports ("validation/loss", "test/mse", ...) for this config's dataset."""
  from ae_jax import data

  roles = [r for r in data.split_roles(config.data) if r != "train"]
  return [f"{role}/{name}" for role in roles for name in ("loss", *config.loss)]


def check_config(config: ml_collections.ConfigDict, *, num_processes: int, local_devices: int) -> None:
  """Raises ConfigError with one line naming the bad key or value and how to fix it."""
  from ae_jax import data

  _check_keys(config, default_config(), "")
  data.resolve(config.data)
  for key in ("total_steps", "batch_size", "log_every", "eval_batch_size", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key} must be positive, got {config[key]}")
  for key in ("eval_every", "checkpoint_every"):
    if int(config[key]) < 0:
      raise ConfigError(f"config.{key} must be >= 0 (0 disables it), got {config[key]}")
  if config.keep_best:
    choices = [name for name in evaluation_losses(config) if name.startswith("validation/")]
    if config.keep_best not in choices:
      fix = f"use one of {choices}" if choices else "set config.data.validation_size=N to hold out N records"
      raise ConfigError(
        f"config.keep_best='{config.keep_best}' is not a validation loss of this dataset (the state is "
        f"chosen on the validation split, never on the test split it reports); {fix}"
      )
  devices = num_processes * local_devices
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % devices:
      raise ConfigError(
        f"config.{key}={config[key]} does not split over {devices} devices "
        f"({num_processes} process(es) x {local_devices} local); use a multiple of {devices}"
      )
  if "name" not in config.model:
    raise ConfigError("config.model.name is missing; set it to a registered model, e.g. 'conv_ae'")
