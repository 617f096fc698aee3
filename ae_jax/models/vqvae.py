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

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import QUANTIZERS
from ae_jax.models.interface import register
from ae_jax.models.layers import check_input_shape, conv_transpose, resolve_upsample
from ae_jax.quantizers.spec import QuantizerSpec

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


# config.model keys of the VQ-VAE before quantizers had their own sections, and their names there.
_LEGACY_RENAMES = {
  "fsq_levels": "levels",
  "gumbel_temperature": "temperature",
  "gumbel_temperature_min": "temperature_min",
  "gumbel_anneal_steps": "anneal_steps",
}
_LEGACY_KEYS = (
  *("num_codes", "code_dim", "beta", "ema", "decay", "epsilon", "codebook_init", "dead_code_threshold"),
  *("gradient", "cosine", "codebook_dim", "num_stages", "shared_codebook", "quantizer_dropout"),
  *("eval_stages", "entropy_temperature", "diversity", *_LEGACY_RENAMES),
)


def upgrade_legacy_config(model: dict) -> dict:
  """A saved config.model of the flat layout (`quantizer: "vq"` and every quantizer's options beside the
  model's) in today's: the options of the named quantizer moved into its section, the others dropped
  (they were ignored). A section already nested is returned unchanged."""
  if not isinstance(model.get("quantizer", "vq"), str):
    return model
  name = model.get("quantizer", "vq")
  flat = {_LEGACY_RENAMES.get(k, k): model[k] for k in _LEGACY_KEYS if k in model}
  section = {k: v for k, v in flat.items() if k in QUANTIZERS.lookup(name).options}
  rest = {k: v for k, v in model.items() if k not in _LEGACY_KEYS and k != "quantizer"}
  return {**rest, "quantizer": QUANTIZERS.section({"name": name, **section}, "config.model.quantizer")}


@register("vqvae", ("quantized",), sections={"quantizer": QUANTIZERS}, upgrade=upgrade_legacy_config)
class VQVAE(nn.Module):
  """VQ-VAE on [B, H, W, C] images with the quantizer section `quantizer` (module "vq", ae_jax/quantizers/).

  `quantizer` names a registered quantizer (`ae_jax.core.registry.QUANTIZERS`) or is a section {"name": ...,
  its options}, built by `ae_jax.quantizers.quantizer_config(name, **options)`; the encoder's code
  dimension is the quantizer's (its `code_dim`; len(levels) for fsq). Built in:

  * "vq": nearest code of a codebook of num_codes x code_dim (`VectorQuantizer`: beta, ema, decay,
    epsilon, codebook_init, dead_code_threshold; gradient "straight_through" or "rotation"; cosine;
    codebook_dim > 0 for a low-dimensional codebook behind linear projections).
  * "fsq": `levels` per channel, code dimension len(levels).
  * "rvq": num_stages residual stages of num_codes x code_dim (`ResidualVectorQuantizer`: the codebook
    options of vq, shared_codebook, quantizer_dropout, eval_stages); indices [B, h, w, num_stages].
  * "lfq": each of code_dim channels to +-1, 2^code_dim codes (`LookupFreeQuantizer`; the lfq_entropy
    term from entropy_temperature and diversity; beta on its commitment term).
  * "gumbel": Gumbel-softmax over num_codes codes (`GumbelQuantizer`: temperature annealed to
    temperature_min over anneal_steps training steps; the gumbel_kl term).

  entropy_temperature and diversity of vq, rvq and gumbel set their code_entropy term. The quantizer
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
  quantizer: str | Mapping[str, Any] = "vq"
  upsample: str = "auto"
  num_downsamples: int = 2
  channel_mults: Sequence[float] = ()
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  def quantizer_spec(self) -> tuple[QuantizerSpec, dict[str, Any]]:
    """The quantizer's registry entry and its full section (defaults filled, keys checked)."""
    section = QUANTIZERS.section(self.quantizer, "config.model.quantizer")
    return QUANTIZERS.lookup(section["name"]), section

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
    spec, section = self.quantizer_spec()
    resolve_upsample(self.upsample, "vqvae")
    self.encoder = VQEncoder(
      self.hidden,
      self.res_hidden,
      self.num_res_layers,
      spec.code_dim(section),
      self.num_downsamples,
      self.channel_mults,
      self.dtype,
    )
    self.vq = spec.build(section, axis_name=self.axis_name)
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
    """Codes in each codebook a latent position is coded with (the quantizer's `codebooks`); a position
    carries the sum of their log2 in bits: (num_codes,) for vq and gumbel, (prod(levels),) for fsq,
    (num_codes,) * num_stages for rvq (one token per stage), (2^code_dim,) for lfq."""
    spec, section = self.quantizer_spec()
    return tuple(spec.codebooks(section))

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
