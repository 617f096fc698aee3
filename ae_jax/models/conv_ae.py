"""Convolutional autoencoder: the seed's 28x28 architecture (16-dim code, Tanh output) or a general layout.

Seed geometry (`num_downsamples=0`, the default; 28x28 images only):
  Encoder: Conv(8,3,s2,p1) 28->14, Conv(16,3,s2,p1) 14->7, Conv(32,3,s2,p0) 7->3, Conv(64,3) 3->1, then
  Dense 32 -> Dense 16 (code). The decoder mirrors it: Dense 32 -> 64, reshape to 1x1x64, ConvTranspose(32,3)
  1->3, ConvTranspose(16,3,s2) 3->7, ConvTranspose(8,3,s2,p1,op1) 7->14, ConvTranspose(1,3,s2,p1,op1) 14->28.

General layout (`num_downsamples=n > 0`; any H and W divisible by 2^n):
  Encoder: n convolutions Conv(channels[i], 3, s2, p1), each halving H and W, so [B, H, W, C] becomes the
  grid [B, H/2^n, W/2^n, channels[-1]], flattened into Dense(dense...) -> Dense(code_dim). `channels` holds
  one width per level (len(channels) == n). The decoder mirrors it: Dense(reversed dense...) ->
  Dense(H/2^n * W/2^n * channels[-1]), reshape to the grid, then n ConvTranspose(3, s2, p1, op1), each
  doubling H and W, with channels reversed(channels[:-1]) and finally C.

PyTorch's ConvTranspose2d(k, s, p, output_padding=op) equals lax.conv_transpose with explicit padding
(k-1-p, k-1-p+op); `_torch_conv_transpose_padding` converts, and a test checks every intermediate shape.
The transposed convolutions are `nn.ConvTranspose` or the same layer computed as a sub-pixel convolution
(`upsample`, see `ae_jax.models.layers.SubpixelConvTranspose`); both have the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.models import interface
from ae_jax.models.layers import activation, check_input_shape, conv_transpose, resolve_upsample

# (stride, PyTorch padding) of the four encoder convolutions, kernel 3: the geometry that takes 28 to 1.
_ENCODER_GEOMETRY = ((2, 1), (2, 1), (2, 0), (1, 0))
# (stride, PyTorch padding, output_padding) of the four decoder transposed convolutions, kernel 3.
_DECODER_GEOMETRY = ((1, 0, 0), (2, 0, 0), (2, 1, 1), (2, 1, 1))
# (stride, PyTorch padding, output_padding) of each level of the general layout: H -> H/2 and back.
_LEVEL_DOWN = (2, 1)
_LEVEL_UP = (2, 1, 1)
INPUT_HW = (28, 28)


def cpu_upsample(num_downsamples: int) -> str:
  """What upsample="auto" picks on XLA:CPU: nn.ConvTranspose for the seed geometry, whose train step (batch
  128, 28x28) is no faster in the sub-pixel form, and the sub-pixel form for the general layout, whose train
  step it makes 1.5x (28x28, n=2) to 5x (64x64, n=3) faster."""
  return "transpose" if num_downsamples == 0 else "subpixel"


def _torch_conv_transpose_padding(kernel: int, padding: int, output_padding: int) -> tuple[int, int]:
  return (kernel - 1 - padding, kernel - 1 - padding + output_padding)


def conv_grid(
  model: str, input_shape: Sequence[int], channels: Sequence[int], num_downsamples: int
) -> tuple[int, int]:
  """Checks a conv AE's image shape and channels against its layout; returns the code grid (h, w).

  num_downsamples=0: the seed geometry, [28, 28, C] images and 4 channel sizes, grid (1, 1).
  num_downsamples=n > 0: [H, W, C] with H and W divisible by 2^n and n channel sizes, grid (H/2^n, W/2^n).
  """
  if num_downsamples < 0:
    raise ConfigError(f"{model}: config.model.num_downsamples must be >= 0, got {num_downsamples}")
  if len(input_shape) != 3:
    raise ConfigError(f"{model} takes [H, W, C] images but config.model.input_shape is {list(input_shape)}")
  if num_downsamples == 0:
    if tuple(input_shape[:2]) != INPUT_HW:
      raise ConfigError(
        f"{model} with num_downsamples=0 (the seed geometry) is built for [28, 28, C] images but "
        f"config.model.input_shape is {list(input_shape)}; its four stride/padding settings take 28x28 to "
        "1x1: resize the data to 28x28, set config.model.num_downsamples=n (H and W divisible by 2^n) or "
        f"use {'vae_mlp' if model.startswith('vae') else 'mlp_ae'}"
      )
    if len(channels) != 4:
      raise ConfigError(
        f"{model} with num_downsamples=0 needs 4 conv channel sizes (one per layer), got "
        f"channels={list(channels)}"
      )
    return (1, 1)
  factor = 2**num_downsamples
  h, w = input_shape[:2]
  if h % factor or w % factor:
    raise ConfigError(
      f"{model} with config.model.num_downsamples={num_downsamples} needs H and W divisible by "
      f"2^{num_downsamples} = {factor}, got input_shape {list(input_shape)} ({h}x{w}); choose "
      "num_downsamples so that 2^num_downsamples divides both or resize the data"
    )
  if len(channels) != num_downsamples:
    raise ConfigError(
      f"{model} with config.model.num_downsamples={num_downsamples} needs one channel size per level: set "
      f"config.model.channels to {num_downsamples} values, got channels={list(channels)}"
    )
  return (h // factor, w // factor)


class ConvEncoder(nn.Module):
  """[batch, H, W, C] -> features [batch, dense[-1]] (the conv AE's encoder without its code layer).

  num_downsamples=0: the seed's four convolutions (28x28 -> 1x1); n > 0: n stride-2 convolutions to
  [batch, H/2^n, W/2^n, channels[-1]]. The grid is flattened into the Dense layers.
  """

  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  act: str = "relu"
  num_downsamples: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation(self.act)
    geometry = _ENCODER_GEOMETRY if self.num_downsamples == 0 else (_LEVEL_DOWN,) * self.num_downsamples
    h = x
    for ch, (stride, pad) in zip(self.channels, geometry, strict=True):
      h = act(nn.Conv(ch, (3, 3), strides=stride, padding=((pad, pad), (pad, pad)), dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], -1)  # [batch, grid_h * grid_w * channels[-1]]
    for width in self.dense:
      h = act(nn.Dense(width, dtype=self.dtype)(h))
    return h


class ConvDecoder(nn.Module):
  """[batch, features] -> image [batch, H, W, out_channels] through the mirrored transposed convolutions.

  Dense layers to grid[0] * grid[1] * channels[-1], reshaped to [batch, *grid, channels[-1]], then the seed's
  four transposed convolutions (num_downsamples=0, grid (1, 1): 1 -> 3 -> 7 -> 14 -> 28) or n stride-2 ones
  (grid * 2^n). `upsample`: "auto", "subpixel" or "transpose" (see `ae_jax.models.layers.resolve_upsample`).
  """

  out_channels: int = 1
  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  act: str = "relu"
  output_act: str = "tanh"
  num_downsamples: int = 0
  grid: Sequence[int] = (1, 1)
  upsample: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = activation(self.act)
    upsample = resolve_upsample(self.upsample, "conv decoder", cpu_upsample(self.num_downsamples))
    gh, gw = self.grid
    h = z
    for width in (*reversed(self.dense), gh * gw * self.channels[-1]):
      h = act(nn.Dense(width, dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], gh, gw, self.channels[-1])
    geometry = _DECODER_GEOMETRY if self.num_downsamples == 0 else (_LEVEL_UP,) * self.num_downsamples
    outs = (*reversed(self.channels[:-1]), self.out_channels)
    for i, (ch, (stride, pad, out_pad)) in enumerate(zip(outs, geometry, strict=True)):
      p = _torch_conv_transpose_padding(3, pad, out_pad)
      layer = conv_transpose(upsample, ch, (3, 3), (stride, stride), (p, p), self.dtype, f"ConvTranspose_{i}")
      h = layer(h)
      h = act(h) if i < len(outs) - 1 else h
    return activation(self.output_act)(h)


@interface.register("conv_ae", ("autoencoding",))
class ConvAutoencoder(interface.CodeAutoencoder):
  """Convolutional autoencoder: [batch, H, W, C] -> code [batch, code_dim] -> recon [batch, H, W, C].

  num_downsamples=0 (default): the seed's 28x28 geometry with 4 `channels`; n > 0: the general layout with
  n stride-2 levels (one entry of `channels` each), for any H and W divisible by 2^n (see the module doc).
  upsample: "subpixel" or "transpose" force the decoder's transposed convolutions' form (same parameters and
  function); "auto" is nn.ConvTranspose on accelerators and, on XLA:CPU, whichever is faster there for the
  layout (`cpu_upsample`: nn.ConvTranspose for the seed geometry, the sub-pixel form for the general one).
  """

  input_shape: Sequence[int] = (28, 28, 1)
  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  code_dim: int = 16
  act: str = "relu"
  output_act: str = "tanh"
  num_downsamples: int = 0
  upsample: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    grid = conv_grid("conv_ae", self.input_shape, self.channels, self.num_downsamples)
    resolve_upsample(self.upsample, "conv_ae")
    self.encoder = ConvEncoder(self.channels, self.dense, self.act, self.num_downsamples, self.dtype)
    self.code_layer = nn.Dense(self.code_dim, dtype=self.dtype)
    self.decoder = ConvDecoder(
      self.input_shape[-1],
      self.channels,
      self.dense,
      self.act,
      self.output_act,
      self.num_downsamples,
      grid,
      self.upsample,
      self.dtype,
    )

  def encode(self, x: jax.Array) -> jax.Array:
    """[batch, H, W, C] -> code [batch, code_dim]."""
    check_input_shape("conv_ae", x, self.input_shape, "conv_ae takes images with channels last (NHWC)")
    return self.code_layer(self.encoder(x))

  def decode(self, code: jax.Array) -> jax.Array:
    """code [batch, code_dim] -> reconstruction [batch, H, W, C]."""
    return self.decoder(code)
