"""Models as plug-ins: every model is a linen Module whose `__call__(x, *, train)` returns a dict of outputs.

Each module of this package registers its models with the `register` decorator (`ae_jax.models.interface`):
an entry (`ModelSpec` in `MODELS`, see ae_jax/core/registry.py) carries the class, its options (the dataclass
fields) and its abilities: what evaluators, the trainer and the inspector may ask of it beyond
reconstructing. A model may hold a nested plug-in section (the VQ-VAE's `config.model.quantizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from flax.core import FrozenDict

from ae_jax.core.errors import ConfigError, did_you_mean
from ae_jax.core.registry import MODELS
from ae_jax.models.interface import ABILITIES, ModelSpec, register

__all__ = [
  "ABILITIES",
  "MODELS",
  "ModelSpec",
  "abilities",
  "check_keys",
  "get_model",
  "model_config",
  "model_fields",
  "register",
  "upgrade_config",
  "with_ability",
]


def abilities(model: nn.Module | str) -> frozenset[str]:
  """The abilities of a registered model, by name or instance; a module of no registered class (a test's
  stand-in) has none."""
  if isinstance(model, str):
    return MODELS.lookup(model).abilities
  for spec in MODELS.values():
    if type(model) is spec.cls:
      return spec.abilities
  return frozenset()


def with_ability(ability: str) -> list[str]:
  """The names of the registered models that have `ability`, sorted."""
  return sorted(name for name, spec in MODELS.items() if ability in spec.abilities)


def model_inputs(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
  """The keyword inputs the model takes besides batch["x"]: batch["mask"] for the "masked" ability, and
  batch["label"] for the "conditional" one (zeros [batch] when the batch has none, as at initialisation)."""
  have = abilities(model)
  kwargs = {"mask": batch.get("mask")} if "masked" in have else {}
  if "conditional" in have:
    labels = batch.get("label")
    kwargs["labels"] = jnp.zeros(batch["x"].shape[:1], jnp.int32) if labels is None else labels
  return kwargs


def model_fields(name: str) -> list[str]:
  """The configurable attributes of model `name` (its dataclass fields, without Flax's own)."""
  import dataclasses

  return [f.name for f in dataclasses.fields(MODELS.lookup(name).cls) if f.name not in ("parent", "name")]


def _not_an_option(spec: ModelSpec, key: str, name: str, where: str) -> ConfigError:
  """The error for a key model `name` lacks: pointing into a nested section when it belongs there."""
  for field, reg in spec.sections.items():
    owners = reg.owners(key)
    if owners:
      return ConfigError(
        f"{where}{key} is not an option of model '{name}' but of its {reg.kind} section (for {reg.kind} "
        f"{owners}): set config.model.{field}.{key}"
      )
  hint = did_you_mean(key, spec.options)
  return ConfigError(
    f"{where}{key} is not an option of model '{name}'; {hint}its options: {list(spec.options)}"
  )


def check_keys(name: str, keys: Any, where: str = "config.model.") -> None:
  """ConfigError for the first of `keys` that is not an option of model `name` (pointing into its nested
  section when the key belongs there); "name" is always allowed."""
  spec = MODELS.lookup(name)
  fields = model_fields(name)
  for key in keys:
    if key != "name" and key not in fields:
      raise _not_an_option(spec, key, name, where)


def model_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` for model `name` (or `module:name`): every option with its default, so each can be
  overridden with `--config.model.KEY=VALUE` (typed) and a misspelled key fails at parse time. A nested
  section (e.g. `quantizer`) gets every option of the entry it names: pass a name or a section."""
  spec = MODELS.lookup(name)
  for key in overrides:
    if key not in spec.options:
      raise _not_an_option(spec, key, name, "")
  values = {**spec.defaults(), **overrides}
  for field, reg in spec.sections.items():
    values[field] = ml_collections.ConfigDict(reg.section(values[field], f"config.model.{field}"))
  return ml_collections.ConfigDict({"name": name, **values})


def _frozen(value: Any) -> Any:
  """Lists as tuples, mappings as FrozenDicts: a hashable module attribute."""
  if isinstance(value, Mapping):
    return FrozenDict({k: _frozen(v) for k, v in value.items()})
  return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `kwargs` (config.model without its `name`); nested sections
  are checked and completed with their defaults."""
  spec = MODELS.lookup(name)
  fields = model_fields(name)
  for key in kwargs:
    if key not in fields:
      raise _not_an_option(spec, key, name, "config.model.")
  for field, reg in spec.sections.items():
    if field in kwargs:
      kwargs[field] = _frozen(reg.section(kwargs[field], f"config.model.{field}"))
  return spec.cls(**kwargs)


def upgrade_config(config: dict) -> dict:
  """A saved config (a plain dict) with its `model` section in today's layout: a model whose layout
  changed (`ModelSpec.upgrade`) converts a section written by an older version; others are unchanged."""
  model = config.get("model")
  if not isinstance(model, dict) or not isinstance(model.get("name"), str):
    return config
  spec = MODELS.get(model["name"])
  if spec is None or spec.upgrade is None:
    return config
  return {**config, "model": spec.upgrade(dict(model))}
