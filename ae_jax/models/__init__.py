"""Model registry: every model is a linen Module whose `__call__(x, *, train)` returns a dict of outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import linen as nn

from ae_jax.config import did_you_mean
from ae_jax.models.conv_ae import ConvAutoencoder
from ae_jax.models.mlp_ae import MLPAutoencoder

MODELS: dict[str, type[nn.Module]] = {
  "mlp_ae": MLPAutoencoder,
  "conv_ae": ConvAutoencoder,
}


def model_fields(name: str) -> list[str]:
  """The configurable attributes of model `name` (its dataclass fields, without Flax's own)."""
  return [f.name for f in dataclasses.fields(MODELS[name]) if f.name not in ("parent", "name")]


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `kwargs` (config.model without its `name`)."""
  if name not in MODELS:
    hint = did_you_mean(name, MODELS)
    raise ValueError(f"unknown model '{name}'; {hint}registered models: {sorted(MODELS)}")
  fields = model_fields(name)
  for key in kwargs:
    if key not in fields:
      hint = did_you_mean(key, fields)
      raise ValueError(f"config.model.{key} is not an option of model '{name}'; {hint}its options: {fields}")
  return MODELS[name](**kwargs)
