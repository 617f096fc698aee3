"""Causal-convolution sequence VAE over spectrogram frames: one Gaussian latent per frame.

Inputs are x [B, T, F] (T frames of F features, e.g. F = 201 STFT bins) with an optional padding mask
[B, T] (1 = real frame, a prefix of each sequence). The encoder's convolutions are causal (frame t sees
frames <= t only), so real frames never see the padding that follows them; BatchNorm statistics count
real frames only and are summed over the device axis, so padding changes neither the loss nor the state.

Outputs of `SeqVAEConv.__call__`: mean, logvar, z [B, T, Z]; code = mean; logits and recon = sigmoid(logits)
[B, T, F]; latent_mask [B, T] (for the `kl` loss term); metrics {"kl_active_dims"}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.losses.functions import gaussian_kl_per_dim
from ae_jax.models import interface
from ae_jax.models.layers import activation

ACTIVE_KL_NATS = 0.01  # a latent dim whose KL per real frame exceeds this carries information ("active")


class CausalConv1d(nn.Module):
  """1-D convolution over [B, T, C] whose output at t depends on inputs t - (k-1)*d ... t only.

  The input is left-padded with (kernel_size - 1) * dilation zero frames, so the output keeps length T
  (PyTorch's usual CausalConv1d: Conv1d with that padding on both sides, right end cut off).
  """

  features: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, T, C] -> [B, T, features]."""
    kernel = self.param("kernel", self.kernel_init, (self.kernel_size, x.shape[-1], self.features))
    pad = (self.kernel_size - 1) * self.dilation
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      window_strides=(1,),
      padding=[(pad, 0)],
      rhs_dilation=(self.dilation,),
      dimension_numbers=("NWC", "WIO", "NWC"),
    )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


def frame_noise(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """Standard normal noise [B, T, Z] whose frame t is drawn from fold_in(key, t): the noise of a frame does
  not depend on how many (padding) frames follow it, so padding a batch leaves its samples unchanged."""
  b, t, z = shape
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(t))
  return jax.vmap(lambda k: jax.random.normal(k, (b, z), dtype), out_axes=1)(keys)


def _frame_weights(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """[B, T, 1] float weights: the mask, or ones."""
  w = jnp.ones(x.shape[:-1], jnp.float32) if mask is None else mask.astype(jnp.float32)
  return w[..., None]


class MaskedBatchNorm(nn.Module):
  """BatchNorm over the features of [B, T, C] whose batch statistics count only real frames (mask [B, T]).

  Sums and counts are psum-ed over `axis_name` before dividing, so every device normalises with the
  statistics of the whole global batch even when devices hold different numbers of real frames (flax's
  `nn.BatchNorm(mask=...)` averages per-device means instead). Variables match `nn.BatchNorm`: params
  scale, bias; batch_stats mean, var (biased), updated as momentum * old + (1 - momentum) * batch.
  """

  momentum: float = 0.9  # PyTorch's BatchNorm1d default (its momentum=0.1 weighs the new batch)
  epsilon: float = 1e-5
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, C], mask [B, T] or None -> [B, T, C]."""
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if train:
      w = _frame_weights(x, mask)
      xz = jnp.where(w > 0, x.astype(jnp.float32), 0.0)
      axes = tuple(range(x.ndim - 1))
      sums = jnp.stack([jnp.broadcast_to(jnp.sum(w), (c,)), jnp.sum(xz, axes), jnp.sum(xz * xz, axes)])
      if self.axis_name is not None and not self.is_initializing():
        sums = jax.lax.psum(sums, self.axis_name)
      count = jnp.maximum(sums[0], 1.0)
      mean = sums[1] / count
      var = jnp.maximum(sums[2] / count - mean * mean, 0.0)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(x.dtype)


class SeqConvEncoder(nn.Module):
  """Causal convs F -> Z -> Z -> 2Z (each + act + BatchNorm), then a 1x1 conv 2Z -> 2Z: [B, T, 2Z]."""

  latent_dim: int = 256
  kernel_size: int = 3
  act: str = "tanh"
  bn_momentum: float = 0.9
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, F] -> posterior parameters [B, T, 2 * latent_dim] (mean, then log-variance)."""
    z = self.latent_dim
    for i, features in enumerate((z, z, 2 * z)):
      x = CausalConv1d(features, self.kernel_size, dtype=self.dtype, name=f"conv_{i}")(x)
      x = activation(self.act)(x)
      x = MaskedBatchNorm(self.bn_momentum, axis_name=self.axis_name, name=f"norm_{i}")(
        x, train=train, mask=mask
      )
    return nn.Dense(2 * z, dtype=self.dtype, name="posterior")(x)  # Conv1d with kernel 1


