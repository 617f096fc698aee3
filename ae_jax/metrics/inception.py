"""The FID Inception network in Flax: TensorFlow's 2015-12-05 Inception v3 graph as pytorch-fid (0.3.0) and
torch-fidelity run it, for FID's 2,048-d pool features and Inception Score's 1,008-way logits.

    variables = inception_weights.load_variables()          # pytorch-fid's weights, checked and converted
    out = jax.jit(InceptionV3().apply)(variables, images)   # images [B, H, W, 1 or 3] in [0, 1]
    out["pool"]     # [B, 2048] float32: the features FID's statistics are taken of
    out["logits"]   # [B, 1008] float32: pool @ fc.weight.T + fc.bias (torchvision's fc)

The preprocessing is pytorch-fid's `InceptionV3` with its defaults (`resize_input=True`,
`normalize_input=True`): `F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)` on the
float images (no antialiasing, no quantisation to uint8; `resize_bilinear` is that formula, not
`jax.image.resize`, which antialiases when it shrinks), then 2x - 1. Grayscale images are repeated to 3
channels first. Values are not clipped to [0, 1].

The network is torchvision's `Inception3` (`num_classes=1008`, no auxiliary head) with pytorch-fid's
`FIDInceptionA` / `FIDInceptionC` / `FIDInceptionE_1` blocks (their pool branch is a 3x3 average that
excludes the zero padding, `count_include_pad=False`, as TensorFlow's) and `FIDInceptionE_2` for Mixed_7c
(a 3x3 max-pool in the pool branch); every convolution is bias-free and followed by BatchNorm (running
statistics, eps 0.001) and ReLU; the pool features are the spatial mean of Mixed_7c's [B, 8, 8, 2048].
Submodules carry torchvision's names (`Conv2d_1a_3x3`, `Mixed_5b/branch1x1/{conv, bn}`, `fc`), so the
Flax tree mirrors pytorch-fid's state dict (`inception_weights.convert`).

"logits_unbiased" (pool @ fc.weight.T, without the bias) is returned too: torch-fidelity's Inception Score
uses those (as the original TensorFlow IS code, which multiplied by the softmax weights only).
Convolutions and the head run at `lax.Precision.HIGHEST` by default, so GPUs and TPUs do not drop float32
inputs to TF32 or bfloat16.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.core.errors import DataError

SIZE = 299  # the network's input side
POOL_FEATURES = 2048
NUM_CLASSES = 1008  # TensorFlow's graph: 1,000 ImageNet classes, a background class and 7 unused
BN_EPS = 0.001
# How images reach the network (for outputs and the README: FIDs are comparable only under one protocol).
PROTOCOL = (
  "pytorch-fid: bilinear resize to 299x299 (align_corners=False, no antialias), float32, no quantisation, "
  "2x-1"
)

Pad = tuple[int, int]


# ----------------------------------------------------------------------------- preprocessing


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """PyTorch's bilinear source taps along one axis (align_corners=False, size given, no antialias): for
  each output index, input indices i0, i1 [out_size] int32 and weights w0, w1 [out_size] float32.

  As ATen's area_pixel_compute_source_index: src = (dst + 0.5) * scale - 0.5 with scale = in / out in
  float32 and src rounded once to float32 (the fused multiply-add PyTorch's CPU build computes; rounding
  the product first moves weights by up to 1e-6), clamped at 0 from below; i0 = floor(src),
  i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1."""
  if in_size == out_size:
    index = np.arange(out_size, dtype=np.int32)
    return index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)  # exact in float64, then one rounding
  src = np.maximum(src, np.float32(0))
  i0 = np.minimum(src.astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  return i0, i1, (np.float32(1) - w1).astype(np.float32), w1


def resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
  """torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False) for
  images [B, H, W, C] (channels last) -> [B, height, width, C] float32. Each output pixel mixes at most
  2x2 input pixels whatever the scale (no antialiasing when shrinking, as PyTorch's default)."""
  x = jnp.asarray(images, jnp.float32)
  for axis, size in ((2, width), (1, height)):  # width first, then height: PyTorch's order of sums
    if x.shape[axis] == size:
      continue
    i0, i1, w0, w1 = _linear_taps(x.shape[axis], size)
    shape = [1] * x.ndim
    shape[axis] = size
    x = jnp.take(x, i0, axis=axis) * w0.reshape(shape) + jnp.take(x, i1, axis=axis) * w1.reshape(shape)
  return x


def check_images(shape: tuple[int, ...]) -> None:
  """DataError unless `shape` is a batch of images [B, H, W, 1 or 3]."""
  if len(shape) != 4 or shape[-1] not in (1, 3) or min(shape[1:3]) < 1:
    raise DataError(f"FID Inception: expects images [B, H, W, 1 or 3] in [0, 1], got shape {list(shape)}")


def preprocess(images: jax.Array) -> jax.Array:
  """Images [B, H, W, 1 or 3] in [0, 1] -> the network's input [B, 299, 299, 3] float32 in [-1, 1]:
  pytorch-fid's resize (`resize_bilinear`) then 2x - 1; grayscale repeated to 3 channels first."""
  check_images(images.shape)
  x = jnp.asarray(images, jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return 2.0 * resize_bilinear(x, SIZE, SIZE) - 1.0


# ----------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: convolution without bias, BatchNorm (running statistics, eps 0.001), ReLU.
  x [B, H, W, C_in] -> [B, H', W', features]."""

  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: Pad = (0, 0)  # zeros added on both sides of (height, width)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(
      self.features,
      self.kernel,
      strides=self.stride,
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      precision=self.precision,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
    return nn.relu(x)


class _Block(nn.Module):
  """Base of the Mixed blocks: `conv(name, features, kernel, stride, padding)(x)` makes a named
  BasicConv2d; pools are 3x3 (stride 1 padded by 1, or stride 2 unpadded)."""

  precision: Any = jax.lax.Precision.HIGHEST

  def conv(self, name: str, features: int, kernel: tuple[int, int], stride: int = 1, padding: Pad = (0, 0)):
    return BasicConv2d(features, kernel, stride, padding, self.precision, name=name)


def _avg_pool_same(x: jax.Array) -> jax.Array:
  """3x3 average, stride 1, padding 1, the padding not counted (TensorFlow's; count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_same(x: jax.Array) -> jax.Array:
  """3x3 max, stride 1, padding 1 (the padding never wins)."""
  return nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))


def _max_pool_down(x: jax.Array) -> jax.Array:
  """3x3 max, stride 2, no padding (floor of the output size, as PyTorch's default)."""
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(_Block):
  """pytorch-fid's FIDInceptionA: [B, 35, 35, C] -> [B, 35, 35, 224 + pool_features]."""

  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 64, (1, 1))(x)
    b5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(self.conv("branch5x5_1", 48, (1, 1))(x))
    b3 = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
    b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
    b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
    bp = self.conv("branch_pool", self.pool_features, (1, 1))(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """torchvision's InceptionB (Mixed_6a): [B, 35, 35, 288] -> [B, 17, 17, 768]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3", 384, (3, 3), stride=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
    bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
    bd = self.conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_down(x)], axis=-1)


class InceptionC(_Block):
  """pytorch-fid's FIDInceptionC: [B, 17, 17, 768] -> [B, 17, 17, 768]."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, (1, 1))(x)
    b7 = self.conv("branch7x7_1", c7, (1, 1))(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, (1, 1))(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
    bp = self.conv("branch_pool", 192, (1, 1))(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """torchvision's InceptionD (Mixed_7a): [B, 17, 17, 768] -> [B, 8, 8, 1280]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3_2", 320, (3, 3), stride=2)(self.conv("branch3x3_1", 192, (1, 1))(x))
    b7 = self.conv("branch7x7x3_1", 192, (1, 1))(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_down(x)], axis=-1)


class InceptionE(_Block):
  """pytorch-fid's FIDInceptionE_1 (`max_pool=False`: average pool excluding padding) or FIDInceptionE_2
  (`max_pool=True`): [B, 8, 8, C] -> [B, 8, 8, 2048]."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 320, (1, 1))(x)
    b3 = self.conv("branch3x3_1", 384, (1, 1))(x)
    b3 = jnp.concatenate(
      [
        self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
        self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3),
      ],
      axis=-1,
    )
    bd = self.conv("branch3x3dbl_1", 448, (1, 1))(x)
    bd = self.conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd)
    bd = jnp.concatenate(
      [
        self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
        self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
      ],
      axis=-1,
    )
    pooled = _max_pool_same(x) if self.max_pool else _avg_pool_same(x)
    bp = self.conv("branch_pool", 192, (1, 1))(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Head(nn.Module):
  """The 1,008-way fc: pool [B, 2048] -> (pool @ kernel, pool @ kernel + bias), each [B, 1008]."""

  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, pool: jax.Array) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (POOL_FEATURES, NUM_CLASSES))
    bias = self.param("bias", nn.initializers.zeros, (NUM_CLASSES,))
    unbiased = jnp.dot(pool, kernel, precision=self.precision)
    return unbiased, unbiased + bias


