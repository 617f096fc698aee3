"""Variational autoencoders (Kingma and Welling 2014) with importance weights for IWAE and likelihoods.

The encoder gives a diagonal Gaussian q(z|x) = N(mean, exp(logvar)); z = mean + exp(logvar / 2) * eps with
eps ~ N(0, I) drawn from the "sample" rng (the reparameterisation trick); the prior is N(0, I). Likelihoods
p(x|z): "bernoulli" (logits; data in {0, 1} or [0, 1]), "gaussian" (fixed log-variance
`gaussian_logvar`), "gaussian_learned" (the decoder also outputs a per-element log-variance).

Outputs of `__call__(x)` with `num_samples` = k draws of z:
  mean, logvar [B, D]; code = mean; z [B, D] (the first draw); decoder outputs of the first draw:
  logits (bernoulli) and recon = E[x|z] [B, *input_shape], recon_logvar (gaussian);
  log_px_z, log_pz, log_qz_x [k, B]: the log-densities that make up the importance weights
  log w = log p(x|z) + log p(z) - log q(z|x), used by the "iwae" loss term and the likelihood evaluation;
  prior_z [B, D]: one draw from the prior N(0, I) per example, for the MMD loss terms (InfoVAE, WAE), so they
  stay pure functions of the outputs.

Noise: eps [k, B, D] and then prior_z are drawn from the "sample" rng (`draw_noise`); drawing prior_z
second leaves eps, hence z and every other output, what it is without it.

`deterministic_encoder=True` makes z the posterior mean (no noise; the encoder of a WAE): logvar, log_qz_x
and the `importance_terms` of the "likelihood" ability are then undefined and not output, so the kl, iwae and
β-TCVAE loss terms and the likelihood evaluation refuse such a model with the missing output's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.losses.divergences import diagonal_normal_logpdf, standard_normal_logpdf
from ae_jax.models import interface
from ae_jax.models.conv_ae import ConvDecoder, ConvEncoder, conv_grid
from ae_jax.models.layers import check_input_shape, resolve_upsample
from ae_jax.models.mlp_ae import MLPDecoder, MLPEncoder

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")


class _VAEBase(nn.Module):
  """Sampling, likelihoods and importance weights, with the options they use; subclasses add their
  architecture's options, define `encode` and set a `decoder` submodule (z [N, D] -> [N, H, W, C'])."""

  input_shape: Sequence[int] = (28, 28, 1)
  likelihood: str = "bernoulli"
  gaussian_logvar: float = 0.0
  num_samples: int = 1
  deterministic_encoder: bool = False
  dtype: jnp.dtype = jnp.float32

  def _check_likelihood(self) -> None:
    if self.likelihood not in LIKELIHOODS:
      raise ConfigError(
        f"unknown likelihood '{self.likelihood}' for {type(self).__name__}; choose {LIKELIHOODS}"
      )

  def _decoder_channels(self) -> int:
    return self.input_shape[-1] * (2 if self.likelihood == "gaussian_learned" else 1)

  def decode(self, z: jax.Array) -> dict[str, jax.Array]:
    """z [N, D] -> {"logits", "recon"} or {"recon", "recon_logvar"}, each [N, *input_shape]."""
    out = self.decoder(z)
    if self.likelihood == "bernoulli":
      return {"logits": out, "recon": nn.sigmoid(out)}
    if self.likelihood == "gaussian":
      return {"recon": out, "recon_logvar": jnp.full_like(out, self.gaussian_logvar)}
    mean, logvar = jnp.split(out, 2, axis=-1)
    return {"recon": mean, "recon_logvar": logvar}

  def log_px_given_z(self, x: jax.Array, decoded: dict[str, jax.Array]) -> jax.Array:
    """log p(x|z) in nats, summed over elements: x [N, ...] and decoder outputs [N, ...] -> [N]."""
    if self.likelihood == "bernoulli":
      return -losses.bernoulli_nll(decoded["logits"], x)
    return -losses.gaussian_nll(decoded["recon"], x, decoded["recon_logvar"])

  def importance_terms(self, x: jax.Array, eps: jax.Array) -> dict[str, jax.Array]:
    """Encodes x [B, ...] and decodes z = mean + std * eps for eps [k, B, D].

    Returns mean, logvar [B, D]; z [k, B, D]; decoder outputs [k, B, ...]; log_px_z, log_pz, log_qz_x [k, B].
    """
    if self.deterministic_encoder:
      raise ConfigError(
        f"{type(self).__name__} with deterministic_encoder=True has no density q(z|x), so no importance "
        "weights; remove the likelihood evaluator or set config.model.deterministic_encoder=False"
      )
    return self._forward(x, eps)

  def _forward(self, x: jax.Array, eps: jax.Array) -> dict[str, jax.Array]:
    """`importance_terms`, or with a deterministic encoder z = mean for each of the k draws and no logvar or
    log_qz_x."""
    mean, logvar = self.encode(x)
    k, b, d = eps.shape
    if self.deterministic_encoder:
      z = jnp.broadcast_to(mean, eps.shape)
    else:
      z = mean + jnp.exp(0.5 * logvar) * eps
    decoded = self.decode(z.reshape(k * b, d))
    x_rep = jnp.broadcast_to(x, (k, *x.shape)).reshape(k * b, *x.shape[1:])
    log_px_z = self.log_px_given_z(x_rep, decoded).reshape(k, b)
    decoded = {name: v.reshape(k, b, *v.shape[1:]) for name, v in decoded.items()}
    out = {"mean": mean, "z": z, **decoded, "log_px_z": log_px_z, "log_pz": standard_normal_logpdf(z)}
    if self.deterministic_encoder:
      return out
    return {
      **out,
      "logvar": logvar,
      "log_qz_x": diagonal_normal_logpdf(eps, jnp.broadcast_to(logvar, eps.shape)),
    }

  def draw_noise(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(eps [k, B, D] for the k draws of z, prior_z [B, D]), both N(0, I), from the "sample" rng in that
    order; x [B, ...] gives the batch size and dtype."""
    shape = (self.num_samples, x.shape[0], self.latent_dim)
    eps = jax.random.normal(self.make_rng("sample"), shape, x.dtype)
    prior_z = jax.random.normal(self.make_rng("sample"), shape[1:], x.dtype)
    return eps, prior_z

  def generate(self, z: jax.Array) -> jax.Array:
    """Mean image E[x|z] for latents z [N, D] (e.g. drawn from the prior): [N, *input_shape]."""
    return self.decode(z)["recon"]

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    eps, prior_z = self.draw_noise(x)
    terms = self._forward(x, eps)
    first = {name: terms[name][0] for name in ("z", "logits", "recon", "recon_logvar") if name in terms}
    out = {k: v for k, v in terms.items() if k in ("mean", "logvar", "log_px_z", "log_pz", "log_qz_x")}
    return {**out, **first, "code": terms["mean"], "prior_z": prior_z}


