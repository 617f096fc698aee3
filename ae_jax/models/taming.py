"""taming-transformers' VQGAN and latent-diffusion's KL autoencoder (Esser et al. 2021, Rombach et al. 2022).

Both wrap the reference encoder and decoder (`ae_jax.models.taming_blocks`) around a bottleneck on the
[B, H/f, W/f, .] latent grid, f = 2^(len(ch_mult) - 1), with 1x1 convolutions on either side:

* "vqgan" (taming's `VQModel`): encoder -> quant_conv (z_channels -> the quantizer's code dimension, the
  reference's embed_dim) -> any registered quantizer, configured as the `quantizer` section exactly as the
  VQ-VAE's (`ae_jax.models.vqvae`; its quantizer plumbing, `quantizer_spec` and `codebooks`, is VQVAE's own)
  -> post_quant_conv (-> z_channels) -> decoder. Outputs are named as the VQ-VAE's: recon [B, H, W, C]; code
  (quantized) and z_e [B, H/f, W/f, D]; indices [B, H/f, W/f] ([..., S] for rvq); codebook_loss and
  commitment_loss [B]; the quantizer's other terms; metrics. So the codebook/commitment loss terms, the
  codebook evaluator and the stage-two priors (`ae_jax.generation.stage_one`: `encode`, `quantize`, `vq`,
  `decode`, `num_downsamples`) work unchanged.
* "kl_autoencoder" (latent-diffusion's `AutoencoderKL`): encoder with double_z -> quant_conv (2 z_channels
  -> 2 embed_dim) -> the diagonal Gaussian q(z|x) = N(mean, exp(logvar)), logvar clipped to [-30, 20] as
  the reference's `DiagonalGaussianDistribution` -> z -> post_quant_conv (embed_dim -> z_channels) ->
  decoder. Outputs: recon [B, H, W, C]; mean, logvar, z and code (= mean) [B, H/f, W/f, embed_dim]. The `kl`
  loss term sums KL(q(z|x) || N(0, I)) over the h x w x embed_dim latent elements per example, as the
  reference's `kl()` (a sum over [1, 2, 3]). In training z = mean + exp(logvar / 2) eps with eps ~ N(0, I)
  from the "sample" rng; at evaluation z = mean (the reference's `mode()`), unless `eval_sample` (the
  reference's validation samples). "autoencoding": `latent_code(x)` is the posterior mean flattened in
  (h, w, c) order, [B, h w embed_dim]; `decode_latent(code)` reshapes it to the grid and decodes.

Architecture options (taming's `ddconfig`): ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
dropout, resamp_with_conv; `resolution` is the side attention resolutions refer to (0: the input height,
as when training at the reference size), and each of attn_resolutions must be a level's resolution;
norm_groups (32 in the reference) must divide ch and every level's channels; mid_attention (True in the
reference) keeps the middle's AttnBlock (False: no attention at all with attn_resolutions=(), as
MaskGIT's VQGAN). Input images in the data's scale (taming's: "symmetric", [-1, 1]); H and W divisible by f.

`last_layer` (class attribute): the path of the decoder's conv_out kernel in the "params" collection, the
reference's `get_last_layer()` that its adaptive GAN weight differentiates the losses with respect to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import QUANTIZERS
from ae_jax.models.interface import register
from ae_jax.models.layers import check_input_shape
from ae_jax.models.taming_blocks import (
  ArchitectureOptions,
  Decoder,
  Encoder,
  architecture_options,
  check_architecture,
  conv,
)
from ae_jax.models.vqvae import VQVAE

LOGVAR_RANGE = (-30.0, 20.0)  # latent-diffusion's clamp of the posterior log-variance
LAST_LAYER = ("decoder", "conv_out", "kernel")


class _TamingAutoencoder(ArchitectureOptions):
  """The encoder/decoder options (`taming_blocks.ArchitectureOptions`, with `resolution` 0: the input
  height) and the encoder/decoder of both models; subclasses add their bottleneck."""

  resolution: int = 0
  input_shape: Sequence[int] = (256, 256, 3)

  last_layer: ClassVar[tuple[str, ...]] = LAST_LAYER
  model_name: ClassVar[str] = ""

  @property
  def num_downsamples(self) -> int:
    """Stride-2 levels n: the latent grid is [H / 2^n, W / 2^n]."""
    return len(self.ch_mult) - 1

  def latent_grid(self) -> tuple[int, int]:
    """(h, w) = (H / f, W / f) of the latent grid."""
    factor = 2**self.num_downsamples
    return self.input_shape[0] // factor, self.input_shape[1] // factor

  def _build(self, double_z: bool) -> None:
    """Checks the options and sets `encoder` and `decoder` (in setup)."""
    if len(self.input_shape) != 3:
      raise ConfigError(f"{self.model_name} takes [H, W, C] images, got input_shape {list(self.input_shape)}")
    check_architecture(
      self.model_name,
      self.ch,
      self.ch_mult,
      self.norm_groups,
      self.input_shape,
      self.attn_resolutions,
      self.resolution,
    )
    options = architecture_options(self)
    self.encoder = Encoder(**options, double_z=double_z)
    self.decoder = Decoder(**options, out_ch=self.input_shape[-1])

  def _check(self, x: jax.Array) -> None:
    check_input_shape(self.model_name, x, self.input_shape, "set config.model.input_shape or use NHWC images")


@register("vqgan", ("quantized",), sections={"quantizer": QUANTIZERS})
class VQGAN(_TamingAutoencoder):
  """taming-transformers' VQGAN first stage (`VQModel`) with any quantizer section (module docstring).

  Defaults: the ImageNet f16 architecture (ch 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks, attention at 16,
  z_channels 256) with the default "vq" section; the quantizer's code dimension is the reference's
  embed_dim. The quantizer sees float32 latents whatever `dtype`.
  """

  quantizer: str | Mapping[str, Any] = "vq"
  axis_name: str | None = None

  model_name: ClassVar[str] = "vqgan"
  # The quantizer section's plumbing is the VQ-VAE's: (registry entry, full section) and codebook sizes.
  quantizer_spec = VQVAE.quantizer_spec
  codebooks = VQVAE.codebooks

  def setup(self) -> None:
    self._build(double_z=False)
    spec, section = self.quantizer_spec()
    self.quant_conv = conv(spec.code_dim(section), 1, self.dtype)
    self.vq = spec.build(section, axis_name=self.axis_name)
    self.post_quant_conv = conv(self.z_channels, 1, self.dtype)

  def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x [B, H, W, C] -> z_e [B, H/f, W/f, D] float32 (quant_conv's output, before quantisation)."""
    self._check(x)
    return self.quant_conv(self.encoder(x, train)).astype(jnp.float32)

  def quantize(self, z_e: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """z_e [B, H/f, W/f, D] -> the quantizer's output dict (quantized, indices, loss terms, metrics), in
    float32."""
    return self.vq(z_e.astype(jnp.float32), train=train)

  def decode(self, z_q: jax.Array, train: bool = False) -> jax.Array:
    """Quantized latents [B, H/f, W/f, D] -> reconstruction [B, H, W, C] float32."""
    return self.decoder(self.post_quant_conv(z_q), train).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """x [B, H, W, C] -> recon, code, z_e, indices, codebook_loss, commitment_loss, the quantizer's other
    per-example terms, metrics (as the VQ-VAE's)."""
    z_e = self.encode(x, train)
    q = dict(self.quantize(z_e, train=train))
    quantized, metrics = q.pop("quantized"), q.pop("metrics")
    return {"recon": self.decode(quantized, train), "code": quantized, "z_e": z_e, **q, "metrics": metrics}


@register("kl_autoencoder", ("autoencoding",))
class KLAutoencoder(_TamingAutoencoder):
  """latent-diffusion's `AutoencoderKL` (module docstring): a Gaussian latent grid of embed_dim channels.

  Defaults: kl-f8 (ch 128, ch_mult (1, 2, 4, 4), 2 res blocks, no attention but the middle's, z_channels 4,
  embed_dim 4). eval_sample: sample z at evaluation too (the reference's validation does), else the mean.
  """

  ch_mult: Sequence[int] = (1, 2, 4, 4)
  attn_resolutions: Sequence[int] = ()
  z_channels: int = 4
  embed_dim: int = 4
  eval_sample: bool = False

  model_name: ClassVar[str] = "kl_autoencoder"

  def setup(self) -> None:
    if self.embed_dim < 1:
      raise ConfigError(f"kl_autoencoder: config.model.embed_dim must be >= 1, got {self.embed_dim}")
    self._build(double_z=True)
    self.quant_conv = conv(2 * self.embed_dim, 1, self.dtype)
    self.post_quant_conv = conv(self.z_channels, 1, self.dtype)

  def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """x [B, H, W, C] -> (mean, logvar) of q(z|x), each [B, H/f, W/f, embed_dim] float32, logvar clipped
    to [-30, 20]."""
    self._check(x)
    mean, logvar = jnp.split(self.quant_conv(self.encoder(x, train)).astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def sample(self, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) eps, eps ~ N(0, I) from the "sample" rng: [B, h, w, embed_dim]."""
    eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps

  def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
    """Latents z [B, H/f, W/f, embed_dim] -> reconstruction [B, H, W, C] float32."""
    return self.decoder(self.post_quant_conv(z), train).astype(jnp.float32)

  def latent_code(self, x: jax.Array) -> jax.Array:
    """The "autoencoding" ability: x -> the posterior mean flattened in (h, w, c) order [B, h w embed_dim]
    (the code is spatial; the flat view is the ability's [B, D])."""
    mean, _ = self.encode(x)
    return mean.reshape(mean.shape[0], -1)

  def decode_latent(self, code: jax.Array) -> jax.Array:
    """The "autoencoding" ability: a flat code [B, h w embed_dim] -> the reconstruction [B, H, W, C]."""
    return self.decode(code.reshape(code.shape[0], *self.latent_grid(), self.embed_dim))

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """x [B, H, W, C] -> recon [B, H, W, C]; mean, logvar, z and code (= mean) [B, H/f, W/f, embed_dim]."""
    mean, logvar = self.encode(x, train)
    z = self.sample(mean, logvar) if train or self.eval_sample else mean
    return {"recon": self.decode(z, train), "mean": mean, "logvar": logvar, "z": z, "code": mean}
