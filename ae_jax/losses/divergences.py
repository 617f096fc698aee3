"""Batch-level divergence estimators for VAE objectives: MMD (InfoVAE / MMD-VAE, WAE-MMD) and the β-TCVAE
decomposition of the KL term (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

Global batch. The training step runs per device under `jax.pmap` and averages per-example loss terms over
the global batch of M = devices * B examples. These estimators need all M examples, so each function takes
this device's B examples, the same arrays gathered over the device axis
(`jax.lax.all_gather(x, axis_name, tiled=True)`, [M, ...]) and `index` [B], each local example's position in
the gathered arrays (`local_index`). They return per-example contributions t_i [B] whose mean over the global
batch is the estimator, so the usual mean over local examples, then over devices, gives exactly the
one-device value. `all_gather` is differentiable (its transpose is a reduce-scatter), so with the usual
pmean of per-device gradients every example receives the gradient of the global estimator. On one device
pass the local arrays twice and `index = jnp.arange(B)`.

MMD. With kernel k, samples x_1..x_n ~ P and y_1..y_m ~ Q, the unbiased estimate of MMD^2(P, Q) (a
U-statistic: the within-sample sums exclude i == j) is

  MMD^2_u = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
            - 2/(nm) sum_{i, j} k(x_i, y_j).

For a VAE, z_i ~ q(z|x_i) and one prior draw p_i ~ p(z) = N(0, I) per example (n = m = M); the per-example
contribution is

  t_i = 1/(M-1) sum_{j != i} [k(z_i, z_j) + k(p_i, p_j)] - 2/M sum_j k(z_i, p_j),   mean_i t_i = MMD^2_u.

Kernels, with |.| the Euclidean norm over the latent dimension D and C = 2 D sigma^2 (sigma^2 the prior's
variance per dimension, `scale`; 1 for N(0, I)) as in the WAE paper:

  inverse multiquadric  k(x, y) = sum_c cC / (cC + |x - y|^2),
  Gaussian (RBF)        k(x, y) = sum_c exp(-|x - y|^2 / (cC)),

summed over the multipliers c in `multipliers`: the default (1,) is the single kernel; `WAE_MULTIPLIERS`
(0.1, 0.2, 0.5, 1, 2, 5, 10) is the sum over scales of the WAE reference code, less sensitive to the choice
of C. WAE uses the IMQ kernel, whose heavy tails keep gradients for distant samples.
MMD^2 is in squared kernel units (dimensionless, at most 2 * len(multipliers)), not nats, and the
unbiased estimate is negative about half the time when P = Q.

β-TCVAE. For z_i ~ q(z|x_i), one per example, write L_ijd = log q(z_id | x_j) = log N(z_id; mean_jd,
exp(logvar_jd)) ([B, M, D], nats). The aggregate posterior q(z) = 1/N sum_n q(z|x_n) over a dataset of N
examples and its marginals q(z_d) are estimated from the global batch with importance weights w_ij:

  log q(z_i)   ~= log sum_j w_ij exp(sum_d L_ijd),        log q(z_id) ~= log sum_j w_ij exp(L_ijd),

  minibatch weighted sampling (MWS):    w_ij = 1/(N M) for every j, including j = i;
  minibatch stratified sampling (MSS):  w_ii = 1/N, w_ij = (N - M + 1) / (N (M - 1)) for the one j that
                                        follows i cyclically (j = i + 1 mod M), w_ij = 1/(M - 1) otherwise.

These are the paper's estimators with the reference code's conventions (github rtqichen/beta-tcvae,
`VAE.elbo` and `_log_importance_weight_matrix`): the batch includes the example's own posterior, MWS
subtracts log(N M) from the log-sum-exp, MSS gives one other example the weight (N - M + 1) / (N (M - 1)).
The reference code writes the 1/N and special entries of its [M, M] matrix with a flat stride of M, which
lands them in its first two columns rather than on the diagonal and next to it (its open pull request #1);
here the 1/N weight is on the diagonal, as in the paper. Each MSS row sums to 1, so MSS is exact when q(z|x)
does not depend on x and close to exact when the batch is the whole dataset (M = N). MWS rows sum to 1/N, so
its log q(z_i) is biased low: by exactly log N when M = N, and by between about log M and log N in general
(log M when the posteriors barely overlap). That offset moves its MI up by the same amount, its TC up by
about (D - 1) times it and its dimension-wise KL down by about D times it; prefer MSS when the values
themselves matter.

The per-example terms (nats) are

  mi_i   = log q(z_i|x_i) - log q(z_i)                 index-code mutual information,
  tc_i   = log q(z_i) - sum_d log q(z_id)              total correlation,
  dwkl_i = sum_d log q(z_id) - log p(z_i)              dimension-wise KL,

and by construction mi_i + tc_i + dwkl_i = log q(z_i|x_i) - log p(z_i), a one-sample estimate of
KL(q(z|x_i) || p(z)) (the closed form is `losses.gaussian_kl`). Their global-batch means estimate I(x; z),
KL(q(z) || prod_d q(z_d)) and sum_d KL(q(z_d) || p(z_d)); the β-TCVAE objective weights them α, β, γ.

Padding. Both estimators take an optional `valid_all` [M] (1 = a real example, 0 = padding, e.g. the
`batch["valid"]` of an evaluation batch gathered over devices): padded examples then take no part in the
estimate, which is the estimator over the M_v = sum(valid_all) real examples alone (MSS's "next" example
is the next real one), and their own contributions are 0. With fewer than 2 real examples MMD is 0 (no
U-statistic exists) and MSS gives the one example weight 1 (q(z) is its posterior).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Kernel = Callable[[jax.Array, jax.Array], jax.Array]

_LOG_2PI = math.log(2.0 * math.pi)

WAE_MULTIPLIERS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
TC_ESTIMATORS = ("mss", "mws")


def local_index(batch_size: int, axis_name: str | None = None) -> jax.Array:
  """Positions of this device's `batch_size` examples in `all_gather(..., axis_name, tiled=True)`: int32 [B].

  Without `axis_name` (one device) it is `arange(batch_size)`.
  """
  index = jnp.arange(batch_size, dtype=jnp.int32)
  if axis_name is None:
    return index
  return jax.lax.axis_index(axis_name) * batch_size + index


# ----------------------------------------------------------------------------- log-densities


def normal_logpdf(x: jax.Array, mean: jax.Array | float, logvar: jax.Array | float) -> jax.Array:
  """log N(x; mean, exp(logvar)) per element (not summed), in nats; arguments broadcast. The one Gaussian
  log-density: the others here and `losses.gaussian_nll` are sums of it."""
  return -0.5 * (_LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar))


def standard_normal_logpdf(z: jax.Array) -> jax.Array:
  """log N(z; 0, I) summed over the last axis, in nats: [..., D] -> [...]."""
  return jnp.sum(normal_logpdf(z, 0.0, 0.0), axis=-1)


def diagonal_normal_logpdf(eps: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, exp(logvar)) summed over the last axis, in nats, for z = mean + exp(logvar / 2) * eps:
  [..., D] x2 -> [...]. By the change of variables it is log N(eps; 0, I) - sum(logvar) / 2, which needs
  neither z nor the mean."""
  return jnp.sum(normal_logpdf(eps, 0.0, 0.0) - 0.5 * logvar, axis=-1)


