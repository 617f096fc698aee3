"""Evaluators: small objects built from config sections, run during training and after it.

    config.evals.test = ml_collections.ConfigDict({"type": "losses", "split": "test", "every": 1000})
    config.evals.quality = ml_collections.ConfigDict({"type": "image_quality", "split": "test"})

Each section names a registered type (`EVALUATORS`), the split it reads and how often it runs (`every`
steps during training; 0: only after training), plus the type's own options. Its metrics are logged as
`<name>/<metric>` ("test/loss", "quality/ssim") and written to results.json; `config.keep_best` names one
of a periodic evaluator's metrics. A registry entry (`EvaluatorSpec`) states what the evaluator needs
(model abilities, a drawable dataset, anomaly labels), so a config that asks for what the model or data
cannot serve fails before training with the reason. `check(config)` runs those checks;
`build(config, ...)` makes the evaluators of a run; `register(EvaluatorSpec(...))` in any module adds a
type: the modules of this package are found by name (ae_jax/core/registry.py), a module of your own by
`type = "your.module:name"` (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from ae_jax.core.errors import ConfigError, did_you_mean
from ae_jax.core.registry import EVALUATORS, Spec

COMMON_KEYS = ("type", "split", "every")


@dataclasses.dataclass
class Result:
  """What one evaluation returns: scalar metrics (logged and saved), other values (saved only, e.g. a list
  of discords), the files it wrote, and lines to print after training."""

  metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  details: dict[str, Any] = dataclasses.field(default_factory=dict)
  files: list[str] = dataclasses.field(default_factory=list)
  lines: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Context:
  """What every evaluator of a run may use: the model, the objective, the opened dataset, the config,
  the workdir (None: write no files), and the start of the names of the files evaluators write there
  ("eval_<step>_" when a checkpoint is evaluated again, so a run's own files are not overwritten)."""

  model: Any
  objective: Callable
  dataset: Any
  config: ml_collections.ConfigDict
  workdir: str | None
  file_prefix: str = ""

  def output_path(self, name: str, suffix: str = ".png") -> str | None:
    """WORKDIR/<file_prefix><name><suffix>, where evaluator `name` writes its file; None when this run
    writes no files or this is not process 0."""
    if self.workdir is None or jax.process_index() != 0:
      return None
    return os.path.join(self.workdir, f"{self.file_prefix}{name}{suffix}")


# build(name, section, context) -> evaluate(rstate [replicated over local devices], step, final) -> Result
# (final: the evaluation after training, when evaluators may write their files and print their lines)
Builder = Callable[[str, ml_collections.ConfigDict, Context], Callable[[Any, int, bool], Result]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluatorSpec(Spec):
  """A registered evaluator type (`name`: the type a section names).

  options: the type's own options with defaults (beside type, split and every).
  abilities: model abilities it needs (`ae_jax.models.interface`).
  needs: (dataset spec, resolved data config) -> the reason the dataset cannot serve it, or None.
  uses_split: whether it reads `split` (anomaly detection reads the dataset's own segments).
  """

  build: Builder
  abilities: frozenset[str] = frozenset()
  needs: Callable[[Any, ml_collections.ConfigDict], str | None] = lambda spec, data: None
  uses_split: bool = True

  @property
  def target(self) -> Any:
    return self.build

  def details(self) -> list[str]:
    out = [f"needs a model with {'/'.join(sorted(self.abilities))}"] if self.abilities else []
    return out + ([] if self.uses_split else ["reads the dataset's own segments (no split)"])


def register(spec: EvaluatorSpec) -> EvaluatorSpec:
  """Adds an evaluator type (the same module may register it again; another module may not)."""
  if set(spec.options) & set(COMMON_KEYS):
    raise ValueError(f"evaluator type '{spec.name}': options may not be named {COMMON_KEYS}")
  return EVALUATORS.register(spec)


def section(type_: str, split: str = "test", every: int = 0, **options: Any) -> ml_collections.ConfigDict:
  """A config section for evaluator type `type_` with every option at its default, then `options`."""
  spec = _spec(type_, "")
  for key in options:
    if key not in spec.options:
      raise ConfigError(
        f"'{key}' is not an option of evaluator type '{type_}'; {did_you_mean(key, spec.options)}"
        f"options: {sorted(spec.options)}"
      )
  return ml_collections.ConfigDict(
    {"type": type_, "split": split, "every": every, **spec.defaults(), **options}
  )


def _spec(type_: str, name: str) -> EvaluatorSpec:
  return EVALUATORS.lookup(type_, f"config.evals.{name}.type" if name else "evaluator type")


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (before any training) for an evaluator the config, model or dataset cannot run."""
  from ae_jax import data, models

  roles = data.split_roles(config.data)
  dataset_spec, resolved = data.get_spec(config.data.name), data.resolve(config.data)
  abilities = models.abilities(config.model.name)
  for name, sec in config.evals.items():
    where = f"config.evals.{name}"
    if not isinstance(sec, ml_collections.ConfigDict) or "type" not in sec:
      raise ConfigError(f"{where} must be a section with a 'type', e.g. evaluators.section('losses')")
    spec = _spec(sec.type, name)
    for key in sec.keys():
      if key not in COMMON_KEYS and key not in spec.options:
        valid = sorted({*COMMON_KEYS, *spec.options})
        raise ConfigError(
          f"{where}.{key} is not an option of type '{sec.type}'; {did_you_mean(key, valid)}options: {valid}"
        )
    if int(sec.get("every", 0)) < 0:
      raise ConfigError(f"{where}.every must be >= 0 (0: only after training), got {sec.every}")
    if spec.uses_split and sec.get("split", "test") not in roles:
      raise ConfigError(
        f"{where}.split='{sec.get('split', 'test')}' is not a split of dataset '{config.data.name}' "
        f"(it has {list(roles)}); set config.data.validation_size=N to hold out a validation split"
      )
    missing = spec.abilities - abilities
    if missing:
      raise ConfigError(
        f"{where} (type '{sec.type}') needs a model with {sorted(missing)}, which '{config.model.name}' "
        f"does not have; remove it or use a model that does"
      )
    reason = spec.needs(dataset_spec, resolved)
    if reason:
      raise ConfigError(f"{where} (type '{sec.type}') cannot run on dataset '{config.data.name}': {reason}")


def periodic_metrics(config: ml_collections.ConfigDict) -> list[str]:
  """Metric names that periodic evaluators of type 'losses' log: the choices of config.keep_best."""
  names = []
  for name, sec in config.evals.items():
    if sec.type == "losses" and int(sec.every) > 0:
      names += [f"{name}/loss", *(f"{name}/{term}" for term in config.loss)]
  return names


def build(config: ml_collections.ConfigDict, context: Context) -> dict[str, tuple[int, Callable]]:
  """{name: (every, evaluate(rstate, step) -> Result)} for every section of config.evals."""
  out = {}
  for name, sec in config.evals.items():
    spec = _spec(sec.type, name)
    full = ml_collections.ConfigDict({"split": "test", "every": 0, **spec.defaults()})
    full.update(sec.to_dict())
    out[name] = (int(full.every), spec.build(name, full, context))
  return out


def prefixed(name: str, result: Result) -> Result:
  """`result` with its metric and detail names under `name/`."""
  return Result(
    {f"{name}/{k}": float(v) for k, v in result.metrics.items()},
    {f"{name}/{k}": v for k, v in result.details.items()},
    list(result.files),
    list(result.lines),
  )


def merge(results: list[Result]) -> Result:
  out = Result()
  for r in results:
    out.metrics.update(r.metrics)
    out.details.update(r.details)
    out.files += r.files
    out.lines += r.lines
  return out
