"""Quantizers as plug-ins: `QuantizerSpec` entries of `ae_jax.core.registry.QUANTIZERS`, added by `register`.

A quantizer is a linen Module with `__call__(z [B, ..., D], *, train) -> dict` (the outputs listed in
ae_jax/quantizers/__init__.py) whose dataclass fields are its options (`axis_name` aside: the model binds
the device axis). A model configures one as a nested section with only that quantizer's options,
`config.model.quantizer = quantizer_config("rvq", num_stages=8)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from ae_jax.core.registry import QUANTIZERS, Spec

_NOT_OPTIONS = ("parent", "name", "axis_name")
Options = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizerSpec(Spec):
  """A registered quantizer.

  cls: the linen Module; options: its fields with defaults (computed from the dataclass).
  code_dim: options -> D, the channels of the encoder output it quantizes.
  codebooks: options -> the size of each codebook a latent position is coded with (one per residual
  stage), so a position carries sum(log2 K) bits.
  staged: its indices have a last axis of one index per stage ([B, ..., S]) instead of one per position.
  """

  cls: type
  code_dim: Callable[[Options], int]
  codebooks: Callable[[Options], tuple[int, ...]]
  staged: bool = False

  def __post_init__(self) -> None:
    super().__post_init__()
    if not self.options:
      fields = {f.name: f.default for f in dataclasses.fields(self.cls) if f.name not in _NOT_OPTIONS}
      object.__setattr__(self, "options", fields)

  @property
  def target(self) -> Any:
    return self.cls

  def build(self, options: Options, **kwargs: Any) -> Any:
    """The module with `options` (a section; its "name" is dropped) and `kwargs` (e.g. axis_name, name)."""
    return self.cls(**{k: v for k, v in options.items() if k != "name"}, **kwargs)


def register(
  name: str,
  *,
  code_dim: Callable[[Options], int] = lambda o: int(o["code_dim"]),
  codebooks: Callable[[Options], tuple[int, ...]] = lambda o: (int(o["num_codes"]),),
  staged: bool = False,
  description: str = "",
) -> Callable[[type], type]:
  """Class decorator registering a quantizer Module as `name` (config.model.quantizer.name); `code_dim`
  and `codebooks` default to its `code_dim` and `num_codes` options; `staged`: see QuantizerSpec. The
  Module's `__call__(z, *, train)` returns the outputs listed in ae_jax/quantizers/__init__.py and its
  `lookup(indices)` the quantized vectors of given indices (for decoding a prior's samples)."""

  def add(cls: type) -> type:
    QUANTIZERS.register(
      QuantizerSpec(
        name=name, cls=cls, code_dim=code_dim, codebooks=codebooks, staged=staged, description=description
      )
    )
    return cls

  return add


def quantizer_config(name: str = "vq", **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model.quantizer` for quantizer `name` (or `module:name`): every option with its default, then
  `overrides`, so each can be set with --config.model.quantizer.KEY=VALUE; a key of another quantizer is
  refused naming it."""
  return ml_collections.ConfigDict(QUANTIZERS.section(name, "config.model.quantizer", **overrides))