# ----------------------------------------------------------------------------- MMD


def _squared_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """|x - y|^2 over the last axis, broadcasting leading axes: [..., D] x2 -> [...]; exactly 0 at x == y."""
  return jnp.sum(jnp.square(x - y), axis=-1)


def imq_kernel(
  x: jax.Array, y: jax.Array, scale: float = 1.0, multipliers: Sequence[float] = (1.0,)
) -> jax.Array:
  """Inverse multiquadric kernel sum_c cC / (cC + |x - y|^2), C = 2 D `scale`: [..., D] x2 -> [...].

  `scale` is the prior's variance per dimension; leading axes broadcast, so `imq_kernel(a[:, None], b[None])`
  is the [N, M] Gram matrix.
  """
  d2 = _squared_distance(x, y)
  base = 2.0 * x.shape[-1] * scale
  return sum(c * base / (c * base + d2) for c in multipliers)


def rbf_kernel(
  x: jax.Array, y: jax.Array, scale: float = 1.0, multipliers: Sequence[float] = (1.0,)
) -> jax.Array:
  """Gaussian kernel sum_c exp(-|x - y|^2 / (cC)), C = 2 D `scale`: [..., D] x2 -> [...] (as `imq_kernel`)."""
  d2 = _squared_distance(x, y)
  base = 2.0 * x.shape[-1] * scale
  return sum(jnp.exp(-d2 / (c * base)) for c in multipliers)