class SeqConvDecoder(nn.Module):
  """Four 1x1 convs Z -> F -> F -> F -> F (act + BatchNorm between): per-frame logits [B, T, F]."""

  features: int = 201
  act: str = "tanh"
  bn_momentum: float = 0.9
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """z [B, T, Z] -> logits [B, T, features] (the reconstruction is their sigmoid)."""
    for i in range(3):
      z = activation(self.act)(nn.Dense(self.features, dtype=self.dtype, name=f"dense_{i}")(z))
      z = MaskedBatchNorm(self.bn_momentum, axis_name=self.axis_name, name=f"norm_{i}")(
        z, train=train, mask=mask
      )
    return nn.Dense(self.features, dtype=self.dtype, name="output")(z)


@interface.register("seq_vae_conv", ("masked", "frame_latents"))
class SeqVAEConv(nn.Module):
  """Sequence VAE with a local latent per frame: causal-conv encoder, 1x1-conv decoder, sigmoid output.

  The architecture of the seed question's PyTorch model (spectrogram frames, F = 201, Z = 256). The code
  per frame (Z = 256) is larger than the frame (F = 201): the KL term, not the size, limits what it carries.
  """

  input_shape: Sequence[int] = (32, 201)  # (frames, features); only the features are fixed
  latent_dim: int = 256
  kernel_size: int = 3
  act: str = "tanh"
  bn_momentum: float = 0.9
  axis_name: str | None = None
  dtype: Any = jnp.float32

  def setup(self) -> None:
    kw = dict(act=self.act, bn_momentum=self.bn_momentum, axis_name=self.axis_name, dtype=self.dtype)
    self.encoder = SeqConvEncoder(self.latent_dim, self.kernel_size, **kw)
    self.decoder = SeqConvDecoder(self.input_shape[-1], **kw)

  def encode(
    self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """x [B, T, F] -> (mean, logvar), each [B, T, latent_dim]."""
    if x.ndim != 3 or x.shape[-1] != self.input_shape[-1]:
      raise ConfigError(
        f"seq_vae_conv expects inputs [batch, time, {self.input_shape[-1]}] but got {list(x.shape)}; "
        "set config.model.input_shape to the data shape (time, features)"
      )
    if mask is not None:  # padding (even NaN) becomes zeros, so no value of it reaches a gradient
      x = jnp.where(mask[..., None] > 0, x, 0.0)
    mean, logvar = jnp.split(self.encoder(x, train=train, mask=mask), 2, axis=-1)
    return mean, logvar

  def decode(
    self, z: jax.Array, *, train: bool = False, mask: jax.Array | None = None
  ) -> dict[str, jax.Array]:
    """z [B, T, Z] -> {"logits", "recon" = sigmoid(logits)}, each [B, T, F]."""
    logits = self.decoder(z, train=train, mask=mask)
    return {"logits": logits, "recon": nn.sigmoid(logits)}

  def frame_codes(self, x: jax.Array) -> jax.Array:
    """The "frame_latents" ability: x [B, T, F] -> posterior means [B, T, latent_dim] (causal: a real
    frame's code never depends on the padding after it)."""
    return self.encode(x)[0]

  def decode_frames(self, z: jax.Array) -> jax.Array:
    """The "frame_latents" ability: z [B, T, latent_dim] -> the decoded frames [B, T, F] in [0, 1]."""
    return self.decode(z)["recon"]

  def _active_dims(self, mean: jax.Array, logvar: jax.Array, w: jax.Array) -> jax.Array:
    """Latent dims whose KL per real frame, averaged over the global batch, exceeds ACTIVE_KL_NATS."""
    mean, logvar = jax.lax.stop_gradient((mean, logvar))
    kl = jnp.where(w > 0, gaussian_kl_per_dim(mean, logvar), 0.0)
    sums = jnp.stack([jnp.sum(kl, (0, 1)), jnp.broadcast_to(jnp.sum(w), kl.shape[-1:])])
    if self.axis_name is not None and not self.is_initializing():
      sums = jax.lax.psum(sums, self.axis_name)
    return jnp.sum(sums[0] / jnp.maximum(sums[1], 1.0) > ACTIVE_KL_NATS).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> dict[str, Any]:
    """x [B, T, F], mask [B, T] or None -> outputs (see the module docstring)."""
    mean, logvar = self.encode(x, train=train, mask=mask)
    z = mean + jnp.exp(0.5 * logvar) * frame_noise(self.make_rng("sample"), mean.shape, mean.dtype)
    latent_mask = jnp.ones(x.shape[:2], jnp.float32) if mask is None else mask.astype(jnp.float32)
    return {
      "mean": mean,
      "logvar": logvar,
      "z": z,
      "code": mean,
      **self.decode(z, train=train, mask=mask),
      "latent_mask": latent_mask,
      "metrics": {"kl_active_dims": self._active_dims(mean, logvar, latent_mask[..., None])},
    }
