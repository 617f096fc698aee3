"""Tied-weight autoencoder: each decoder layer multiplies by the transpose of the matching encoder kernel.

784 -> 196 -> 81 -> 49 -> 81 -> 196 -> 784 by default (sigmoid hidden layers, linear output), with the
encoder's three kernels as the only weight matrices: the decoder owns nothing but its biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.models import interface
from ae_jax.models.layers import activation, check_input_shape


class _Affine(nn.Module):
  """The parameters of one encoder layer: kernel [d_in, d_out] and bias [d_out] (float32)."""

  d_in: int
  d_out: int

  def setup(self) -> None:
    self.kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.d_in, self.d_out), jnp.float32)
    self.bias = self.param("bias", nn.initializers.zeros_init(), (self.d_out,), jnp.float32)


class _Bias(nn.Module):
  """The only parameter of one decoder layer: bias [d]."""

  d: int

  def setup(self) -> None:
    self.bias = self.param("bias", nn.initializers.zeros_init(), (self.d,), jnp.float32)


class TiedEncoder(nn.Module):
  """Flattens [batch, ...] to [batch, widths[0]] and maps it through layers to the code [batch, widths[-1]].

  Layer i (`layer_{i}`) computes act(h @ kernel_i + bias_i) with kernel_i [widths[i], widths[i + 1]]; the
  code is activated like every other layer.
  """

  widths: Sequence[int]
  act: str = "sigmoid"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    pairs = zip(self.widths[:-1], self.widths[1:], strict=True)
    self.layers = [_Affine(d_in, d_out, name=f"layer_{i}") for i, (d_in, d_out) in enumerate(pairs)]

  def kernels(self) -> list[jax.Array]:
    """The kernels in encoder order: [widths[i], widths[i + 1]] for each layer i."""
    return [layer.kernel for layer in self.layers]

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for layer in self.layers:
      h = activation(self.act)(h @ layer.kernel.astype(self.dtype) + layer.bias.astype(self.dtype))
    return h


class TiedDecoder(nn.Module):
  """Maps a code [batch, widths[-1]] back to [batch, widths[0]] with the encoder's kernels transposed.

  Decoder layer j (`layer_{j}`) computes h @ kernels[-1 - j].T + bias_j, followed by `act`, except the last
  layer, which uses `output_act`. It has biases only; the kernels are passed in by the caller.
  """

  widths: Sequence[int]
  act: str = "sigmoid"
  output_act: str = "identity"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    out_widths = tuple(reversed(self.widths[:-1]))
    self.layers = [_Bias(d, name=f"layer_{j}") for j, d in enumerate(out_widths)]

  def __call__(self, code: jax.Array, kernels: Sequence[jax.Array]) -> jax.Array:
    h = code.astype(self.dtype)
    for j, (layer, kernel) in enumerate(zip(self.layers, reversed(kernels), strict=True)):
      act = self.output_act if j == len(self.layers) - 1 else self.act
      h = activation(act)(h @ kernel.astype(self.dtype).T + layer.bias.astype(self.dtype))
    return h


@interface.register("tied_ae", ("autoencoding",))
class TiedAutoencoder(interface.CodeAutoencoder):
  """Fully connected autoencoder whose decoder reuses the encoder's kernels, transposed.

  Input [batch, *input_shape] (flattened to d_0 = prod(input_shape)); `dims` are the encoder's output
  widths (d_1, ..., d_n), the last being the code. Parameters: `encoder/layer_{i}/{kernel,bias}` with kernel
  [d_i, d_{i+1}], and `decoder/layer_{j}/bias` [d_{n-1-j}]; decoder layer j uses the transpose of encoder
  kernel n-1-j (the last encoder kernel first), so gradients from both halves reach each kernel.
  `act` follows every encoder layer, the code layer included (as in the source request: sigmoid after each
  encoder layer), and every decoder layer but the last, which uses `output_act` (linear by default).
  Outputs `code` [batch, d_n] and `recon` with the input's shape.
  """

  input_shape: Sequence[int] = (28, 28, 1)
  dims: Sequence[int] = (196, 81, 49)
  act: str = "sigmoid"
  output_act: str = "identity"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    if not self.dims:
      raise ConfigError("tied_ae needs at least one width in config.model.dims, e.g. (196, 81, 49)")
    widths = (math.prod(self.input_shape), *self.dims)
    self.encoder = TiedEncoder(widths, self.act, self.dtype)
    self.decoder = TiedDecoder(widths, self.act, self.output_act, self.dtype)

  def encode(self, x: jax.Array) -> jax.Array:
    """[batch, *input_shape] -> code [batch, dims[-1]]."""
    check_input_shape("tied_ae", x, self.input_shape)
    return self.encoder(x)

  def decode(self, code: jax.Array) -> jax.Array:
    """code [batch, dims[-1]] -> reconstruction [batch, *input_shape]."""
    return self.decoder(code, self.encoder.kernels()).reshape(code.shape[0], *self.input_shape)
