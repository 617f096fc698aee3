"""Model registry: every model is a linen Module whose `__call__(x, *, train)` returns a dict of outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
from flax import linen as nn

from ae_jax.errors import ConfigError, did_you_mean
from ae_jax.models.conv_ae import ConvAutoencoder
from ae_jax.models.lstm_ae import LSTMEncDecAD, LSTMRepeatAE, LSTMSequenceAE, LSTMStackedAE
from ae_jax.models.mlp_ae import MLPAutoencoder
from ae_jax.models.seq_vae import SeqVAEConv
from ae_jax.models.tied_ae import TiedAutoencoder
from ae_jax.models.vae import VAEMLP, VAEConv
from ae_jax.models.vqvae import VQVAE

MODELS: dict[str, type[nn.Module]] = {
  "mlp_ae": MLPAutoencoder,
  "conv_ae": ConvAutoencoder,
  "tied_ae": TiedAutoencoder,
  "vae_mlp": VAEMLP,
  "vae_conv": VAEConv,
  "lstm_ae_repeat": LSTMRepeatAE,
  "lstm_ae_stacked": LSTMStackedAE,
  "lstm_encdec_ad": LSTMEncDecAD,
  "lstm_ae_seq": LSTMSequenceAE,
  "seq_vae_conv": SeqVAEConv,
  "vqvae": VQVAE,
}


def model_fields(name: str) -> list[str]:
  """The configurable attributes of model `name` (its dataclass fields, without Flax's own)."""
  return [f.name for f in dataclasses.fields(MODELS[name]) if f.name not in ("parent", "name")]


# Fields a config never sets: the input shape comes from the dataset, the dtype and the device axis (for
# cross-device statistics) from the trainer.
_NOT_CONFIGURED = ("parent", "name", "input_shape", "dtype", "axis_name")


def model_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` for model `name`: every option with its default, so each can be overridden with
  `--config.model.KEY=VALUE` (typed) and a misspelled key fails at parse time."""
  if name not in MODELS:
    raise ConfigError(
      f"unknown model '{name}'; {did_you_mean(name, MODELS)}registered models: {sorted(MODELS)}"
    )
  fields = {f.name: f.default for f in dataclasses.fields(MODELS[name]) if f.name not in _NOT_CONFIGURED}
  for key in overrides:
    if key not in fields:
      raise ConfigError(
        f"'{key}' is not an option of model '{name}'; {did_you_mean(key, fields)}options: {list(fields)}"
      )
  return ml_collections.ConfigDict({"name": name, **fields, **overrides})


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `kwargs` (config.model without its `name`)."""
  if name not in MODELS:
    hint = did_you_mean(name, MODELS)
    raise ConfigError(f"unknown model '{name}'; {hint}registered models: {sorted(MODELS)}")
  fields = model_fields(name)
  for key in kwargs:
    if key not in fields:
      hint = did_you_mean(key, fields)
      raise ConfigError(f"config.model.{key} is not an option of model '{name}'; {hint}its options: {fields}")
  return MODELS[name](**kwargs)
