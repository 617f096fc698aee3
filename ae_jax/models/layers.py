"""Building blocks shared by several model families: activations, input checks, transposed convolutions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding

from ae_jax.core.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": nn.relu,
  "tanh": jnp.tanh,
  "sigmoid": nn.sigmoid,
  "gelu": nn.gelu,
  "elu": nn.elu,
  "identity": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation by name, with an error that lists the valid names."""
  if name not in ACTIVATIONS:
    raise ConfigError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def check_input_shape(model: str, x: jax.Array, expected: Sequence[int], hint: str = "") -> None:
  """Raises one clear ValueError when `x` [batch, *expected] has the wrong per-example shape."""
  if tuple(x.shape[1:]) != tuple(expected):
    raise ConfigError(
      f"{model} expects inputs of shape [batch, {', '.join(map(str, expected))}] but got "
      f"{list(x.shape)}; {hint or 'set config.model.input_shape to the data shape'}"
    )


# ----------------------------------------------------------------------------- transposed convolutions

UPSAMPLERS = ("auto", "subpixel", "transpose")


def _phase_taps(kernel: int, stride: int, lo: int) -> tuple[np.ndarray, int]:
  """The sub-pixel form of one spatial dimension of a transposed convolution.

  nn.ConvTranspose (lax.conv_transpose, kernel not flipped) with stride s and padding (lo, hi) computes
  y[o] = sum_t x[(o + t - lo) / s] w[t] over the taps t with (o + t - lo) divisible by s. Writing o = s q + a,
  output phase a is the stride-1 correlation y_a[q] = sum_u x[q + offset + u] w[taps[u, a]] of x with a window
  of `width` taps starting at `offset`. Returns (taps [width, s] with values in [0, kernel], where `kernel`
  marks a tap no kernel entry reaches, offset).
  """
  offset = -(lo // stride)  # ceil(-lo / s): the first input the window reaches
  width = (stride + kernel - 2 - lo) // stride - offset + 1
  taps = np.full((width, stride), kernel, np.int32)
  for u, a in itertools.product(range(width), range(stride)):
    t = stride * (u + offset) + lo - a
    if 0 <= t < kernel:
      taps[u, a] = t
  return taps, offset


def depth_to_space(x: jax.Array, block: int | Sequence[int] = 2) -> jax.Array:
  """[B, H, W, bh * bw * C] (channels ordered (row phase, column phase, c)) -> [B, H * bh, W * bw, C]."""
  bh, bw = (block, block) if isinstance(block, int) else tuple(block)
  b, h, w, c = x.shape
  c //= bh * bw
  x = x.reshape(b, h, w, bh, bw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * bh, w * bw, c)


class SubpixelConvTranspose(nn.Module):
  """`nn.ConvTranspose` for 2-D images, computed as one stride-1 convolution followed by depth-to-space.

  Output phase (a, b) (output row mod sh, column mod sw) of a transposed convolution with strides (sh, sw) is
  an ordinary convolution of the input with a subset of the kernel's taps (see `_phase_taps`). Gathering the
  [kh, kw, Cin, Cout] kernel into one [wh, ww, Cin, sh * sw * Cout] kernel (zeros on the taps a phase does
  not use), convolving with stride 1 and interleaving the phases computes exactly
  `nn.ConvTranspose(features, kernel_size, strides, padding)`: same output shape and values (to float32
  rounding), same parameters ("kernel" [kh, kw, Cin, Cout], "bias" [Cout], same initialisers, so the same
  initial values). It is the same layer, not an approximation, but its gradient is much cheaper on XLA:CPU,
  whose gradient of strided transposed convolutions is slow (the VQ-VAE's CIFAR-10 train step runs 3.4x
  faster); for very small layers the plain one can be as fast. E.g. a 4x4 stride-2 layer with padding
  ((2, 2), (2, 2)) (PyTorch padding 1: H -> 2H) becomes a 3x3 convolution to 4 * Cout channels.

  `padding` is what nn.ConvTranspose takes explicitly: an int, one int per dimension, or (lo, hi) pairs
  (negative values crop); the output size per dimension is (n - 1) s + 1 + lo + hi - k + 1.
  """

  features: int
  kernel_size: int | Sequence[int] = (4, 4)
  strides: int | Sequence[int] = (2, 2)
  padding: int | Sequence[int] | Sequence[tuple[int, int]] = ((2, 2), (2, 2))
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [*batch, H, W, Cin] -> [*batch, H', W', features], H' = (H - 1) sh + lo + hi - kh + 2 (W' alike)."""
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    padding = canonicalize_padding(self.padding, 2)
    if isinstance(padding, str):
      raise ValueError(f"SubpixelConvTranspose takes explicit padding pairs, got '{self.padding}'")
    batch_shape = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    kernel = self.param(
      "kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features), self.param_dtype
    )
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)

    sizes, conv_padding, tables = [], [], []
    for n, k, s, (lo, hi) in zip(x.shape[1:3], kernel_size, strides, padding, strict=True):
      size = (n - 1) * s + 1 + lo + hi - k + 1
      if size < 1:
        raise ValueError(
          f"SubpixelConvTranspose: input size {n} with kernel {k}, stride {s} and padding ({lo}, {hi}) gives "
          f"output size {size}"
        )
      taps, offset = _phase_taps(k, s, lo)
      phases = -(-size // s)  # outputs per phase, before cropping the last phases to `size`
      conv_padding.append((-offset, phases - n + offset + len(taps) - 1))
      sizes.append(size)
      tables.append(taps)
    (th, tw), (sh, sw) = tables, strides
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # index k: the zero tap
    sub = padded[th[:, None, :, None], tw[None, :, None, :]]  # [wh, ww, sh, sw, Cin, Cout]
    sub = sub.transpose(0, 1, 4, 2, 3, 5).reshape(*sub.shape[:2], x.shape[-1], sh * sw * self.features)
    y = jax.lax.conv_general_dilated(x, sub, (1, 1), conv_padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if sh * sw > 1:
      y = depth_to_space(y, strides)
    y = y[:, : sizes[0], : sizes[1]]
    if bias is not None:
      y = y + bias
    return y.reshape(*batch_shape, *y.shape[1:])


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2:
    raise ValueError(f"SubpixelConvTranspose is 2-D: {name} needs 2 values, got {value}")
  return pair


def resolve_upsample(upsample: str, model: str, on_cpu: str = "subpixel") -> str:
  """The form, "subpixel" or "transpose", that option `upsample` of `model` selects: "auto" is `on_cpu` (the
  faster form on XLA:CPU for that model) when jax's default backend is the CPU, and "transpose"
  (`nn.ConvTranspose`) on accelerators, so a CPU speed-up never changes what runs there."""
  if upsample not in UPSAMPLERS:
    raise ConfigError(f"{model}: upsample must be one of {UPSAMPLERS}, got '{upsample}'")
  if upsample == "auto":
    return on_cpu if jax.default_backend() == "cpu" else "transpose"
  return upsample


def conv_transpose(
  upsample: str,
  features: int,
  kernel_size: Sequence[int],
  strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  dtype: jnp.dtype | None = None,
  name: str | None = None,
) -> nn.Module:
  """A transposed convolution as `SubpixelConvTranspose` (upsample="subpixel") or `nn.ConvTranspose`
  ("transpose"): the same function of the same parameters, so checkpoints move between the two."""
  if upsample == "subpixel":
    return SubpixelConvTranspose(features, kernel_size, strides, padding, dtype=dtype, name=name)
  if upsample != "transpose":
    raise ValueError(f"conv_transpose takes upsample 'subpixel' or 'transpose', got '{upsample}'")
  return nn.ConvTranspose(features, kernel_size, strides, padding=padding, dtype=dtype, name=name)


# Output positions (H' x W') up to which `small_spatial_conv` computes a convolution as one matmul: XLA:CPU's
# convolution kernels run at a few GFLOP/s on maps of 4x4 pixels and less (a 3x3 convolution, 512 -> 512
# channels at 2x2 pixels: 2.2 GFLOP/s against 95-194 at 32x32 to 4x4; docs/speed.md), a matmul at full rate.
SMALL_SPATIAL = 16
NHWC_HWIO = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # lax's dimension numbers of flax's NHWC convolutions


def patches_conv(
  lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Sequence[tuple[int, int]]
) -> jax.Array:
  """A 2-D convolution of NHWC `lhs` with an HWIO kernel `rhs` (no dilation, no groups) as the shifted,
  strided slices of the padded input concatenated on channels ([B, H', W', kh kw C]) times the kernel
  reshaped to [kh kw C, O]: the same function as `lax.conv_general_dilated` (float rounding aside)."""
  kh, kw, cin, cout = rhs.shape
  x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  sh, sw = window_strides
  oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  cols = [
    x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  y = jnp.dot(patches.reshape(-1, kh * kw * cin), rhs.reshape(kh * kw * cin, cout).astype(patches.dtype))
  return y.reshape(lhs.shape[0], oh, ow, cout)


def small_spatial_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **options) -> jax.Array:
  """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated=...)` on NHWC inputs that computes
  convolutions with at most SMALL_SPATIAL output positions as `patches_conv` (the others, and any with
  dilation, groups or another layout, as lax does)."""
  dims = options.get("dimension_numbers")
  nhwc = dims is not None and (dims.lhs_spec, dims.rhs_spec, dims.out_spec) == NHWC_HWIO
  plain = (
    nhwc
    and all(d == 1 for d in (*(options.get("lhs_dilation") or ()), *(options.get("rhs_dilation") or ())))
    and options.get("feature_group_count", 1) == 1
    and options.get("batch_group_count", 1) == 1
  )
  if lhs.ndim == 4 and plain:
    pads = padding
    if isinstance(padding, str):
      pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    oh = (lhs.shape[1] + sum(pads[0]) - rhs.shape[0]) // window_strides[0] + 1
    ow = (lhs.shape[2] + sum(pads[1]) - rhs.shape[1]) // window_strides[1] + 1
    if oh * ow <= SMALL_SPATIAL:
      return patches_conv(lhs, rhs, window_strides, pads)
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)
