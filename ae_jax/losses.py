"""Per-example loss terms and the weighted objective built from them.

Two layers:

* Primitive functions (`mse`, `l1`, `bernoulli_nll`, `gaussian_nll`, `gaussian_kl`) take arrays with a
  leading batch axis and reduce every other axis, returning shape `[batch]`. An optional `mask` of shape
  `[batch, ...]` (a prefix of the data's shape, e.g. `[batch, time]` for sequences) drops padded
  positions from the reduction.
* Named terms (`LOSSES`) read a model's outputs dict and the batch, e.g. `mse` compares
  `outputs["recon"]` with `batch["x"]`. An objective is a weighted sum of named terms chosen in the
  config (`config.loss = {"mse": 1.0}`); a weight of 0 reports a term without optimising it.

Prototyping a new loss is one function and one config line::

    @losses.register("total_variation")
    def total_variation(outputs, batch):
        r = outputs["recon"]
        return jnp.abs(jnp.diff(r, axis=1)).mean(axis=(1, 2, 3))

    config.loss.total_variation = 0.1

Conventions: `mse` and `l1` average over the non-batch axes (per element, as PyTorch's MSELoss), so they
are comparable across image sizes; the negative log-likelihoods and the KL sum over them (nats per example),
so `bernoulli_nll + kl` is the negative ELBO.

A term that reads a dataset constant from the batch declares it (`register(name, constants=(...))`);
`needed_constants` lists them for a config and `train.objective_constants` supplies them. The batch-level
terms of β-TCVAE, InfoVAE and WAE (`tc_mi`, `tc`, `tc_dwkl`, `mmd_imq`, `mmd_rbf`, ...) live in
`ae_jax.batch_losses`, which this module imports at its end, so they are registered wherever losses are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp

from ae_jax.errors import ConfigError, did_you_mean

Outputs = Mapping[str, jax.Array]
Batch = Mapping[str, jax.Array]
LossTerm = Callable[[Outputs, Batch], jax.Array]
Weight = float | Callable[[jax.Array], jax.Array]

_LOG_2PI = math.log(2.0 * math.pi)


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
  nll = 0.5 * (_LOG_2PI + logvar + jnp.square(target - mean) * jnp.exp(-logvar))
  return per_example_sum(nll, mask)


def gaussian_kl(mean: jax.Array, logvar: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed over latent dims, in nats. -> [batch]."""
  mean, logvar = _zero_masked(mask, mean, logvar)
  return per_example_sum(0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar), mask)


# ----------------------------------------------------------------------------- named terms

LOSSES: dict[str, LossTerm] = {}
CONSTANTS: dict[str, tuple[str, ...]] = {}  # term name -> the dataset constants it reads from the batch


def register(name: str, constants: Sequence[str] = ()) -> Callable[[LossTerm], LossTerm]:
  """Decorator adding `fn(outputs, batch) -> [batch]` to `LOSSES` under `name`; `constants` names the
  dataset constants (e.g. "data_variance", "dataset_size") it reads from the batch. The same function
  registered again (a module reloaded, a notebook cell run twice) replaces itself; another function under
  a taken name is refused."""

  def add(fn: LossTerm) -> LossTerm:
    old = LOSSES.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
      raise ValueError(f"loss term '{name}' is already registered by {old.__module__}; pick another name")
    LOSSES[name] = fn
    CONSTANTS[name] = tuple(constants)
    return fn

  return add


def needed_constants(names: Iterable[str]) -> frozenset[str]:
  """The dataset constants the registered terms `names` read (unknown names read none)."""
  return frozenset(c for name in names for c in CONSTANTS.get(name, ()))


def require_output(outputs: Outputs, key: str, term: str) -> jax.Array:
  """outputs[key], or a KeyError telling which term needs which model output."""
  if key not in outputs:
    raise KeyError(
      f"loss term '{term}' needs the model output '{key}', but the model returned {sorted(outputs)}; "
      f"remove '{term}' from config.loss or use a model that outputs '{key}'"
    )
  return outputs[key]


@register("mse")
def _mse_term(outputs: Outputs, batch: Batch) -> jax.Array:
  return mse(require_output(outputs, "recon", "mse"), batch["x"], batch.get("mask"))


@register("l1")
def _l1_term(outputs: Outputs, batch: Batch) -> jax.Array:
  return l1(require_output(outputs, "recon", "l1"), batch["x"], batch.get("mask"))


@register("bernoulli_nll")
def _bernoulli_nll_term(outputs: Outputs, batch: Batch) -> jax.Array:
  return bernoulli_nll(require_output(outputs, "logits", "bernoulli_nll"), batch["x"], batch.get("mask"))


@register("gaussian_nll")
def _gaussian_nll_term(outputs: Outputs, batch: Batch) -> jax.Array:
  recon = require_output(outputs, "recon", "gaussian_nll")
  return gaussian_nll(recon, batch["x"], outputs.get("recon_logvar", 0.0), batch.get("mask"))


@register("kl")
def _kl_term(outputs: Outputs, batch: Batch) -> jax.Array:
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


# ----------------------------------------------------------------------------- objective


def check_loss_names(names: Mapping[str, object] | list[str]) -> None:
  """Raises ValueError naming the closest registered term for any unknown loss name."""
  for name in names:
    if name not in LOSSES:
      hint = did_you_mean(name, LOSSES)
      raise ConfigError(
        f"unknown loss term '{name}' in config.loss; {hint}registered terms: {sorted(LOSSES)} "
        "(add one with @ae_jax.losses.register)"
      )


def make_objective(
  weights: Mapping[str, Weight], constants: Mapping[str, float] | None = None
) -> Callable[[Outputs, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
  """Builds `objective(outputs, batch, step) -> (total [batch], {name: term [batch]})`.

  `weights` maps registered term names to a float or to a schedule `step -> weight` (e.g. a KL warm-up).
  `constants` (e.g. {"data_variance": 0.063}) are added to every batch the terms see.
  """
  if not weights:
    raise ConfigError("config.loss is empty; name at least one loss term, e.g. config.loss = {'mse': 1.0}")
  check_loss_names(list(weights))
  constants = dict(constants or {})

  def objective(outputs: Outputs, batch: Batch, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    batch = {**batch, **constants}
    terms = {name: LOSSES[name](outputs, batch) for name in weights}
    total = sum((w(step) if callable(w) else w) * terms[name] for name, w in weights.items())
    return total, terms

  return objective


# The batch-level terms register themselves into LOSSES; imported last, as they use this module.
from ae_jax import batch_losses  # noqa: E402, F401
