"""Fully connected autoencoder (seed: 784 -> 128 -> 64 -> 32 -> 16 -> 32 -> 64 -> 128 -> 784, Tanh output)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.models import interface
from ae_jax.models.layers import activation, check_input_shape


class MLPEncoder(nn.Module):
  """Flattens [batch, ...] and maps it through `hidden` Dense layers to a linear code [batch, code_dim]."""

  hidden: Sequence[int] = (128, 64, 32)
  code_dim: int = 16
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = activation(self.act)(nn.Dense(width, dtype=self.dtype)(h))
    return nn.Dense(self.code_dim, dtype=self.dtype, name="code")(h)


class MLPDecoder(nn.Module):
  """Maps a code [batch, code_dim] through `hidden` Dense layers to [batch, *output_shape]."""

  output_shape: Sequence[int]
  hidden: Sequence[int] = (32, 64, 128)
  act: str = "relu"
  output_act: str = "tanh"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    h = code
    for width in self.hidden:
      h = activation(self.act)(nn.Dense(width, dtype=self.dtype)(h))
    out = nn.Dense(math.prod(self.output_shape), dtype=self.dtype, name="output")(h)
    return activation(self.output_act)(out).reshape(code.shape[0], *self.output_shape)


@interface.register("mlp_ae", ("autoencoding",))
class MLPAutoencoder(interface.CodeAutoencoder):
  """Fully connected autoencoder; the decoder mirrors the encoder's widths.

  Input [batch, *input_shape] (any shape, flattened); outputs `code` [batch, code_dim] and `recon` with the
  input's shape. With inputs scaled to [-1, 1] the default Tanh output covers the data range.
  """

  input_shape: Sequence[int] = (28, 28, 1)
  hidden: Sequence[int] = (128, 64, 32)
  code_dim: int = 16
  act: str = "relu"
  output_act: str = "tanh"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    self.encoder = MLPEncoder(self.hidden, self.code_dim, self.act, self.dtype)
    self.decoder = MLPDecoder(
      tuple(self.input_shape), tuple(reversed(self.hidden)), self.act, self.output_act, self.dtype
    )

  def encode(self, x: jax.Array) -> jax.Array:
    """[batch, *input_shape] -> code [batch, code_dim]."""
    check_input_shape("mlp_ae", x, self.input_shape)
    return self.encoder(x)

  def decode(self, code: jax.Array) -> jax.Array:
    """code [batch, code_dim] -> reconstruction [batch, *input_shape]."""
    return self.decoder(code)
