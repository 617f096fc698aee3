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
    if m := re.search(r"Traceback \(most recent call last\):.*?ae_jax\.errors\.\w+: (.*)$", text):
      text = m.group(1)  # a config file's get_config raised the project's own error: its message only
    if m := re.match(r"^'*([\w.]+)'*\s+Did you mean \"([\w.]+)\"", text):  # ml_collections' unknown key
      text = f"unknown config key '{m.group(1)}'; did you mean '{m.group(2)}'?"
    elif m := re.fullmatch(r"[\"']+(\w+)[\"']+", text):  # no close match: perhaps a moved quantizer option
      text = _unknown_key(m.group(1))
    for old, replacement in RENAMED.items():
      if re.search(rf"\b{old}\b", text):
        text = replacement
    sys.exit(f"error: {text} (usage: {usage})")


def _unknown_key(key: str) -> str:
  """The error line for a flag naming an unknown key; a quantizer's option says where it lives now."""
  from ae_jax.registry import QUANTIZERS

  owners = QUANTIZERS.owners(key)
  if owners:
    return (
      f"unknown config key '{key}'; it is an option of quantizer {owners}, set in the model's quantizer "
      f"section: --config.model.quantizer.{key}=VALUE"
    )
  return f"unknown config key '{key}'"


# Sections whose keys are owned by a registry or a dataset and validated there.
_FREE_FORM = ("model", "loss", "loss_schedules", "data", "evals")

# Keys that were replaced, with what replaced them (a config or flag using one gets this as its error).
RENAMED = {
  "eval_every": "config.eval_every was replaced by the `every` of an evaluator: --config.evals.test.every=N",
  "visualize": "config.visualize was replaced by evaluators: config.evals.reconstructions (type "
  "'reconstructions', option num) and config.evals.latents (type 'latents')",
  "likelihood_eval": "config.likelihood_eval was replaced by an evaluator: config.evals.likelihood = "
  "evaluators.section('likelihood', num_samples=1000)",
  "anomaly": "config.anomaly was replaced by an evaluator: config.evals.anomaly = "
  "evaluators.section('anomaly')",
}


def default_config() -> ml_collections.ConfigDict:
  """The shared experiment schema with its defaults."""
  from ae_jax import data, evaluators  # here: they import this module's helpers

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 128  # global: split over processes, then over each process's local devices
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # A validation loss of a periodic `losses` evaluator (e.g. "validation/loss"; lower is better): the state
  # with its lowest value is kept in WORKDIR/best and reported after training (early stopping). "": the last.
  c.keep_best = ""
  c.async_checkpoints = True
  # When every checkpoint in the workdir is unreadable: False stops with an error; True moves them aside
  # (renamed <step>.corrupt) and starts afresh.
  c.fresh_start_if_unreadable = False
  c.eval_batch_size = 1000
  # Optimisation steps per dispatch to the devices (a lax.scan over k batches): the same parameters as k
  # single steps, with far less host time per step on accelerators. Logging, evaluation, checkpoints and
  # preemption happen between dispatches: choose their intervals as multiples of k (else the remainders
  # compile once more).
  c.steps_per_dispatch = 1
  c.prefetch = 2  # batches placed on the devices ahead of the step that uses them (0: none)
  c.dtype = "float32"  # compute dtype: "bfloat16" keeps parameters, optimizer state and losses in float32
  # A jax.profiler trace of `steps` steps from step `start` on, written to WORKDIR/tensorboard (0: none).
  c.profile = ml_collections.ConfigDict({"start": 0, "steps": 0})

  c.model = ml_collections.ConfigDict({"name": "mlp_ae"})
  c.loss = ml_collections.ConfigDict({"mse": 1.0})
  # Optional warm-up of loss weights: {term: steps}; the term's weight ramps linearly from 0 to its value.
  c.loss_schedules = ml_collections.ConfigDict()

  # Regexes over '/'-joined parameter paths (e.g. "decoder/.*"): matching parameters are frozen, i.e. never
  # updated and given no optimizer state.
  c.freeze = ()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # adam | adamw | sgd (optim.OPTIMIZERS)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine | piecewise (optim.SCHEDULES)
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

  # Evaluators by name (ae_jax/evaluators): each a section {type, split, every (0: after training only),
  # ...options}; metrics are logged as "<name>/<metric>". Add one with evaluators.section(type, ...).
  c.evals = ml_collections.ConfigDict()
  c.evals.test = evaluators.section("losses", split="test", every=500)
  c.evals.reconstructions = evaluators.section("reconstructions", split="test")

  # Robust training on data with unlabelled anomalies: after `after` steps, the `fraction` of each global
  # batch's examples with the largest loss is left out of the loss (trimmed mean).
  c.trim = ml_collections.ConfigDict()
  c.trim.fraction = 0.0
  c.trim.after = 0
  return c


def _check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in config.keys():
    path = f"{prefix}{key}"
    if not prefix and key in RENAMED:
      raise ConfigError(RENAMED[key])
    if key not in schema:
      hint = did_you_mean(key, schema.keys(), prefix)
      raise ConfigError(f"unknown config key '{path}'; {hint}valid keys here: {sorted(schema.keys())}")
    if isinstance(schema[key], ml_collections.ConfigDict) and key not in _FREE_FORM:
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{path}' must be a section (ConfigDict), got {config[key]!r}")
      _check_keys(config[key], schema[key], path + ".")


def check_config(config: ml_collections.ConfigDict, *, num_processes: int, local_devices: int) -> None:
  """Raises ConfigError with one line naming the bad key or value and how to fix it."""
  from ae_jax import data, evaluators, optim

  _check_keys(config, default_config(), "")
  optim.check_options(config.optimizer)
  data.resolve(config.data)
  evaluators.check(config)
  if config.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got '{config.dtype}'")
  if not 0.0 <= float(config.trim.fraction) < 1.0 or int(config.trim.after) < 0:
    raise ConfigError("config.trim needs 0 <= fraction < 1 and after >= 0")
  for key in (
    "total_steps",
    "batch_size",
    "log_every",
    "eval_batch_size",
    "keep_checkpoints",
    "steps_per_dispatch",
  ):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key} must be positive, got {config[key]}")
  if config.profile.steps < 0 or config.profile.start < 0:
    raise ConfigError("config.profile needs start >= 0 and steps >= 0 (steps 0: no trace)")
  for key in ("checkpoint_every", "prefetch"):
    if int(config[key]) < 0:
      raise ConfigError(f"config.{key} must be >= 0 (0 disables it), got {config[key]}")
  if config.keep_best:
    choices = evaluators.periodic_metrics(config)
    selects_on = {name: sec.split for name, sec in config.evals.items()}
    evaluator = config.keep_best.split("/")[0]
    if config.keep_best not in choices:
      raise ConfigError(
        f"config.keep_best='{config.keep_best}' is not a metric of a periodic losses evaluator; use one of "
        f"{choices} (add config.evals.validation = evaluators.section('losses', split='validation', "
        "every=N))"
      )
    if selects_on.get(evaluator) == "test":
      raise ConfigError(
        f"config.keep_best='{config.keep_best}' selects on the test split, which is only reported; select on "
        "a validation split (config.data.validation_size=N holds one out of the training data)"
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