def _gram(kernel: Kernel, x: jax.Array, y: jax.Array) -> jax.Array:
  return kernel(x[:, None, :], y[None, :, :])


def mmd_unbiased(x: jax.Array, y: jax.Array, kernel: Kernel = imq_kernel) -> jax.Array:
  """Unbiased estimate MMD^2_u of samples x [N, D] ~ P and y [M, D] ~ Q (N, M >= 2): scalar, kernel units."""
  n, m = x.shape[0], y.shape[0]
  if n < 2 or m < 2:
    raise ValueError(f"mmd_unbiased needs at least 2 samples from each distribution, got {n} and {m}")
  kxx, kyy, kxy = _gram(kernel, x, x), _gram(kernel, y, y), _gram(kernel, x, y)
  within_x = (kxx.sum() - jnp.trace(kxx)) / (n * (n - 1))
  within_y = (kyy.sum() - jnp.trace(kyy)) / (m * (m - 1))
  return within_x + within_y - 2.0 * kxy.mean()


def mmd_terms(
  z: jax.Array,
  prior: jax.Array,
  z_all: jax.Array,
  prior_all: jax.Array,
  index: jax.Array,
  kernel: Kernel = imq_kernel,
  valid_all: jax.Array | None = None,
) -> jax.Array:
  """Per-example contributions [B] to the unbiased MMD^2 between q(z) and p(z) over the global batch.

  z [B, D]: this device's samples z_i ~ q(z|x_i); prior [B, D]: one draw from p(z) per example;
  z_all, prior_all [M, D]: the same gathered over all devices; index [B]: positions of z in z_all;
  valid_all [M] (optional): 1 for real examples, 0 for padding (see the module docstring).
  The mean over the global batch of the result is `mmd_unbiased(z_all, prior_all, kernel)`; with
  `valid_all`, its sum over the real examples divided by their number is the same over the real rows only.
  """
  m = z_all.shape[0]
  if m < 2:
    raise ValueError(f"mmd_terms needs a global batch of at least 2 examples, got {m}")
  others = jnp.arange(m)[None, :] != index[:, None]  # [B, M]: j != i
  kzp_all = _gram(kernel, z, prior_all)
  if valid_all is None:
    kzz = jnp.where(others, _gram(kernel, z, z_all), 0.0).sum(axis=1)
    kpp = jnp.where(others, _gram(kernel, prior, prior_all), 0.0).sum(axis=1)
    return (kzz + kpp) / (m - 1) - 2.0 * kzp_all.sum(axis=1) / m
  real = valid_all > 0  # [M]
  count = real.sum().astype(z.dtype)
  pairs = others & real[None, :]
  kzz = jnp.where(pairs, _gram(kernel, z, z_all), 0.0).sum(axis=1)
  kpp = jnp.where(pairs, _gram(kernel, prior, prior_all), 0.0).sum(axis=1)
  kzp = jnp.where(real[None, :], kzp_all, 0.0).sum(axis=1)
  terms = (kzz + kpp) / jnp.maximum(count - 1.0, 1.0) - 2.0 * kzp / jnp.maximum(count, 1.0)
  return jnp.where(real[index] & (count >= 2), terms, 0.0)


# ----------------------------------------------------------------------------- β-TCVAE


def _log_weights(index: jax.Array, batch_size: int, dataset_size: int, estimator: str) -> jax.Array:
  """log w_ij [B, M] of the estimator (see the module docstring) for the local rows `index`."""
  n, m = float(dataset_size), batch_size
  if estimator == "mws":
    return jnp.full((index.shape[0], m), -math.log(n * m))
  cols = jnp.arange(m)[None, :]
  rows = index[:, None]
  strat = math.log((n - m + 1) / (n * (m - 1)))
  log_w = jnp.where(cols == rows, -math.log(n), -math.log(m - 1))
  return jnp.where(cols == (rows + 1) % m, strat, log_w)


