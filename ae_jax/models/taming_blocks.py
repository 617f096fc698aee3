"""The convolutional encoder and decoder of taming-transformers' VQGAN and latent-diffusion's autoencoders.

The architecture of `taming/modules/diffusionmodules/model.py` (Esser et al. 2021; the same `Encoder` and
`Decoder` latent-diffusion's first stages use, Rombach et al. 2022), channels last (NHWC):

* Normalize: GroupNorm(`norm_groups` = 32 groups, eps 1e-6, learned scale and bias); nonlinearity: swish.
* ResnetBlock(c_out): h = conv3x3(swish(norm1(x))); h = conv3x3(dropout(swish(norm2(h)))); x + h, where x
  goes through a 1x1 "nin_shortcut" when the channels change.
* AttnBlock: single-head self-attention over the H*W positions: q, k, v and proj_out are 1x1 convolutions
  of norm(x), the logits q.k scaled by C^-0.5; x + proj_out(softmax(q k^T) v).
* Downsample: zero padding (0, 1) bottom and right, then conv3x3 stride 2 (H -> H/2); with
  `resamp_with_conv=False` a 2x2 average pool. Upsample: nearest x2, then conv3x3 (or none).
* Encoder: conv_in (ch) -> for level i of len(ch_mult): num_res_blocks ResnetBlocks to ch * ch_mult[i], each
  followed by an AttnBlock where the level's resolution is in `attn_resolutions`, then a Downsample
  (not after the last level) -> mid (ResnetBlock, AttnBlock, ResnetBlock; `mid_attention=False` drops
  the AttnBlock, an ae-jax option the reference lacks) -> norm_out -> swish -> conv_out to z_channels
  (2 z_channels with double_z: the moments of a Gaussian).
* Decoder: conv_in (z -> ch * ch_mult[-1]) -> mid -> for level i from the last to the first:
  num_res_blocks + 1 ResnetBlocks (attention as the encoder's), then an Upsample (not after level 0) ->
  norm_out -> swish -> conv_out to out_ch (linear output).

Level i has resolution `resolution` / 2^i (the reference's `curr_res`), which decides where attention goes;
`resolution` is the training image side (taming's `ddconfig.resolution`). Parameter paths mirror the
reference's state-dict keys: encoder "down_1/block_0/norm1/scale" is `encoder.down.1.block.0.norm1.weight`,
"mid/attn_1/q/kernel" is `mid.attn_1.q.weight` (kernels [kh, kw, in, out], PyTorch's [out, in, kh, kw]).

Numerics: convolutions and attention compute in `dtype` with float32 parameters; GroupNorm takes float32
inputs (statistics in float32) and returns `dtype`; attention logits and softmax are float32. Convolution
kernels start as PyTorch's Conv2d default (uniform within +-1/sqrt(fan_in)); biases start at zero (PyTorch
draws them from the same uniform).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError

# PyTorch's Conv2d weight default, kaiming_uniform(a=sqrt(5)): uniform within +-1/sqrt(fan_in).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
NORM_EPS = 1e-6


def swish(x: jax.Array) -> jax.Array:
  """x * sigmoid(x) (the reference's `nonlinearity`): any shape."""
  return x * nn.sigmoid(x)


def conv(
  features: int, kernel: int, dtype: jnp.dtype, name: str | None = None, stride: int = 1, padding=None
) -> nn.Conv:
  """A kernel x kernel convolution with PyTorch's "same" padding (kernel // 2) unless `padding` is given,
  kernels initialised as PyTorch's; `name` None inside `setup` (the attribute names it)."""
  pad = kernel // 2
  padding = ((pad, pad), (pad, pad)) if padding is None else padding
  return nn.Conv(
    features, (kernel, kernel), (stride, stride), padding, dtype=dtype, kernel_init=TORCH_CONV_INIT, name=name
  )


def group_norm(x: jax.Array, groups: int, dtype: jnp.dtype, name: str) -> jax.Array:
  """GroupNorm(groups, eps 1e-6, affine) of x [B, H, W, C] computed from float32 -> [B, H, W, C] of dtype.
  The variance is PyTorch's two-pass E[(x - mean)^2], not Flax's default E[x^2] - mean^2, which loses
  precision when the mean is large against the spread."""
  norm = nn.GroupNorm(num_groups=groups, epsilon=NORM_EPS, dtype=dtype, use_fast_variance=False, name=name)
  return norm(x.astype(jnp.float32))


def level_channels(ch: int, ch_mult: Sequence[int]) -> tuple[int, ...]:
  """Output channels of each level: ch * ch_mult[i]."""
  return tuple(int(ch * m) for m in ch_mult)


def level_resolutions(resolution: int, num_levels: int) -> tuple[int, ...]:
  """The resolution of each level (the reference's `curr_res`): resolution // 2^i for i < num_levels."""
  return tuple(resolution // 2**i for i in range(num_levels))


def check_architecture(
  model: str,
  ch: int,
  ch_mult: Sequence[int],
  norm_groups: int,
  shape: Sequence[int],
  attn_resolutions: Sequence[int] = (),
  resolution: int = 0,
) -> int:
  """ConfigError unless `ch` and every level's channels divide into norm_groups groups, the image sides
  [H, W] divide by the downsampling factor 2^(len(ch_mult) - 1) and every attention resolution is the
  resolution of a level (`resolution`, 0: the input height, halved per level); returns that factor."""
  if not ch_mult or ch < 1 or min(ch_mult) < 1:
    raise ConfigError(
      f"{model}: config.model.ch_mult needs positive multipliers and ch >= 1, got {ch}, {ch_mult}"
    )
  widths = level_channels(ch, ch_mult)
  if norm_groups < 1 or any(c % norm_groups for c in (ch, *widths)):
    raise ConfigError(
      f"{model}: GroupNorm with config.model.norm_groups={norm_groups} needs ch={ch} and every level's "
      f"channels (ch * ch_mult = {list(widths)}) divisible by {norm_groups}; change ch or norm_groups"
    )
  factor = 2 ** (len(ch_mult) - 1)
  h, w = shape[:2]
  if h % factor or w % factor:
    raise ConfigError(
      f"{model} with {len(ch_mult)} levels (ch_mult={list(ch_mult)}) downsamples by {factor}: H and W must "
      f"be divisible by {factor}, got input_shape {list(shape)}; shorten ch_mult or resize the data"
    )
  levels = level_resolutions(int(resolution or h), len(ch_mult))
  unused = [r for r in attn_resolutions if r not in levels]
  if unused:
    raise ConfigError(
      f"{model}: config.model.attn_resolutions {list(attn_resolutions)} has {unused}, the resolution of no "
      f"level (the levels' resolutions are {list(levels)}, from config.model.resolution={resolution} "
      f"(0: the input height {h})); choose attn_resolutions among them or set config.model.resolution"
    )
  return factor


class ResnetBlock(nn.Module):
  """[B, H, W, C_in] -> [B, H, W, out_channels]: the pre-activation residual block (module docstring)."""

  out_channels: int
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    h = conv(self.out_channels, 3, self.dtype, "conv1")(
      swish(group_norm(x, self.norm_groups, self.dtype, "norm1"))
    )
    h = swish(group_norm(h, self.norm_groups, self.dtype, "norm2"))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(self.out_channels, 3, self.dtype, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, self.dtype, "nin_shortcut")(x)
    return x.astype(h.dtype) + h


class AttnBlock(nn.Module):
  """[B, H, W, C] -> same: x + proj_out(single-head self-attention of norm(x) over the H*W positions)."""

  norm_groups: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, height, width, c = x.shape
    h = group_norm(x, self.norm_groups, self.dtype, "norm")
    q, k, v = (conv(c, 1, self.dtype, name)(h).reshape(b, height * width, c) for name in ("q", "k", "v"))
    logits = jnp.einsum("bic,bjc->bij", q.astype(jnp.float32), k.astype(jnp.float32)) * c**-0.5
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, HW (queries), HW (keys)]
    out = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, height, width, c)
    return x.astype(out.dtype) + conv(c, 1, self.dtype, "proj_out")(out)


