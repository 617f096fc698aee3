"""VQ-VAE (van den Oord et al. 2017): residual conv encoder, vector quantiser, mirrored decoder.

Encoder: Conv(h/2, 4x4, s2) -> ReLU -> Conv(h, 4x4, s2) -> ReLU -> Conv(h, 3x3) -> residual stack -> 1x1 Conv
to the code dimension D. Residual stack: n layers of x + Conv(h, 1x1)(ReLU(Conv(r, 3x3)(ReLU(x)))), then ReLU.
Decoder: Conv(h, 3x3) -> residual stack -> ConvT(h/2, 4x4, s2) -> ReLU -> ConvT(C, 4x4, s2), linear output.
Defaults (h=128, r=32, n=2, K=512, D=64) are DeepMind's Sonnet CIFAR-10 example; [32, 32, 32, 3] images give
[32, 8, 8, 64] encodings. Any H and W divisible by 4 work (28x28 Fashion-MNIST gives 7x7 codes).

The 4x4 stride-2 transposed convolutions (PyTorch padding 1) are computed by default as sub-pixel
convolutions (`upsample="subpixel"`): the gradient of XLA:CPU's strided transposed convolution is an order
of magnitude slower than PyTorch's. See `SubpixelConvTranspose`; `upsample="transpose"` uses
`nn.ConvTranspose` with the same parameters, so checkpoints load either way.

Outputs: recon [B, H, W, C]; code (the quantized latents, straight-through) and z_e [B, H/4, W/4, D];
indices [B, H/4, W/4]; codebook_loss and commitment_loss [B] (read by the `codebook` and `commitment` loss
terms); metrics: code perplexity, fraction of codes used, and (EMA re-seeding) codes re-seeded this step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.models.layers import check_input_shape
from ae_jax.quantizers import FiniteScalarQuantizer, VectorQuantizer

QUANTIZERS = ("vq", "fsq")
UPSAMPLERS = ("subpixel", "transpose")

# tap t of a 3x3 window around input i, for output phase a of a 4x4 stride-2 transposed convolution with
# PyTorch padding 1: output 2i takes x[i-1] w[0] + x[i] w[2], output 2i+1 takes x[i] w[1] + x[i+1] w[3]
_PHASE_TAPS = np.zeros((2, 3, 4), np.float32)  # [phase, tap in the 3x3 window, kernel index]
_PHASE_TAPS[0, 0, 0] = _PHASE_TAPS[0, 1, 2] = _PHASE_TAPS[1, 1, 1] = _PHASE_TAPS[1, 2, 3] = 1.0


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """[B, H, W, block * block * C] (channels ordered (row phase, column phase, c)) -> [B, H*b, W*b, C]."""
  b, h, w, c = x.shape
  c //= block * block
  x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c)


class SubpixelConvTranspose(nn.Module):
  """4x4 stride-2 transposed convolution (PyTorch padding 1: H -> 2H) computed as a sub-pixel convolution.

  Each output phase (row parity a, column parity b) of a stride-2 transposed convolution is an ordinary
  convolution of the input with a 2x2 subset of the kernel's taps. Scattering the 4x4 kernel [4, 4, Cin, Cout]
  into a 3x3 kernel [3, 3, Cin, 4 * Cout] (zeros on the unused taps) and applying depth-to-space to the
  output computes exactly `nn.ConvTranspose(Cout, (4, 4), 2, padding=((2, 2), (2, 2)))` with the same
  parameters ("kernel", "bias", same shapes and initialisation), so this is the same layer, not an
  approximation; only the gradient is far cheaper on XLA:CPU. A test checks the two agree.
  """

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, Cin] -> [B, 2H, 2W, features]."""
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (4, 4, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    taps = jnp.asarray(_PHASE_TAPS)
    k3 = jnp.einsum("atk,bsl,klio->tsiabo", taps, taps, kernel).reshape(3, 3, x.shape[-1], 4 * self.features)
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      k3.astype(self.dtype),
      (1, 1),
      ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return depth_to_space(y) + bias.astype(self.dtype)


def upsample_layer(kind: str, features: int, dtype: jnp.dtype, name: str) -> nn.Module:
  """The decoder's 4x4 stride-2 transposed convolution, as a sub-pixel conv or as `nn.ConvTranspose`."""
  if kind == "subpixel":
    return SubpixelConvTranspose(features, dtype, name=name)
  return nn.ConvTranspose(features, (4, 4), (2, 2), padding=((2, 2), (2, 2)), dtype=dtype, name=name)


class ResidualStack(nn.Module):
  """n layers of x + Conv(h, 1x1)(ReLU(Conv(r, 3x3)(ReLU(x)))), then ReLU: [B, H, W, h] -> same shape."""

  hidden: int
  res_hidden: int
  num_layers: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.num_layers):
      h = nn.Conv(self.res_hidden, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)(nn.relu(x))
      x = x + nn.Conv(self.hidden, (1, 1), dtype=self.dtype)(nn.relu(h))
    return nn.relu(x)