@interface.register("vae_mlp", ("generative", "likelihood"))
class VAEMLP(_VAEBase):
  """Fully connected VAE: x [B, *input_shape] -> hidden -> (mean, logvar) [B, latent_dim] -> hidden -> x.

  Kingma and Welling's Fashion-MNIST/MNIST setting is hidden=(500,), latent_dim=20, Bernoulli likelihood;
  the IWAE paper's is hidden=(200, 200), tanh, latent_dim=50.
  """

  hidden: Sequence[int] = (500,)
  latent_dim: int = 20
  act: str = "relu"

  def setup(self) -> None:
    self._check_likelihood()
    self.encoder = MLPEncoder(self.hidden, 2 * self.latent_dim, self.act, self.dtype)
    out_shape = (*self.input_shape[:-1], self._decoder_channels())
    self.decoder = MLPDecoder(out_shape, tuple(reversed(self.hidden)), self.act, "identity", self.dtype)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, *input_shape] -> (mean, logvar), each [B, latent_dim]."""
    check_input_shape("vae_mlp", x, self.input_shape)
    return tuple(jnp.split(self.encoder(x), 2, axis=-1))


@interface.register("vae_conv", ("generative", "likelihood"))
class VAEConv(_VAEBase):
  """The conv autoencoder's encoder and decoder around a Gaussian latent [B, latent_dim].

  num_downsamples=0 (default): the seed's 28x28 geometry; n > 0: n stride-2 levels (one entry of `channels`
  each) for any H and W divisible by 2^n, the grid [B, H/2^n, W/2^n, channels[-1]] flattened into the Dense
  layers (see `ae_jax.models.conv_ae`). upsample: "auto", "subpixel" or "transpose", as conv_ae's.
  """

  channels: Sequence[int] = (8, 16, 32, 64)
  dense: Sequence[int] = (32,)
  latent_dim: int = 16
  act: str = "relu"
  num_downsamples: int = 0
  upsample: str = "auto"

  def setup(self) -> None:
    self._check_likelihood()
    grid = conv_grid("vae_conv", self.input_shape, self.channels, self.num_downsamples)
    resolve_upsample(self.upsample, "vae_conv")
    self.encoder = ConvEncoder(self.channels, self.dense, self.act, self.num_downsamples, self.dtype)
    self.posterior = nn.Dense(2 * self.latent_dim, dtype=self.dtype)
    self.decoder = ConvDecoder(
      self._decoder_channels(),
      self.channels,
      self.dense,
      self.act,
      "identity",
      self.num_downsamples,
      grid,
      self.upsample,
      self.dtype,
    )

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, H, W, C] -> (mean, logvar), each [B, latent_dim]."""
    check_input_shape("vae_conv", x, self.input_shape, "vae_conv takes images with channels last (NHWC)")
    return tuple(jnp.split(self.posterior(self.encoder(x)), 2, axis=-1))
