"""The per-example loss terms read from a model's outputs and the batch (registered in `LOSSES`)."""

from __future__ import annotations

import math

import jax

from ae_jax.losses import register, require_output
from ae_jax.losses.functions import Batch, Outputs, bernoulli_nll, gaussian_kl, gaussian_nll, l1, mse


@register("mse")
def _mse_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """Mean squared error of outputs["recon"] and batch["x"], averaged over elements."""
  return mse(require_output(outputs, "recon", "mse"), batch["x"], batch.get("mask"))


@register("l1")
def _l1_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """Mean absolute error of outputs["recon"] and batch["x"], averaged over elements."""
  return l1(require_output(outputs, "recon", "l1"), batch["x"], batch.get("mask"))


@register("bernoulli_nll")
def _bernoulli_nll_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """-log Bernoulli(x | sigmoid(outputs["logits"])), nats per example."""
  return bernoulli_nll(require_output(outputs, "logits", "bernoulli_nll"), batch["x"], batch.get("mask"))


@register("gaussian_nll")
def _gaussian_nll_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """-log N(x | recon, exp(recon_logvar)) (unit variance without recon_logvar), nats."""
  recon = require_output(outputs, "recon", "gaussian_nll")
  return gaussian_nll(recon, batch["x"], outputs.get("recon_logvar", 0.0), batch.get("mask"))


@register("kl")
def _kl_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """KL(q(z|x) || N(0, I)) from outputs["mean"] and ["logvar"], nats per example."""
  mean, logvar = require_output(outputs, "mean", "kl"), require_output(outputs, "logvar", "kl")
  # Models with one latent per time step return their own "latent_mask" ([batch, time]).
  return gaussian_kl(mean, logvar, outputs.get("latent_mask"))


@register("iwae")
def _iwae_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """Negative importance-weighted bound (Burda et al. 2015) over the model's k draws of z, in nats:
  -log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x). With k = 1 it is the negative ELBO with a sampled KL."""
  log_w = (
    require_output(outputs, "log_px_z", "iwae")
    + require_output(outputs, "log_pz", "iwae")
    - outputs["log_qz_x"]
  )  # [k, batch]
  return -(jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0]))


@register("nmse", constants=("data_variance",))
def _nmse_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """mse divided by the training data's per-element variance (`batch["data_variance"]`, a constant the
  trainer adds from the dataset's training split): 1.0 = predicting the mean pixel."""
  if "data_variance" not in batch:
    raise KeyError(
      "loss term 'nmse' needs the training variance (batch['data_variance']), which this dataset does not "
      "provide; use 'mse' or a dataset whose registry entry has provides_variance=True (image datasets)"
    )
  return _mse_term(outputs, batch) / batch["data_variance"]


@register("codebook")
def _codebook_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """VQ codebook loss |sg(z_e) - z_q|^2 per example (moves the codes; zero with EMA codebooks)."""
  return require_output(outputs, "codebook_loss", "codebook")


@register("commitment")
def _commitment_term(outputs: Outputs, batch: Batch) -> jax.Array:
  """VQ commitment loss beta * |z_e - sg(z_q)|^2 per example (moves the encoder; beta is the model's)."""
  return require_output(outputs, "commitment_loss", "commitment")