def _masked_log_weights(index: jax.Array, real: jax.Array, dataset_size: int, estimator: str) -> jax.Array:
  """`_log_weights` over the real examples only (bool `real` [M]); padded columns get log w = -inf."""
  n, m = float(dataset_size), real.shape[0]
  count = real.sum()
  count_f = count.astype(jnp.float32)
  if estimator == "mws":
    log_w = jnp.broadcast_to(-jnp.log(n * count_f), (index.shape[0], m))
  else:
    cols, rows = jnp.arange(m)[None, :], index[:, None]
    rank = jnp.cumsum(real) - 1  # [M]: the position of each real example among the real ones
    successor = (rank[index] + 1) % jnp.maximum(count, 1)  # [B]: the rank of the next real example
    is_next = real[None, :] & (rank[None, :] == successor[:, None]) & (cols != rows)
    others = jnp.maximum(count_f - 1.0, 1.0)
    own = jnp.where(count > 1, -math.log(n), 0.0)
    log_w = jnp.where(cols == rows, own, -jnp.log(others))
    log_w = jnp.where(is_next, jnp.log((n - count_f + 1.0) / (n * others)), log_w)
  return jnp.where(real[None, :], log_w, -jnp.inf)


def tc_terms(
  z: jax.Array,
  mean: jax.Array,
  logvar: jax.Array,
  mean_all: jax.Array,
  logvar_all: jax.Array,
  index: jax.Array,
  dataset_size: int,
  estimator: str = "mss",
  valid_all: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """β-TCVAE decomposition of log q(z_i|x_i) - log p(z_i) into per-example terms, in nats.

  z [B, D]: one sample z_i ~ q(z|x_i) per local example; mean, logvar [B, D]: its posterior;
  mean_all, logvar_all [M, D]: the posteriors of the global batch (gathered); index [B]: positions of the
  local examples in them; dataset_size: N, the number of training examples (M <= N); estimator: "mss"
  (minibatch stratified sampling) or "mws" (minibatch weighted sampling); valid_all [M] (optional): 1 for
  real examples, 0 for padding, which then takes no part (see the module docstring) and gets 0 everywhere.

  Returns {"mi", "tc", "dwkl"}, each [B], with mi + tc + dwkl = log q(z_i|x_i) - log p(z_i); the global-batch
  means estimate I(x; z), KL(q(z) || prod_d q(z_d)) and sum_d KL(q(z_d) || p(z_d)). Also "log_qz",
  "log_qz_product" (sum_d log q(z_id)), "log_qz_x" and "log_pz", each [B].
  """
  if estimator not in TC_ESTIMATORS:
    raise ValueError(f"unknown total-correlation estimator '{estimator}'; choose {TC_ESTIMATORS}")
  m = mean_all.shape[0]
  if m < 2:
    raise ValueError(f"tc_terms needs a global batch of at least 2 examples, got {m}")
  if dataset_size < m:
    raise ValueError(
      f"dataset_size {dataset_size} is smaller than the global batch of {m} examples; pass the number of "
      "training examples"
    )
  if valid_all is None:
    log_w = _log_weights(index, m, dataset_size, estimator)  # [B, M]
  else:
    log_w = _masked_log_weights(index, valid_all > 0, dataset_size, estimator)
  log_q = normal_logpdf(z[:, None, :], mean_all[None, :, :], logvar_all[None, :, :])  # [B, M, D]
  log_qz = jax.nn.logsumexp(log_w + log_q.sum(axis=-1), axis=1)
  log_qz_product = jax.nn.logsumexp(log_w[:, :, None] + log_q, axis=1).sum(axis=-1)
  log_qz_x = normal_logpdf(z, mean, logvar).sum(axis=-1)
  log_pz = standard_normal_logpdf(z)
  terms = {
    "mi": log_qz_x - log_qz,
    "tc": log_qz - log_qz_product,
    "dwkl": log_qz_product - log_pz,
    "log_qz": log_qz,
    "log_qz_product": log_qz_product,
    "log_qz_x": log_qz_x,
    "log_pz": log_pz,
  }
  if valid_all is None:
    return terms
  mine = valid_all[index] > 0
  return {name: jnp.where(mine, value, 0.0) for name, value in terms.items()}