class InceptionV3(nn.Module):
  """The FID Inception network (module docstring). `__call__(images)`: images [B, H, W, 1 or 3] in [0, 1]
  (any size; resized to 299 as pytorch-fid) -> {"pool": [B, 2048], "logits": [B, 1008],
  "logits_unbiased": [B, 1008]}, float32. Variables: "params" (convolution kernels, BatchNorm scale and
  bias, fc) and "batch_stats" (BatchNorm running mean and variance), from `inception_weights`."""

  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    p = self.precision
    x = preprocess(images)  # [B, 299, 299, 3]
    x = BasicConv2d(32, (3, 3), stride=2, precision=p, name="Conv2d_1a_3x3")(x)  # [B, 149, 149, 32]
    x = BasicConv2d(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)  # [B, 147, 147, 32]
    x = BasicConv2d(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)
    x = _max_pool_down(x)  # [B, 73, 73, 64]
    x = BasicConv2d(80, (1, 1), precision=p, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)  # [B, 71, 71, 192]
    x = _max_pool_down(x)  # [B, 35, 35, 192]
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(p, pool_features, name=name)(x)  # [B, 35, 35, 288] after Mixed_5d
    x = InceptionB(p, name="Mixed_6a")(x)  # [B, 17, 17, 768]
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(p, channels_7x7, name=name)(x)
    x = InceptionD(p, name="Mixed_7a")(x)  # [B, 8, 8, 1280]
    x = InceptionE(p, max_pool=False, name="Mixed_7b")(x)  # [B, 8, 8, 2048]
    x = InceptionE(p, max_pool=True, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))  # [B, 2048]
    unbiased, logits = Head(p, name="fc")(pool)
    return {"pool": pool, "logits": logits, "logits_unbiased": unbiased}