class VQEncoder(nn.Module):
  """[B, H, W, C] -> z_e [B, H/4, W/4, code_dim]."""

  hidden: int = 128
  res_hidden: int = 32
  num_res_layers: int = 2
  code_dim: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = ((1, 1), (1, 1))
    h = nn.relu(nn.Conv(self.hidden // 2, (4, 4), (2, 2), padding=pad, dtype=self.dtype)(x))
    h = nn.relu(nn.Conv(self.hidden, (4, 4), (2, 2), padding=pad, dtype=self.dtype)(h))
    h = nn.Conv(self.hidden, (3, 3), padding=pad, dtype=self.dtype)(h)
    h = ResidualStack(self.hidden, self.res_hidden, self.num_res_layers, self.dtype)(h)
    return nn.Conv(self.code_dim, (1, 1), dtype=self.dtype, name="pre_quantize")(h)


class VQDecoder(nn.Module):
  """z_q [B, h, w, D] -> reconstruction [B, 4h, 4w, out_channels] (linear output)."""

  out_channels: int = 3
  hidden: int = 128
  res_hidden: int = 32
  num_res_layers: int = 2
  upsample: str = "subpixel"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = nn.Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)(z)
    h = ResidualStack(self.hidden, self.res_hidden, self.num_res_layers, self.dtype)(h)
    h = nn.relu(upsample_layer(self.upsample, self.hidden // 2, self.dtype, "up_0")(h))
    return upsample_layer(self.upsample, self.out_channels, self.dtype, "up_1")(h)


class VQVAE(nn.Module):
  """VQ-VAE on [B, H, W, C] images; `quantizer` "vq" (codebook of num_codes x code_dim) or "fsq" (`fsq_levels`
  per channel, code_dim = len(fsq_levels)). VQ options are `VectorQuantizer`'s (ae_jax/quantizers.py)."""

  input_shape: Sequence[int] = (32, 32, 3)
  hidden: int = 128
  res_hidden: int = 32
  num_res_layers: int = 2
  quantizer: str = "vq"
  num_codes: int = 512
  code_dim: int = 64
  beta: float = 0.25
  ema: bool = True
  decay: float = 0.99
  epsilon: float = 1e-5
  codebook_init: str = "uniform"
  dead_code_threshold: float = 0.0
  fsq_levels: Sequence[int] = (8, 5, 5, 5)
  upsample: str = "subpixel"
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  def setup(self) -> None:
    if len(self.input_shape) != 3 or self.input_shape[0] % 4 or self.input_shape[1] % 4:
      raise ValueError(
        f"vqvae takes [H, W, C] images with H and W divisible by 4 (two stride-2 layers), got input_shape "
        f"{list(self.input_shape)}"
      )
    if self.quantizer not in QUANTIZERS or self.upsample not in UPSAMPLERS:
      raise ValueError(
        f"vqvae: quantizer must be one of {QUANTIZERS} (got '{self.quantizer}') and upsample one of "
        f"{UPSAMPLERS} (got '{self.upsample}')"
      )
    fsq = self.quantizer == "fsq"
    code_dim = len(self.fsq_levels) if fsq else self.code_dim
    self.encoder = VQEncoder(self.hidden, self.res_hidden, self.num_res_layers, code_dim, self.dtype)
    if fsq:
      self.vq = FiniteScalarQuantizer(tuple(self.fsq_levels), self.axis_name)
    else:
      self.vq = VectorQuantizer(
        self.num_codes,
        self.code_dim,
        self.beta,
        self.ema,
        self.decay,
        self.epsilon,
        self.codebook_init,
        self.dead_code_threshold,
        self.axis_name,
      )
    self.decoder = VQDecoder(
      self.input_shape[-1], self.hidden, self.res_hidden, self.num_res_layers, self.upsample, self.dtype
    )

  def encode(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, C] -> z_e [B, H/4, W/4, D] (before quantisation)."""
    check_input_shape("vqvae", x, self.input_shape, "set config.model.input_shape or use NHWC images")
    return self.encoder(x).astype(jnp.float32)

  def decode(self, z_q: jax.Array) -> jax.Array:
    """Quantized latents [B, H/4, W/4, D] -> reconstruction [B, H, W, C]."""
    return self.decoder(z_q).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    z_e = self.encode(x)
    q = self.vq(z_e, train=train)
    return {
      "recon": self.decode(q["quantized"]),
      "code": q["quantized"],
      "z_e": z_e,
      "indices": q["indices"],
      "codebook_loss": q["codebook_loss"],
      "commitment_loss": q["commitment_loss"],
      "metrics": q["metrics"],
    }
