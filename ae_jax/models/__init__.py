"""Model registry: every model is a linen Module whose `__call__(x, *, train)` returns a dict of outputs.

Each entry (`ModelSpec`) carries the class and its abilities (`ae_jax.models.interface`): what evaluators,
the trainer and the inspector may ask of it beyond reconstructing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import ml_collections
from flax import linen as nn

from ae_jax.errors import ConfigError, did_you_mean
from ae_jax.models.conv_ae import ConvAutoencoder
from ae_jax.models.interface import ABILITIES
from ae_jax.models.lstm_ae import LSTMEncDecAD, LSTMRepeatAE, LSTMSequenceAE, LSTMStackedAE
from ae_jax.models.mlp_ae import MLPAutoencoder
from ae_jax.models.priors import ARPrior, MaskGITPrior
from ae_jax.models.seq_vae import SeqVAEConv
from ae_jax.models.tied_ae import TiedAutoencoder
from ae_jax.models.vae import VAEMLP, VAEConv
from ae_jax.models.vqvae import VQVAE


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its class and the abilities it implements (keys of `interface.ABILITIES`)."""

  cls: type[nn.Module]
  abilities: frozenset[str] = frozenset()

  def __post_init__(self) -> None:
    unknown = set(self.abilities) - set(ABILITIES)
    if unknown:
      raise ValueError(
        f"{self.cls.__name__}: unknown abilities {sorted(unknown)}; known: {sorted(ABILITIES)}"
      )


def _spec(cls: type[nn.Module], abilities: Iterable[str] = ()) -> ModelSpec:
  return ModelSpec(cls, frozenset(abilities))


_SEQUENCE = ("masked",)
MODELS: dict[str, ModelSpec] = {
  "mlp_ae": _spec(MLPAutoencoder),
  "conv_ae": _spec(ConvAutoencoder),
  "tied_ae": _spec(TiedAutoencoder),
  "vae_mlp": _spec(VAEMLP, ("generative", "likelihood")),
  "vae_conv": _spec(VAEConv, ("generative", "likelihood")),
  "lstm_ae_repeat": _spec(LSTMRepeatAE, _SEQUENCE),
  "lstm_ae_stacked": _spec(LSTMStackedAE, _SEQUENCE),
  "lstm_encdec_ad": _spec(LSTMEncDecAD, _SEQUENCE),
  "lstm_ae_seq": _spec(LSTMSequenceAE, _SEQUENCE),
  "seq_vae_conv": _spec(SeqVAEConv, _SEQUENCE),
  "vqvae": _spec(VQVAE, ("quantized",)),
  "ar_prior": _spec(ARPrior),
  "maskgit_prior": _spec(MaskGITPrior),
}


def abilities(model: nn.Module | str) -> frozenset[str]:
  """The abilities of a registered model, by name or instance; a module of no registered class (a test's
  stand-in) has none."""
  if isinstance(model, str):
    return _get(model).abilities
  for spec in MODELS.values():
    if type(model) is spec.cls:
      return spec.abilities
  return frozenset()


def _get(name: str) -> ModelSpec:
  if name not in MODELS:
    raise ConfigError(
      f"unknown model '{name}'; {did_you_mean(name, MODELS)}registered models: {sorted(MODELS)}"
    )
  return MODELS[name]


def model_fields(name: str) -> list[str]:
  """The configurable attributes of model `name` (its dataclass fields, without Flax's own)."""
  return [f.name for f in dataclasses.fields(_get(name).cls) if f.name not in ("parent", "name")]


# Fields a config never sets: the input shape comes from the dataset, the dtype and the device axis (for
# cross-device statistics) from the trainer.
_NOT_CONFIGURED = ("parent", "name", "input_shape", "dtype", "axis_name")


def model_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` for model `name`: every option with its default, so each can be overridden with
  `--config.model.KEY=VALUE` (typed) and a misspelled key fails at parse time."""
  fields = {f.name: f.default for f in dataclasses.fields(_get(name).cls) if f.name not in _NOT_CONFIGURED}
  for key in overrides:
    if key not in fields:
      raise ConfigError(
        f"'{key}' is not an option of model '{name}'; {did_you_mean(key, fields)}options: {list(fields)}"
      )
  return ml_collections.ConfigDict({"name": name, **fields, **overrides})


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `kwargs` (config.model without its `name`)."""
  fields = model_fields(name)
  for key in kwargs:
    if key not in fields:
      hint = did_you_mean(key, fields)
      raise ConfigError(f"config.model.{key} is not an option of model '{name}'; {hint}its options: {fields}")
  return _get(name).cls(**kwargs)
