"""Batch-level loss terms: the β-TCVAE decomposition of the KL and the MMD of InfoVAE and WAE.

Each term is still `fn(outputs, batch) -> [B]`, registered in `ae_jax.losses.LOSSES`, but its value for an
example depends on the whole global batch: inside the term the arrays it needs are gathered over the device
axis (`jax.lax.all_gather(x, parallel.AXIS, tiled=True)`, [M, ...] with M = devices * B) and the term returns
this device's per-example contributions, whose mean over the global batch is the estimator
(`ae_jax.losses.divergences`). The train step's mean over local examples, pmean over devices, gives the
one-device
value on the same global batch, and its gradients (all_gather's transpose routes every device's cotangent
back) the one-device update. Called with the device axis unbound (plain jit, one device) the local batch is
the global batch. Every term reads float32 copies of the model's outputs.

β-TCVAE (Chen et al. 2018), from z [B, D] (the first draw of q(z|x)), mean and logvar [B, D] and the
constant `dataset_size` N (the training split's length, added by `train.objective_constants`), nats:

  tc_mi    = log q(z_i|x_i) - log q(z_i)             index-code mutual information       (weight α)
  tc       = log q(z_i) - sum_d log q(z_id)          total correlation                   (weight β)
  tc_dwkl  = sum_d log q(z_id) - log p(z_i)          dimension-wise KL                   (weight γ)

so tc_mi + tc + tc_dwkl = log q(z_i|x_i) - log p(z_i), the sampled KL, and α = β = γ = 1 is the ELBO's KL.
The estimator of log q(z) is chosen by the term's name: `tc_mi`, `tc`, `tc_dwkl` use minibatch stratified
sampling (MSS), `tc_mi_mws`, `tc_mws`, `tc_dwkl_mws` minibatch weighted sampling (MWS, offset by about
log N per term; see `divergences`). The paper's objective is

  config.loss = {"bernoulli_nll": 1.0, "tc_mi": 1.0, "tc": 6.0, "tc_dwkl": 1.0}   (β = 6).

MMD between q(z) (the samples z) and p(z) = N(0, I) (the model's `prior_z` [B, D], one draw per example),
the unbiased U-statistic MMD^2_u over the global batch, squared kernel units (dimensionless), C = 2 D:

  mmd_imq              inverse multiquadric C / (C + |x - y|^2)
  mmd_rbf              Gaussian exp(-|x - y|^2 / C)
  mmd_imq_multiscale   sum of the IMQ kernel over the scales c C, c in divergences.WAE_MULTIPLIERS
  mmd_rbf_multiscale   the same for the Gaussian kernel

InfoVAE (Zhao et al. 2019) maximises E log p(x|z) - (1 - α) KL(q(z|x) || p(z)) - (α + λ - 1) D(q(z) || p(z));
with D = MMD (the MMD-VAE) it is config.loss = {"bernoulli_nll": 1.0, "kl": 1 - α, "mmd_rbf": α + λ - 1};
the paper's α = 0, λ = 1000 gives {"bernoulli_nll": 1.0, "kl": 1.0, "mmd_rbf": 999.0}. WAE-MMD (Tolstikhin
et al. 2018) is a reconstruction cost plus λ MMD and no KL: with the squared Euclidean cost |x - x'|^2 on
P pixels, config.loss = {"mse": P, "mmd_imq_multiscale": λ} (the paper's λ = 10 on MNIST) and
config.model.deterministic_encoder = True for its deterministic encoder (z = the posterior mean).

Evaluation. `train.eval_sums` runs the objective per device under pmap on evaluation batches whose padding
(of the last partial batch) has batch["valid"] = 0. The terms gather "valid" with the rest and leave the
padding out of the estimate: each evaluation batch's estimator is computed over its real examples only
(padding neither enters the other examples' values nor gets one: its contributions are 0), so padding
changes nothing. The reported split mean is sum_b n_b E_b / sum_b n_b over the evaluation batches b, with
n_b real examples and E_b the estimator on them: the example-weighted mean of per-batch estimates at
`config.eval_batch_size`, not one estimate over the whole split. MMD^2_u is unbiased at any batch size;
the β-TCVAE estimates depend on the batch size M (MSS nears the full-data value as M nears N), so compare
runs at the same evaluation batch size. A last batch with a single real example contributes 0 to the MMD
(no U-statistic exists).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.losses import divergences
from ae_jax.losses.functions import LossTerm

Outputs = Mapping[str, jax.Array]
Batch = Mapping[str, jax.Array]

TC_PARTS = {"tc_mi": "mi", "tc": "tc", "tc_dwkl": "dwkl"}  # term name (MSS) -> divergences.tc_terms key
TC_SUFFIXES = {"mss": "", "mws": "_mws"}  # estimator -> suffix of its term names
MMD_KERNELS = {"imq": divergences.imq_kernel, "rbf": divergences.rbf_kernel}
MMD_SCALES = {"": (1.0,), "_multiscale": divergences.WAE_MULTIPLIERS}  # name suffix -> kernel multipliers


def _axis_bound() -> bool:
  try:
    jax.lax.axis_index(parallel.AXIS)
  except NameError:
    return False
  return True


def gather(*arrays: jax.Array) -> tuple[list[jax.Array], jax.Array]:
  """This device's arrays [B, ...] gathered over the device axis ([M, ...], device-major) and `index` [B],
  the positions of the local examples in them. Without a bound device axis: the arrays and arange(B)."""
  b = arrays[0].shape[0]
  if not _axis_bound():
    return list(arrays), jnp.arange(b, dtype=jnp.int32)
  gathered = [jax.lax.all_gather(a, parallel.AXIS, tiled=True) for a in arrays]
  return gathered, divergences.local_index(b, parallel.AXIS)


def _latent(outputs: Outputs, key: str, term: str) -> jax.Array:
  value = losses.require_output(outputs, key, term)
  if value.ndim != 2:
    raise ValueError(
      f"loss term '{term}' needs '{key}' of shape [batch, latent], got {value.shape}; batch-level terms "
      "take one latent vector per example (not one per time step)"
    )
  return value.astype(jnp.float32)


def _valid(batch: Batch, like: jax.Array) -> jax.Array:
  """batch["valid"] [B] (1 = real example) or all ones when the batch has no padding."""
  if "valid" in batch:
    return jnp.asarray(batch["valid"], jnp.float32)
  return jnp.ones(like.shape[:1], jnp.float32)


def _dataset_size(batch: Batch, term: str) -> int:
  if "dataset_size" not in batch:
    raise KeyError(
      f"loss term '{term}' needs the number of training examples (batch['dataset_size']), which the trainer "
      "adds from the dataset; pass constants={'dataset_size': N} to losses.make_objective"
    )
  try:
    return int(batch["dataset_size"])
  except jax.errors.ConcretizationTypeError as e:
    raise TypeError(f"loss term '{term}': dataset_size must be a Python number, not a traced array") from e


def tc_decomposition(outputs: Outputs, batch: Batch, estimator: str = "mss", term: str = "tc") -> dict:
  """`divergences.tc_terms` of this device's examples over the gathered global batch (padding left out):
  {"mi", "tc", "dwkl", "log_qz", "log_qz_product", "log_qz_x", "log_pz"}, each [B], nats."""
  z = _latent(outputs, "z", term)
  mean, logvar = _latent(outputs, "mean", term), _latent(outputs, "logvar", term)
  valid = _valid(batch, z)
  (mean_all, logvar_all, valid_all), index = gather(mean, logvar, valid)
  n = _dataset_size(batch, term)
  return divergences.tc_terms(z, mean, logvar, mean_all, logvar_all, index, n, estimator, valid_all)


def mmd(outputs: Outputs, batch: Batch, kernel: divergences.Kernel, term: str = "mmd") -> jax.Array:
  """Per-example contributions [B] to MMD^2_u(q(z), p(z)) over the gathered global batch (padding left
  out), from outputs["z"] and outputs["prior_z"] [B, D]; kernel units."""
  z, prior = _latent(outputs, "z", term), _latent(outputs, "prior_z", term)
  valid = _valid(batch, z)
  (z_all, prior_all, valid_all), index = gather(z, prior, valid)
  return divergences.mmd_terms(z, prior, z_all, prior_all, index, kernel, valid_all)


def _tc_term(name: str, part: str, estimator: str) -> LossTerm:
  def term(outputs: Outputs, batch: Batch) -> jax.Array:
    return tc_decomposition(outputs, batch, estimator, name)[part]

  term.__name__ = name
  term.__doc__ = f"β-TCVAE '{part}' per example [B] in nats, {estimator.upper()} over the global batch."
  return term


def _mmd_term(name: str, kernel: divergences.Kernel) -> LossTerm:
  def term(outputs: Outputs, batch: Batch) -> jax.Array:
    return mmd(outputs, batch, kernel, name)

  term.__name__ = name
  term.__doc__ = "Per-example contributions [B] to the unbiased MMD^2 between q(z) and N(0, I), kernel units."
  return term


for _estimator, _suffix in TC_SUFFIXES.items():
  for _base, _part in TC_PARTS.items():
    _name = _base + _suffix
    losses.register(_name, constants=("dataset_size",))(_tc_term(_name, _part, _estimator))

for _family, _kernel in MMD_KERNELS.items():
  for _suffix, _multipliers in MMD_SCALES.items():
    _name = f"mmd_{_family}{_suffix}"
    losses.register(_name)(_mmd_term(_name, functools.partial(_kernel, scale=1.0, multipliers=_multipliers)))
