"""The adversarial loss terms of a GAN-trained autoencoder (VQGAN, latent-diffusion's KL autoencoder).

The train step (`ae_jax.training.adversarial`) runs the discriminator and adds its logits to the outputs
the terms read: "disc_fake" [B, ...] on the reconstructions, "disc_real" [B, ...] on the batch's images
(the discriminator's objective only), and "r1" [B], the squared norm of the gradient of the real logits'
sum with respect to each real image, when a term asks for it. Logits of a patch discriminator are averaged
over their patches per example, so each term is [B] and its batch mean is the reference's scalar.

Generator terms (in `config.loss`, marked `adversarial`: adaptively weighted, 0 before the discriminator
starts):
* "gan_hinge": -D(G(x)), taming-transformers' `g_loss = -mean(logits_fake)` (used with either
  discriminator loss there).
* "gan_nonsaturating": softplus(-D(G(x))) = -log sigmoid(D(G(x))), Goodfellow et al.'s non-saturating loss.

Discriminator terms (in `config.adversarial.loss`):
* "disc_hinge": (relu(1 - D(x)) + relu(1 + D(G(x)))) / 2, taming's `hinge_d_loss`.
* "disc_vanilla": (softplus(-D(x)) + softplus(D(G(x)))) / 2, taming's `vanilla_d_loss`.
* "disc_r1": ||grad_x D(x)||^2 / 2 per example (Mescheder et al. 2018's R1 with gamma = 2 x its weight).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ae_jax.losses import register, require_output
from ae_jax.losses.functions import Batch, Outputs, per_example_mean

# The outputs the train step computes for these terms; a model never returns them itself.
STEP_OUTPUTS = ("disc_fake", "disc_real", "r1")


def _logits(outputs: Outputs, key: str, term: str) -> jax.Array:
  return require_output(outputs, key, term).astype(jnp.float32)


@register("gan_hinge", adversarial=True, description="-D(G(x)): taming's generator loss")
def gan_hinge(outputs: Outputs, batch: Batch) -> jax.Array:
  """-D(recon) averaged over the patches: [B]."""
  return per_example_mean(-_logits(outputs, "disc_fake", "gan_hinge"))


@register("gan_nonsaturating", adversarial=True, description="-log sigmoid(D(G(x)))")
def gan_nonsaturating(outputs: Outputs, batch: Batch) -> jax.Array:
  """softplus(-D(recon)) averaged over the patches: [B]."""
  return per_example_mean(jax.nn.softplus(-_logits(outputs, "disc_fake", "gan_nonsaturating")))


@register("disc_hinge", description="discriminator hinge loss (taming's hinge_d_loss)")
def disc_hinge(outputs: Outputs, batch: Batch) -> jax.Array:
  """(relu(1 - D(x)) + relu(1 + D(recon))) / 2, each averaged over the patches: [B]."""
  real = per_example_mean(jax.nn.relu(1.0 - _logits(outputs, "disc_real", "disc_hinge")))
  fake = per_example_mean(jax.nn.relu(1.0 + _logits(outputs, "disc_fake", "disc_hinge")))
  return 0.5 * (real + fake)


@register("disc_vanilla", description="discriminator cross-entropy (taming's vanilla_d_loss)")
def disc_vanilla(outputs: Outputs, batch: Batch) -> jax.Array:
  """(softplus(-D(x)) + softplus(D(recon))) / 2, each averaged over the patches: [B]."""
  real = per_example_mean(jax.nn.softplus(-_logits(outputs, "disc_real", "disc_vanilla")))
  fake = per_example_mean(jax.nn.softplus(_logits(outputs, "disc_fake", "disc_vanilla")))
  return 0.5 * (real + fake)


@register("disc_r1", description="R1 gradient penalty on real images")
def disc_r1(outputs: Outputs, batch: Batch) -> jax.Array:
  """||d sum(D(x)) / dx||^2 / 2 per example (outputs["r1"] holds the squared norm): [B]."""
  return 0.5 * require_output(outputs, "r1", "disc_r1").astype(jnp.float32)
