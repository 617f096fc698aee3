"""Config keys every experiment shares, and the check that catches typos before any compute is spent.

Experiment files (`experiments/configs/*.py`) start from `default_config()` and override fields. A config
may not add keys the trainer would silently ignore: `check_config` rejects them with the closest valid key.
Sections owned by a registry are checked against it: `config.model` against the model's fields,
`config.loss` against the registered loss terms, `config.data` against the dataset's declared options,
`config.evals` against the evaluator types.

On the command line (`experiments.main`, `experiments.evaluate`) flags may also add loss terms, loss
warm-ups and evaluator sections, which `complete_config` completes and checks before any compute:

    --config.loss.l1=0.1                               # a registered loss term with its weight
    --config.loss_schedules.kl=5000                    # a linear warm-up of a term's weight
    --config.evals.psnr=image_quality                  # an evaluator of a registered type, its defaults
    --config.evals.val="{'type': 'losses', 'split': 'validation', 'every': 500}"  # ... with options

Plug-ins of your own are named `module:name` there too (`command_line.parse_flags_or_exit` turns such a key
into the quoted form ml_collections reads, and a model named by flag starts from its own defaults):

    --config.loss.my_module:my_term=0.01               # a loss term of my_module.py, with its weight
    --config.model.name=my_module:my_model             # a model of my_module.py, options at their defaults
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from ae_jax.core.errors import ConfigError, did_you_mean


def nonfinite_paths(value: Any, path: str) -> list[str]:
  if isinstance(value, float) and not math.isfinite(value):
    return [f"{path}={value}"]
  if isinstance(value, Mapping):
    return [p for k, v in value.items() for p in nonfinite_paths(v, f"{path}.{k}")]
  if isinstance(value, list | tuple):
    return [p for i, v in enumerate(value) for p in nonfinite_paths(v, f"{path}[{i}]")]
  return []


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """A config file's `get_config(arg)` argument (`--config=FILE.py:ARG`) as typed values.

  ARG is `key=value` items joined by commas; a bare `key` sets a bool option to True; a leading bare item
  that names no bool option is the value of the first option (`lstm_anomaly.py:ecg5000,model=NAME` sets
  the first option, the data set). Each value takes the type of its default: bool (true/false, 1/0,
  yes/no), int, float, str, or a tuple with items separated by ":" (`levels=8:5:5:5`, each item of the
  type of the default's first item); a default of None takes a Python literal, else the text. Returns
  every option of `defaults`, given or not. An unknown, repeated or ill-typed option is one ConfigError.

      args = parse_arg("k=50", k=1)            # args.k == 50
      args = parse_arg(None, k=1, full=False)  # the defaults
  """
  given: dict[str, Any] = {}
  items = [item for item in (arg or "").split(",") if item]
  for position, item in enumerate(items):
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq:
      if isinstance(defaults.get(key), bool):
        text = "true"
      elif position == 0 and defaults and key not in defaults:
        key, text = next(iter(defaults)), item
      else:
        raise ConfigError(f"config argument '{arg}': '{item}' needs a value ({item}=VALUE)")
    if key not in defaults:
      raise ConfigError(
        f"config argument '{arg}': unknown option '{key}'; {did_you_mean(key, defaults)}"
        f"options: {sorted(defaults)}"
      )
    if key in given:
      raise ConfigError(f"config argument '{arg}': '{key}' is given twice")
    given[key] = _typed(text, defaults[key], f"config argument '{arg}': {key}")
  return ml_collections.ConfigDict({**defaults, **given})


def _typed(text: str, default: Any, where: str) -> Any:
  """`text` converted to the type of `default` (see parse_arg)."""
  if isinstance(default, bool):
    if text.lower() not in _TRUE + _FALSE:
      raise ConfigError(f"{where} must be true or false, got '{text}'")
    return text.lower() in _TRUE
  if isinstance(default, tuple):
    first = default[0] if default else None
    return tuple(_typed(part, first, where) for part in text.split(":") if part)
  if default is None:
    try:
      return ast.literal_eval(text)
    except (SyntaxError, ValueError):
      return text
  try:
    return type(default)(text)
  except ValueError:
    raise ConfigError(f"{where} must be {type(default).__name__}, got '{text}'") from None


def unknown_key_message(key: str) -> str:
  """The error line for a flag naming an unknown key; a quantizer's option says where it lives now."""
  from ae_jax.core.registry import QUANTIZERS

  owners = QUANTIZERS.owners(key)
  if owners:
    return (
      f"unknown config key '{key}'; it is an option of quantizer {owners}, set in the model's quantizer "
      f"section: --config.model.quantizer.{key}=VALUE"
    )
  return f"unknown config key '{key}'"


# Sections whose keys are owned by a registry or a dataset and validated there.
_FREE_FORM = (
  "model",
  "loss",
  "loss_schedules",
  "data",
  "evals",
  "adversarial.discriminator",
  "adversarial.loss",
)

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
  from ae_jax import data, evaluators  # on use: importing this module stays light (no jax)
  from ae_jax.training import adversarial

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

  # Polyak averaging of the parameters (latent-diffusion's LitEma): 0 off; with a decay in (0, 1) the
  # averaged weights are checkpointed and are what evaluators, reconstructions, code caches and sampling use.
  c.ema_decay = 0.0
  # A discriminator trained beside the model (ae_jax.training.adversarial; none by default).
  c.adversarial = adversarial.schema()
  return c


def _check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in config.keys():
    path = f"{prefix}{key}"
    if not prefix and key in RENAMED:
      raise ConfigError(RENAMED[key])
    if key not in schema:
      hint = did_you_mean(key, schema.keys(), prefix)
      raise ConfigError(f"unknown config key '{path}'; {hint}valid keys here: {sorted(schema.keys())}")
    if isinstance(schema[key], ml_collections.ConfigDict) and path not in _FREE_FORM:
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{path}' must be a section (ConfigDict), got {config[key]!r}")
      _check_keys(config[key], schema[key], path + ".")


def complete_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a command line made (its file and --config.KEY=VALUE flags), completed, checked and locked
  before anything is written or computed; returns it.

  The flags may add keys (main's config flag accepts new ones): a loss term with its weight
  (`--config.loss.l1=0.1`), a warm-up (`--config.loss_schedules.kl=5000`), or an evaluator
  section by its type (`--config.evals.psnr=image_quality`) or as a dict of its type and options
  (`--config.evals.val="{'type': 'losses', 'split': 'validation', 'every': 500}"`), which gets the type's
  other options at their defaults (`evaluators.section`). `check_config` then rejects any unknown key,
  term or type with the closest valid one (devices are checked when training starts).
  """
  from ae_jax import evaluators

  for name in list(config.evals.keys()):
    section = config.evals[name]
    if isinstance(section, str):  # --config.evals.NAME=TYPE (an unknown TYPE is reported by check_config)
      section = ml_collections.ConfigDict({"type": section})
    if isinstance(section, ml_collections.ConfigDict) and section.get("type") in evaluators.EVALUATORS:
      complete = evaluators.section(section.type)  # every option at its default, then the given ones
      for key, value in section.items():
        try:
          complete[key] = value  # an unknown key is added here and rejected by check_config
        except TypeError as e:
          raise ConfigError(f"config.evals.{name}.{key}: {e}") from None
      section = complete
    if section is not config.evals[name]:
      del config.evals[name]  # (a str field cannot take a section)
      config.evals[name] = section
  check_config(config)
  config.lock()
  return config


def check_config(
  config: ml_collections.ConfigDict, *, num_processes: int | None = None, local_devices: int | None = None
) -> None:
  """Raises ConfigError with one line naming the bad key or value and how to fix it. Without
  num_processes and local_devices, whether the batches split over the devices is left unchecked."""
  from ae_jax import data, evaluators, losses, models
  from ae_jax.training import adversarial, optim, train

  _check_keys(config, default_config(), "")
  bad = nonfinite_paths(config.to_dict(), "config")
  if bad:
    raise ConfigError(f"{bad[0]}: every number of a config must be finite")
  if "name" not in config.model:
    raise ConfigError("config.model.name is missing; set it to a registered model, e.g. 'conv_ae'")
  models.check_keys(config.model.name, config.model.keys())
  losses.check_loss_names(config.loss)
  for name, weight in config.loss.items():
    if isinstance(weight, bool) or not isinstance(weight, int | float):
      raise ConfigError(f"config.loss.{name} is the term's weight, a number; got {weight!r}")
  train.loss_weights(config)  # loss_schedules names only terms of config.loss
  optim.check_options(config.optimizer)
  data.resolve(config.data)
  evaluators.check(config)
  if not 0.0 <= float(config.ema_decay) < 1.0:
    raise ConfigError(f"config.ema_decay must be in [0, 1) (0: no weight EMA), got {config.ema_decay}")
  adversarial.check(config)
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
  if num_processes is None or local_devices is None:
    return
  devices = num_processes * local_devices
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % devices:
      raise ConfigError(
        f"config.{key}={config[key]} does not split over {devices} devices "
        f"({num_processes} process(es) x {local_devices} local); use a multiple of {devices}"
      )
