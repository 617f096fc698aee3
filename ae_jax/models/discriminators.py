"""Discriminators for adversarial training of autoencoders (`config.adversarial.discriminator`).

A discriminator is a linen Module `__call__(x [B, H, W, C], *, train) -> logits [B, ...]` (one logit per
patch or per image, float32), registered in `DISCRIMINATORS` as models are in `MODELS`; the train step
(`ae_jax.training.adversarial`) runs it on real images and reconstructions.

* "patch_gan": taming-transformers' `NLayerDiscriminator` (pix2pix's PatchGAN, Isola et al. 2017): a
  4x4 convolution with stride 2 to `ndf` channels and LeakyReLU(0.2), then `n_layers - 1` more stride-2
  4x4 convolutions doubling the channels (at most 8 ndf), one stride-1 4x4 convolution, each followed by a
  normalisation and LeakyReLU(0.2), and a stride-1 4x4 convolution to one logit per patch; every
  convolution pads 1 pixel on each side. With norm "batch" (the reference) the normalised convolutions
  have no bias and BatchNorm synchronises its statistics over the device axis, so 8 devices compute what
  one does; "none" keeps their biases. Weights start as the reference's `weights_init`: kernels
  N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0. With n_layers 3 and ndf 64 it has 2,765,633
  parameters, as the reference's layers (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import DISCRIMINATORS
from ae_jax.models.interface import ModelSpec
from ae_jax.models.layers import small_spatial_conv

NORMS = ("batch", "none")


def register(name: str, description: str = ""):
  """Class decorator adding a discriminator Module to `DISCRIMINATORS` under `name`."""

  def add(cls: type) -> type:
    DISCRIMINATORS.register(ModelSpec(name=name, cls=cls, description=description))
    return cls

  return add


def _scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


@register("patch_gan", "taming's NLayerDiscriminator: one logit per overlapping patch")
class PatchDiscriminator(nn.Module):
  """x [B, H, W, C] -> logits [B, h, w, 1] float32 (module docstring); H, W >= 2^(n_layers + 2)."""

  ndf: int = 64
  n_layers: int = 3
  norm: str = "batch"
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if self.norm not in NORMS:
      raise ConfigError(f"patch_gan: config.adversarial.discriminator.norm must be one of {NORMS}")
    smallest = 2 ** (self.n_layers + 2)
    if x.ndim != 4 or min(x.shape[1:3]) < smallest:
      raise ConfigError(
        f"patch_gan with n_layers={self.n_layers} needs images [B, H, W, C] of at least "
        f"{smallest}x{smallest} pixels, got shape {list(x.shape)}; lower "
        "config.adversarial.discriminator.n_layers"
      )
    kernel_init = nn.initializers.normal(0.02)

    def conv(h: jax.Array, features: int, stride: int, bias: bool) -> jax.Array:
      return nn.Conv(
        features,
        (4, 4),
        stride,
        ((1, 1), (1, 1)),
        use_bias=bias,
        dtype=self.dtype,
        kernel_init=kernel_init,
        conv_general_dilated=small_spatial_conv,  # its last layers run at a few pixels
      )(h)

    def normalise(h: jax.Array) -> jax.Array:
      if self.norm == "none":
        return h
      bn = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,  # PyTorch's momentum 0.1
        epsilon=1e-5,
        axis_name=self.axis_name if train else None,
        dtype=jnp.float32,
        scale_init=_scale_init,
      )
      return bn(h.astype(jnp.float32)).astype(self.dtype)

    bias = self.norm == "none"
    h = nn.leaky_relu(conv(x.astype(self.dtype), self.ndf, 2, True), 0.2)
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      h = nn.leaky_relu(normalise(conv(h, self.ndf * min(2**n, 8), stride, bias)), 0.2)
    return conv(h, 1, 1, True).astype(jnp.float32)


def discriminator_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.adversarial.discriminator` for discriminator `name`: every option with its default."""
  return ml_collections.ConfigDict(DISCRIMINATORS.section({"name": name, **overrides}, "discriminator"))


def get_discriminator(section: Mapping[str, Any], **fields: Any) -> nn.Module:
  """The discriminator a config section names ({"name", options}), with trainer-set `fields` (dtype,
  axis_name) where the class has them."""
  options = dict(DISCRIMINATORS.section(dict(section), "config.adversarial.discriminator"))
  spec = DISCRIMINATORS.lookup(options.pop("name"), "config.adversarial.discriminator.name")
  names = {f for f in spec.cls.__dataclass_fields__}
  return spec.cls(**options, **{k: v for k, v in fields.items() if k in names})