class Downsample(nn.Module):
  """[B, H, W, C] -> [B, H/2, W/2, C]: pad (0, 1) bottom/right + conv3x3 stride 2, or a 2x2 average pool."""

  with_conv: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if not self.with_conv:
      return nn.avg_pool(x, (2, 2), (2, 2))
    return conv(x.shape[-1], 3, self.dtype, "conv", stride=2, padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
  """[B, H, W, C] -> [B, 2H, 2W, C]: nearest-neighbour x2, then conv3x3 (with_conv)."""

  with_conv: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(x.shape[-1], 3, self.dtype, "conv")(x) if self.with_conv else x


class Level(nn.Module):
  """One resolution level: blocks "block_j" (each followed by "attn_j" with `attention`), then "downsample"
  or "upsample" (`resample`: "down", "up" or "" for none). [B, H, W, C] -> [B, H', W', out_channels]."""

  out_channels: int
  num_blocks: int
  attention: bool = False
  resample: str = ""
  resamp_with_conv: bool = True
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for j in range(self.num_blocks):
      x = ResnetBlock(self.out_channels, self.dropout, self.norm_groups, self.dtype, name=f"block_{j}")(
        x, train
      )
      if self.attention:
        x = AttnBlock(self.norm_groups, self.dtype, name=f"attn_{j}")(x)
    if self.resample == "down":
      x = Downsample(self.resamp_with_conv, self.dtype, name="downsample")(x)
    elif self.resample == "up":
      x = Upsample(self.resamp_with_conv, self.dtype, name="upsample")(x)
    return x


class Mid(nn.Module):
  """The middle of both networks: block_1, attn_1 (unless attention=False), block_2 at constant shape
  [B, h, w, C]."""

  dropout: float = 0.0
  norm_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  attention: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    x = ResnetBlock(c, self.dropout, self.norm_groups, self.dtype, name="block_1")(x, train)
    if self.attention:
      x = AttnBlock(self.norm_groups, self.dtype, name="attn_1")(x)
    return ResnetBlock(c, self.dropout, self.norm_groups, self.dtype, name="block_2")(x, train)


class ArchitectureOptions(nn.Module):
  """The options the encoder and decoder share (the reference's `ddconfig`)."""

  ch: int = 128
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  resolution: int = 256
  z_channels: int = 256
  dropout: float = 0.0
  resamp_with_conv: bool = True
  norm_groups: int = 32
  mid_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  def _level(self, name: str, i: int, blocks: int, resample: str) -> Level:
    """Level i named `name`: `blocks` ResnetBlocks to ch * ch_mult[i], with attention where the level's
    resolution is in attn_resolutions, then `resample` ("down", "up" or "")."""
    attention = level_resolutions(self.resolution, len(self.ch_mult))[i] in tuple(self.attn_resolutions)
    out = level_channels(self.ch, self.ch_mult)[i]
    options = (self.resamp_with_conv, self.dropout, self.norm_groups, self.dtype)
    return Level(out, blocks, attention, resample, *options, name=name)


class Encoder(ArchitectureOptions):
  """[B, H, W, C] -> [B, H/f, W/f, z_channels] (2 z_channels with double_z), f = 2^(len(ch_mult) - 1)."""

  double_z: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    last = len(self.ch_mult) - 1
    h = conv(self.ch, 3, self.dtype, "conv_in")(x)
    for i in range(last + 1):
      h = self._level(f"down_{i}", i, self.num_res_blocks, "down" if i < last else "")(h, train)
    h = Mid(self.dropout, self.norm_groups, self.dtype, self.mid_attention, name="mid")(h, train)
    h = swish(group_norm(h, self.norm_groups, self.dtype, "norm_out"))
    return conv(2 * self.z_channels if self.double_z else self.z_channels, 3, self.dtype, "conv_out")(h)


class Decoder(ArchitectureOptions):
  """z [B, h, w, z_channels] -> [B, h f, w f, out_ch] (linear output), f = 2^(len(ch_mult) - 1)."""

  out_ch: int = 3

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    h = conv(level_channels(self.ch, self.ch_mult)[-1], 3, self.dtype, "conv_in")(z)
    h = Mid(self.dropout, self.norm_groups, self.dtype, self.mid_attention, name="mid")(h, train)
    for i in reversed(range(len(self.ch_mult))):
      h = self._level(f"up_{i}", i, self.num_res_blocks + 1, "up" if i > 0 else "")(h, train)
    h = swish(group_norm(h, self.norm_groups, self.dtype, "norm_out"))
    return conv(self.out_ch, 3, self.dtype, "conv_out")(h)


def architecture_options(model: nn.Module) -> dict:
  """The `ArchitectureOptions` fields of a model that holds them (VQGAN, KLAutoencoder), with `resolution`
  resolved (0: the input height) and sequences as tuples: the keyword arguments of Encoder and Decoder."""
  fields = (
    "ch",
    "num_res_blocks",
    "z_channels",
    "dropout",
    "resamp_with_conv",
    "norm_groups",
    "mid_attention",
    "dtype",
  )
  options = {name: getattr(model, name) for name in fields}
  options["ch_mult"] = tuple(int(m) for m in model.ch_mult)
  options["attn_resolutions"] = tuple(int(r) for r in model.attn_resolutions)
  options["resolution"] = int(model.resolution or model.input_shape[0])
  return options
