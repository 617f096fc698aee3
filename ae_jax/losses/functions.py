"""Per-example loss functions: arrays with a leading batch axis in, every other axis reduced, `[batch]` out.

An optional `mask` of shape `[batch, ...]` (a prefix of the data's shape, e.g. `[batch, time]` for
sequences) drops padded positions from the reduction. `mse` and `l1` average over the non-batch axes (per
element, as PyTorch's MSELoss), so they are comparable across image sizes; the negative log-likelihoods and
the KL sum over them (nats per example), so `bernoulli_nll + kl` is the negative ELBO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from ae_jax.losses import divergences

Outputs = Mapping[str, jax.Array]
Batch = Mapping[str, jax.Array]
LossTerm = Callable[[Outputs, Batch], jax.Array]
Weight = float | Callable[[jax.Array], jax.Array]


def _broadcast_mask(mask: jax.Array | None, like: jax.Array) -> jax.Array | None:
  if mask is None:
    return None
  mask = mask.astype(like.dtype)
  return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim)) * jnp.ones_like(like)


def per_example_sum(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Sums `values` [batch, ...] over all non-batch axes, skipping masked-out positions. Returns [batch]."""
  mask = _broadcast_mask(mask, values)
  if mask is not None:
    values = jnp.where(mask > 0, values, 0.0)
  return values.reshape(values.shape[0], -1).sum(axis=1)


def per_example_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Averages `values` [batch, ...] over all non-batch axes and unmasked positions. Returns [batch]."""
  mask = _broadcast_mask(mask, values)
  if mask is None:
    return values.reshape(values.shape[0], -1).mean(axis=1)
  count = mask.reshape(mask.shape[0], -1).sum(axis=1)
  return per_example_sum(values, mask) / jnp.maximum(count, 1.0)


def _zero_masked(mask: jax.Array | None, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Zeros masked positions of the inputs before any arithmetic, so padding (even NaN) reaches neither
  the loss value nor its gradient: masking only the result would still let NaN into the gradient."""
  if mask is None:
    return arrays
  return tuple(jnp.where(_broadcast_mask(mask, a) > 0, a, jnp.zeros_like(a)) for a in arrays)


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error per example, averaged over elements: [batch, ...] x2 -> [batch]."""
  pred, target = _zero_masked(mask, pred, target)
  return per_example_mean(jnp.square(pred - target), mask)


def l1(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean absolute error per example, averaged over elements: [batch, ...] x2 -> [batch]."""
  pred, target = _zero_masked(mask, pred, target)
  return per_example_mean(jnp.abs(pred - target), mask)


def bernoulli_nll(logits: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """-log Bernoulli(target | sigmoid(logits)) summed over elements, in nats. Targets in [0, 1]. -> [batch]."""
  logits, target = _zero_masked(mask, logits, target)
  # softplus(l) - t*l == -t*log(sigmoid(l)) - (1-t)*log(1-sigmoid(l)), stable for large |l|.
  return per_example_sum(jax.nn.softplus(logits) - target * logits, mask)


def gaussian_nll(
  mean: jax.Array, target: jax.Array, logvar: jax.Array | float = 0.0, mask: jax.Array | None = None
) -> jax.Array:
  """-log N(target | mean, exp(logvar)) summed over elements, in nats. `logvar` broadcasts. -> [batch]."""
  logvar = jnp.broadcast_to(jnp.asarray(logvar, mean.dtype), mean.shape)
  mean, target, logvar = _zero_masked(mask, mean, target, logvar)
  return per_example_sum(-divergences.normal_logpdf(target, mean, logvar), mask)


def gaussian_kl_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) of each latent dimension in closed form, in nats: the shape of
  `mean`."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def gaussian_kl(mean: jax.Array, logvar: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed over latent dims, in nats. -> [batch]."""
  mean, logvar = _zero_masked(mask, mean, logvar)
  return per_example_sum(gaussian_kl_per_dim(mean, logvar), mask)
