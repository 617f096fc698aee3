"""VQ-VAE (van den Oord et al. 2017): residual conv encoder, vector quantiser, mirrored decoder.

Encoder: L levels Conv(c_i, 4x4, s2) -> ReLU, then Conv(h, 3x3) -> residual stack -> 1x1 Conv to the code
dimension D. Residual stack: `num_res_layers` layers of x + Conv(h, 1x1)(ReLU(Conv(r, 3x3)(ReLU(x)))), then
ReLU. Decoder: Conv(h, 3x3) -> residual stack -> L ConvT(4x4, s2) with channels c_{L-2}, ..., c_0, then C,
ReLU between them, linear output. L = `num_downsamples` (default 2) sets the downsampling factor f = 2^L (the
VQGAN layout: f = 4, 8, 16 for L = 2, 3, 4); the level widths c_i are hidden * channel_mults[i], or by default
hidden / 2^(L-1-i) (`level_channels`): h/2, h for L = 2, today's reference layout.
Defaults (h=128, r=32, 2 residual layers, K=512, D=64, L=2) are DeepMind's Sonnet CIFAR-10 example;
[32, 32, 32, 3] images give [32, 8, 8, 64] encodings. Any H and W divisible by f work (28x28 Fashion-MNIST
gives 7x7 codes with f = 4; 256x256 images give 16x16 codes with f = 16).

The 4x4 stride-2 transposed convolutions (PyTorch padding 1) are `nn.ConvTranspose` or the same layer
computed as a sub-pixel convolution (`ae_jax.models.layers.SubpixelConvTranspose`), with the same parameters,
so checkpoints load either way. `upsample="auto"` (default) takes the sub-pixel form on XLA:CPU, where the
gradient of strided transposed convolutions is an order of magnitude slower than PyTorch's, and
nn.ConvTranspose on accelerators; "subpixel" and "transpose" force one.

Outputs: recon [B, H, W, C]; code (the quantized latents) and z_e [B, H/f, W/f, D]; indices [B, H/f, W/f]
([B, H/f, W/f, S] for S residual stages); codebook_loss and commitment_loss [B] (read by the `codebook` and
`commitment` loss terms); where the quantizer defines them, code_logits [B, H/f, W/f, K] and the
per-example terms code_entropy, lfq_entropy, gumbel_kl [B] (loss terms of the same names, registered by
ae_jax.quantizers); metrics: code perplexity, fraction of codes used, and (EMA re-seeding) codes re-seeded
this step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.errors import ConfigError
from ae_jax.models.layers import check_input_shape, conv_transpose, resolve_upsample
from ae_jax.quantizers import (
  GRADIENTS,
  FiniteScalarQuantizer,
  GumbelQuantizer,
  LookupFreeQuantizer,
  ResidualVectorQuantizer,
  VectorQuantizer,
)

QUANTIZERS = ("vq", "fsq", "rvq", "lfq", "gumbel")
# A 4x4 stride-2 transposed convolution with PyTorch padding 1 (H -> 2H) in nn.ConvTranspose's terms.
_UP_KERNEL, _UP_STRIDES, _UP_PADDING = (4, 4), (2, 2), ((2, 2), (2, 2))


def level_channels(hidden: int, num_downsamples: int, channel_mults: Sequence[float] = ()) -> tuple[int, ...]:
  """Output channels of the encoder's stride-2 levels: int(hidden * m) for m in `channel_mults`, or by
  default hidden // 2^(n-1-i) for level i of n (each level doubles the width, the last is `hidden`): hidden/2,
  hidden for n = 2 (the reference layout); hidden/4, hidden/2, hidden for n = 3; at least 1 channel."""
  if num_downsamples < 1:
    raise ConfigError(f"vqvae: config.model.num_downsamples must be >= 1, got {num_downsamples}")
  if not channel_mults:
    return tuple(max(1, hidden // 2 ** (num_downsamples - 1 - i)) for i in range(num_downsamples))
  if len(channel_mults) != num_downsamples:
    raise ConfigError(
      f"vqvae: config.model.channel_mults needs one multiplier per level (num_downsamples="
      f"{num_downsamples}), got {list(channel_mults)}"
    )
  channels = tuple(int(hidden * m) for m in channel_mults)
  if min(channels) < 1:
    raise ConfigError(
      f"vqvae: channel_mults {list(channel_mults)} of hidden={hidden} give channels {channels}"
    )
  return channels


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
  """[B, H, W, C] -> z_e [B, H/2^n, W/2^n, code_dim], n = num_downsamples.

  n levels Conv(channels[i], 4x4, s2, p1) -> ReLU (channels from `level_channels`), Conv(hidden, 3x3), the
  residual stack, then a 1x1 Conv ("pre_quantize") to code_dim.
  """

  hidden: int = 128
  res_hidden: int = 32
  num_res_layers: int = 2
  code_dim: int = 64
  num_downsamples: int = 2
  channel_mults: Sequence[float] = ()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = ((1, 1), (1, 1))
    h = x
    for ch in level_channels(self.hidden, self.num_downsamples, self.channel_mults):
      h = nn.relu(nn.Conv(ch, (4, 4), (2, 2), padding=pad, dtype=self.dtype)(h))
    h = nn.Conv(self.hidden, (3, 3), padding=pad, dtype=self.dtype)(h)
    h = ResidualStack(self.hidden, self.res_hidden, self.num_res_layers, self.dtype)(h)
    return nn.Conv(self.code_dim, (1, 1), dtype=self.dtype, name="pre_quantize")(h)


class VQDecoder(nn.Module):
  """z_q [B, h, w, D] -> reconstruction [B, h 2^n, w 2^n, out_channels] (linear output), n = num_downsamples.

  Conv(hidden, 3x3), the residual stack, then n 4x4 stride-2 transposed convolutions "up_0".."up_{n-1}"
  (PyTorch padding 1) mirroring the encoder's levels: channels reversed(level_channels[:-1]), then
  out_channels, with ReLU between them. `upsample`: "auto", "subpixel" or "transpose"
  (`ae_jax.models.layers.resolve_upsample`).
  """

  out_channels: int = 3
  hidden: int = 128
  res_hidden: int = 32
  num_res_layers: int = 2
  upsample: str = "auto"
  num_downsamples: int = 2
  channel_mults: Sequence[float] = ()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    upsample = resolve_upsample(self.upsample, "vqvae")
    h = nn.Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)(z)
    h = ResidualStack(self.hidden, self.res_hidden, self.num_res_layers, self.dtype)(h)
    channels = level_channels(self.hidden, self.num_downsamples, self.channel_mults)
    outs = (*reversed(channels[:-1]), self.out_channels)
    for i, ch in enumerate(outs):
      h = conv_transpose(upsample, ch, _UP_KERNEL, _UP_STRIDES, _UP_PADDING, self.dtype, f"up_{i}")(h)
      h = nn.relu(h) if i < len(outs) - 1 else h
    return h


class VQVAE(nn.Module):
  """VQ-VAE on [B, H, W, C] images with the quantizer `quantizer` (module "vq", ae_jax/quantizers/):

  * "vq": nearest code of a codebook of num_codes x code_dim (`VectorQuantizer`: beta, ema, decay,
    epsilon, codebook_init, dead_code_threshold; gradient "straight_through" or "rotation"; cosine;
    codebook_dim > 0 for a low-dimensional codebook behind linear projections).
  * "fsq": `fsq_levels` per channel, code_dim = len(fsq_levels).
  * "rvq": num_stages residual stages of num_codes x code_dim (`ResidualVectorQuantizer`: the VQ options,
    shared_codebook, quantizer_dropout, eval_stages); indices [B, h, w, num_stages].
  * "lfq": each of code_dim channels to +-1, 2^code_dim codes (`LookupFreeQuantizer`; the lfq_entropy
    term from entropy_temperature and diversity; beta on its commitment term).
  * "gumbel": Gumbel-softmax over num_codes codes (`GumbelQuantizer`: gumbel_temperature annealed to
    gumbel_temperature_min over gumbel_anneal_steps training steps; the gumbel_kl term).

  entropy_temperature and diversity also set the code_entropy term of vq, rvq and gumbel. The quantizer
  always sees float32 encoder outputs, whatever `dtype`.

  num_downsamples: stride-2 levels n, a downsampling factor f = 2^n (2, 3, 4: f = 4, 8, 16); H and W must be
  divisible by f. channel_mults: one multiplier of `hidden` per level (() = `level_channels`' default:
  hidden/2, hidden for n = 2, doubling per level up to hidden for other n). upsample: "auto" (the sub-pixel
  form on XLA:CPU, nn.ConvTranspose on accelerators), "subpixel" or "transpose".
  """

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
  gradient: str = "straight_through"
  cosine: bool = False
  codebook_dim: int = 0
  num_stages: int = 4
  shared_codebook: bool = False
  quantizer_dropout: bool = False
  eval_stages: int = 0
  gumbel_temperature: float = 1.0
  gumbel_temperature_min: float = 0.0625
  gumbel_anneal_steps: int = 10_000
  entropy_temperature: float = 0.01
  diversity: float = 1.0
  upsample: str = "auto"
  num_downsamples: int = 2
  channel_mults: Sequence[float] = ()
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  def _check_quantizer_options(self) -> None:
    if self.quantizer not in QUANTIZERS:
      raise ConfigError(f"vqvae: quantizer must be one of {QUANTIZERS}, got '{self.quantizer}'")
    if self.gradient not in GRADIENTS:
      raise ConfigError(f"vqvae: config.model.gradient must be one of {GRADIENTS}, got '{self.gradient}'")
    vq_only = {
      "gradient": self.gradient != "straight_through",
      "cosine": self.cosine,
      "codebook_dim": self.codebook_dim != 0,
    }
    for option, set_ in vq_only.items():
      if set_ and self.quantizer != "vq":
        raise ConfigError(
          f"vqvae: config.model.{option} applies to quantizer='vq' only, not '{self.quantizer}'; leave it at "
          "its default or use --config.model.quantizer=vq"
        )

  def _make_quantizer(self) -> nn.Module:
    common = dict(axis_name=self.axis_name)
    entropy = dict(entropy_temperature=self.entropy_temperature, diversity=self.diversity)
    codebook = dict(
      num_codes=self.num_codes,
      code_dim=self.code_dim,
      beta=self.beta,
      ema=self.ema,
      decay=self.decay,
      epsilon=self.epsilon,
      codebook_init=self.codebook_init,
      dead_code_threshold=self.dead_code_threshold,
    )
    if self.quantizer == "fsq":
      return FiniteScalarQuantizer(tuple(self.fsq_levels), **common)
    if self.quantizer == "rvq":
      return ResidualVectorQuantizer(
        **codebook,
        num_stages=self.num_stages,
        shared_codebook=self.shared_codebook,
        quantizer_dropout=self.quantizer_dropout,
        eval_stages=self.eval_stages,
        **entropy,
        **common,
      )
    if self.quantizer == "lfq":
      return LookupFreeQuantizer(self.code_dim, self.beta, **entropy, **common)
    if self.quantizer == "gumbel":
      return GumbelQuantizer(
        self.num_codes,
        self.code_dim,
        self.gumbel_temperature,
        self.gumbel_temperature_min,
        self.gumbel_anneal_steps,
        **entropy,
        **common,
      )
    return VectorQuantizer(
      **codebook,
      gradient=self.gradient,
      cosine=self.cosine,
      codebook_dim=self.codebook_dim,
      **entropy,
      **common,
    )

  def setup(self) -> None:
    if len(self.input_shape) != 3:
      raise ConfigError(f"vqvae takes [H, W, C] images, got input_shape {list(self.input_shape)}")
    level_channels(self.hidden, self.num_downsamples, self.channel_mults)  # checks the two options
    factor = 2**self.num_downsamples
    h, w = self.input_shape[:2]
    if h % factor or w % factor:
      raise ConfigError(
        f"vqvae with config.model.num_downsamples={self.num_downsamples} needs H and W divisible by "
        f"2^{self.num_downsamples} = {factor}, got input_shape {list(self.input_shape)} ({h}x{w}); choose "
        "num_downsamples so that 2^num_downsamples divides both or resize the data"
      )
    self._check_quantizer_options()
    resolve_upsample(self.upsample, "vqvae")
    code_dim = len(self.fsq_levels) if self.quantizer == "fsq" else self.code_dim
    self.encoder = VQEncoder(
      self.hidden,
      self.res_hidden,
      self.num_res_layers,
      code_dim,
      self.num_downsamples,
      self.channel_mults,
      self.dtype,
    )
    self.vq = self._make_quantizer()
    self.decoder = VQDecoder(
      self.input_shape[-1],
      self.hidden,
      self.res_hidden,
      self.num_res_layers,
      self.upsample,
      self.num_downsamples,
      self.channel_mults,
      self.dtype,
    )

  def codebooks(self) -> tuple[int, ...]:
    """Codes in each codebook a latent position is coded with; a position carries the sum of their log2 in
    bits: (num_codes,) for vq and gumbel, (prod(fsq_levels),) for fsq, (num_codes,) * num_stages for rvq
    (one token per stage), (2^code_dim,) for lfq."""
    if self.quantizer == "fsq":
      return (math.prod(self.fsq_levels),)
    if self.quantizer == "rvq":
      return (self.num_codes,) * self.num_stages
    if self.quantizer == "lfq":
      return (2**self.code_dim,)
    return (self.num_codes,)

  def encode(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, C] -> z_e [B, H/f, W/f, D] float32 (before quantisation), f = 2^num_downsamples."""
    check_input_shape("vqvae", x, self.input_shape, "set config.model.input_shape or use NHWC images")
    return self.encoder(x).astype(jnp.float32)

  def quantize(self, z_e: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z_e [B, H/f, W/f, D] -> the quantizer's output dict (quantized, indices, loss terms, metrics), computed
    in float32."""
    return self.vq(z_e.astype(jnp.float32), train=train)

  def decode(self, z_q: jax.Array) -> jax.Array:
    """Quantized latents [B, H/f, W/f, D] -> reconstruction [B, H, W, C]."""
    return self.decoder(z_q).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """x [B, H, W, C] -> recon, code, z_e, indices, codebook_loss, commitment_loss, the quantizer's other
    per-example terms (code_logits, code_entropy, lfq_entropy, gumbel_kl where defined), metrics."""
    z_e = self.encode(x)
    q = dict(self.quantize(z_e, train=train))
    quantized, metrics = q.pop("quantized"), q.pop("metrics")
    return {"recon": self.decode(quantized), "code": quantized, "z_e": z_e, **q, "metrics": metrics}
