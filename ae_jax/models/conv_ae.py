"""Convolutional autoencoder for 28x28 images (seed architecture, 16-dim code, Tanh output).

Encoder: Conv(8,3,s2,p1) 28->14, Conv(16,3,s2,p1) 14->7, Conv(32,3,s2,p0) 7->3, Conv(64,3) 3->1, then
Dense 32 -> Dense 16 (code). The decoder mirrors it: Dense 32 -> 64, reshape to 1x1x64, ConvTranspose(32,3)
1->3, ConvTranspose(16,3,s2) 3->7, ConvTranspose(8,3,s2,p1,op1) 7->14, ConvTranspose(1,3,s2,p1,op1) 14->28.

PyTorch's ConvTranspose2d(k, s, p, output_padding=op) equals lax.conv_transpose with explicit padding
(k-1-p, k-1-p+op); `_torch_conv_transpose_padding` converts, and a test checks every intermediate shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.models.layers import activation, check_input_shape

# (stride, PyTorch padding) of the four encoder convolutions, kernel 3: the geometry that takes 28 to 1.
_ENCODER_GEOMETRY = ((2, 1), (2, 1), (2, 0), (1, 0))
# (stride, PyTorch padding, output_padding) of the four decoder transposed convolutions, kernel 3.
_DECODER_GEOMETRY = ((1, 0, 0), (2, 0, 0), (2, 1, 1), (2, 1, 1))
INPUT_HW = (28, 28)


def _torch_conv_transpose_padding(kernel: int, padding: int, output_padding: int) -> tuple[int, int]:
  return (kernel - 1 - padding, kernel - 1 - padding + output_padding)


class ConvEncoder(nn.Module):
  """[batch, 28, 28, C] -> features [batch, dense[-1]] (the seed's encoder without its code layer)."""

  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  act: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation(self.act)
    h = x
    for ch, (stride, pad) in zip(self.channels, _ENCODER_GEOMETRY, strict=True):
      h = act(nn.Conv(ch, (3, 3), strides=stride, padding=((pad, pad), (pad, pad)), dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], -1)  # [batch, 1 * 1 * channels[-1]]
    for width in self.dense:
      h = act(nn.Dense(width, dtype=self.dtype)(h))
    return h


class ConvDecoder(nn.Module):
  """[batch, features] -> image [batch, 28, 28, out_channels] through the mirrored transposed convolutions."""

  out_channels: int = 1
  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  act: str = "relu"
  output_act: str = "tanh"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = activation(self.act)
    h = z
    for width in (*reversed(self.dense), self.channels[-1]):
      h = act(nn.Dense(width, dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], 1, 1, self.channels[-1])
    outs = (*reversed(self.channels[:-1]), self.out_channels)
    for i, (ch, (stride, pad, out_pad)) in enumerate(zip(outs, _DECODER_GEOMETRY, strict=True)):
      p = _torch_conv_transpose_padding(3, pad, out_pad)
      h = nn.ConvTranspose(ch, (3, 3), strides=(stride, stride), padding=(p, p), dtype=self.dtype)(h)
      h = act(h) if i < len(outs) - 1 else h
    return activation(self.output_act)(h)


class ConvAutoencoder(nn.Module):
  """The seed's convolutional autoencoder: [batch, 28, 28, C] -> code [batch, code_dim] -> recon."""

  input_shape: Sequence[int] = (28, 28, 1)
  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  code_dim: int = 16
  act: str = "relu"
  output_act: str = "tanh"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    if tuple(self.input_shape[:2]) != INPUT_HW or len(self.input_shape) != 3:
      raise ValueError(
        f"conv_ae is built for [28, 28, C] images but config.model.input_shape is {list(self.input_shape)}; "
        "its four stride/padding settings take 28x28 to 1x1: resize the data to 28x28 or use mlp_ae"
      )
    if len(self.channels) != 4:
      raise ValueError(
        f"conv_ae needs 4 conv channel sizes (one per layer), got channels={list(self.channels)}"
      )
    self.encoder = ConvEncoder(self.channels, self.dense, self.act, self.dtype)
    self.code_layer = nn.Dense(self.code_dim, dtype=self.dtype)
    self.decoder = ConvDecoder(
      self.input_shape[-1], self.channels, self.dense, self.act, self.output_act, self.dtype
    )

  def encode(self, x: jax.Array) -> jax.Array:
    """[batch, 28, 28, C] -> code [batch, code_dim]."""
    check_input_shape("conv_ae", x, self.input_shape, "conv_ae takes 28x28 images with channels last (NHWC)")
    return self.code_layer(self.encoder(x))

  def decode(self, code: jax.Array) -> jax.Array:
    """code [batch, code_dim] -> reconstruction [batch, 28, 28, C]."""
    return self.decoder(code)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    code = self.encode(x)
    return {"code": code, "recon": self.decode(code)}
