"""VAEs: reparameterisation gradients, IWAE bounds, importance-sampled likelihood against a closed form."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.data import synthetic_images
from ae_jax.evaluators.likelihood import evaluate_likelihood, importance_estimate, log_importance_weights
from ae_jax.models import get_model
from ae_jax.runner import loop

D, L = 6, 2  # data and latent dimensions of the linear-Gaussian model
SIGMA2 = 0.3  # decoder noise variance


def _linear_gaussian(num_samples=1):
  """A VAE whose marginal p(x) = N(b, W^T W + s^2 I) is known, with a deliberately imperfect encoder."""
  model = get_model(
    "vae_mlp",
    input_shape=(D,),
    hidden=(),
    latent_dim=L,
    likelihood="gaussian",
    gaussian_logvar=math.log(SIGMA2),
    num_samples=num_samples,
  )
  rng = np.random.default_rng(0)
  w = rng.normal(size=(L, D)).astype(np.float32)  # x = z @ w + b + noise
  b = rng.normal(size=(D,)).astype(np.float32)
  post_cov = np.linalg.inv(np.eye(L) + w @ w.T / SIGMA2)
  k_mean = 0.9 * (w.T @ post_cov / SIGMA2)  # 10% off the exact posterior mean map
  enc_kernel = np.concatenate([k_mean, np.zeros((D, L))], axis=1).astype(np.float32)
  enc_bias = np.concatenate([-b @ k_mean, np.log(1.5 * np.diag(post_cov))]).astype(np.float32)  # wider
  params = {
    "encoder": {"code": {"kernel": enc_kernel, "bias": enc_bias}},
    "decoder": {"output": {"kernel": w, "bias": b}},
  }
  cov = w.T @ w + SIGMA2 * np.eye(D)
  return model, {"params": jax.tree.map(jnp.asarray, params)}, b, cov


def _exact_log_px(x, b, cov):
  diff = x - b
  _, logdet = np.linalg.slogdet(cov)
  return -0.5 * (
    np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff) + logdet + D * math.log(2 * math.pi)
  )


def test_linear_gaussian_parameter_tree_is_what_the_test_sets():
  model, variables, _, _ = _linear_gaussian()
  shapes = jax.eval_shape(
    lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, jnp.zeros((1, D)))
  )
  chex.assert_trees_all_equal_shapes(shapes["params"], variables["params"])


def test_importance_sampled_likelihood_matches_closed_form():
  """K = 1000 importance samples estimate log p(x) of a linear-Gaussian VAE within 3 standard errors."""
  model, variables, b, cov = _linear_gaussian()
  x = np.random.default_rng(1).multivariate_normal(b, cov, size=16).astype(np.float32)
  log_w, _, _ = jax.jit(log_importance_weights, static_argnums=(0, 4, 5))(
    model, variables, x, jax.random.key(2), 1000, 100
  )
  estimate, stderr = importance_estimate(log_w)
  exact = _exact_log_px(x, b, cov)
  combined_se = float(np.sqrt(np.sum(np.square(stderr)))) / len(x)
  assert abs(float(np.mean(estimate)) - float(np.mean(exact))) < 3 * combined_se
  assert np.all(np.abs(np.asarray(estimate) - exact) < 5 * np.asarray(stderr) + 1e-4)
  assert 0 < combined_se < 0.05  # the check has teeth: the standard error is small


def test_iwae_bound_k1_is_elbo_and_increases_with_k():
  """E[log mean of k weights]: k = 1 is the ELBO; the bound rises with k and stays below log p(x)."""
  model, variables, b, cov = _linear_gaussian()
  x = np.random.default_rng(3).multivariate_normal(b, cov, size=8).astype(np.float32)
  repeats = 400
  log_w, log_px_z, kl = jax.jit(log_importance_weights, static_argnums=(0, 4, 5))(
    model, variables, x, jax.random.key(4), 50 * repeats, 5000
  )
  log_w = np.asarray(log_w)

  @functools.partial(jax.jit, static_argnums=1)
  def mean_and_stderr(groups, k):
    vals = jax.nn.logsumexp(groups, axis=1) - math.log(k)
    return vals.mean(0), vals.std(0) / math.sqrt(groups.shape[0])

  def bound(k):  # average over independent groups of k weights
    groups = log_w[: (len(log_w) // k) * k].reshape(-1, k, len(x))
    return jax.tree.map(np.asarray, mean_and_stderr(groups, k))

  b1, se1 = bound(1)
  # k = 1 is the ELBO: exactly the sampled-KL one, and within Monte Carlo error of the exact-KL one.
  np.testing.assert_allclose(b1, log_w.mean(0), rtol=1e-5)  # float32 sums of 20,000 terms
  elbo = np.asarray(log_px_z).mean(0) - np.asarray(kl)
  assert np.all(np.abs(b1 - elbo) < 4 * se1)
  b5, se5 = bound(5)
  b50, se50 = bound(50)
  exact = _exact_log_px(x, b, cov)
  assert np.all(b5 - b1 > 3 * np.sqrt(se1**2 + se5**2))
  assert np.all(b50 - b5 > 3 * np.sqrt(se5**2 + se50**2))
  assert np.all(b50 < exact + 3 * se50)


def test_iwae_loss_term_with_one_sample_is_negative_sampled_elbo():
  model, variables, b, cov = _linear_gaussian(num_samples=1)
  x = np.random.default_rng(5).multivariate_normal(b, cov, size=4).astype(np.float32)

  @jax.jit
  def iwae_and_sampled_elbo(variables, x):
    out = model.apply(variables, x, rngs={"sample": jax.random.key(6)})
    nll = losses.gaussian_nll(out["recon"], x, out["recon_logvar"])
    log_q_minus_log_p = out["log_qz_x"][0] - out["log_pz"][0]
    return losses.LOSSES["iwae"](out, {"x": x}), nll + log_q_minus_log_p

  iwae, neg_elbo = iwae_and_sampled_elbo(variables, x)
  np.testing.assert_allclose(iwae, neg_elbo, rtol=1e-5)


def _mean_iwae_term(model, variables, x, draws):
  def term(rng):
    return losses.LOSSES["iwae"](model.apply(variables, x, rngs={"sample": rng}), {"x": x})

  return np.asarray(jax.jit(jax.vmap(term))(jax.random.split(jax.random.key(8), draws))).mean(0)


def test_iwae_loss_term_decreases_with_k_on_a_fixed_model():
  """The training term -IWAE_k averaged over many draws falls as k grows (a tighter bound)."""
  values = []
  for k in (1, 10):
    model, variables, b, cov = _linear_gaussian(num_samples=k)
    x = np.random.default_rng(7).multivariate_normal(b, cov, size=4).astype(np.float32)
    values.append(_mean_iwae_term(model, variables, x, draws=500))
  assert np.all(values[1] < values[0])


def test_reparameterisation_gradient_reaches_mean_and_logvar():
  """z = mean + exp(logvar/2) eps: d sum(c*z)/d mean = c and d/d logvar = c * eps * exp(logvar/2) / 2."""
  model, variables, b, cov = _linear_gaussian()
  x = np.random.default_rng(9).multivariate_normal(b, cov, size=3).astype(np.float32)
  c = np.random.default_rng(10).normal(size=(3, L)).astype(np.float32)
  rng = jax.random.key(11)

  def f(bias):
    params = jax.tree.map(lambda a: a, variables["params"])
    params["encoder"]["code"]["bias"] = bias
    return jnp.sum(c * model.apply({"params": params}, x, rngs={"sample": rng})["z"])

  grad = jax.jit(jax.grad(f))(variables["params"]["encoder"]["code"]["bias"])
  out = jax.jit(lambda v: model.apply(v, x, rngs={"sample": rng}))(variables)
  std = np.exp(0.5 * np.asarray(out["logvar"]))
  eps = (np.asarray(out["z"]) - np.asarray(out["mean"])) / std
  np.testing.assert_allclose(grad[:L], c.sum(0), rtol=1e-5)
  np.testing.assert_allclose(grad[L:], (c * eps * std / 2).sum(0), rtol=1e-4)
  assert np.all(np.abs(grad) > 0)


@pytest.mark.parametrize("name", ["vae_mlp", "vae_conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian_learned"])
def test_vae_outputs_and_loss_terms(name, likelihood):
  model = get_model(name, likelihood=likelihood, num_samples=3)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x))
  params = jax.jit(lambda: jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes))()
  out = jax.jit(lambda p, x: model.apply(p, x, rngs={"sample": jax.random.key(2)}))(params, x)
  latent = model.latent_dim
  chex.assert_shape([out["mean"], out["logvar"], out["z"], out["code"]], (2, latent))
  chex.assert_shape([out["log_px_z"], out["log_pz"], out["log_qz_x"]], (3, 2))
  chex.assert_shape(out["recon"], (2, 28, 28, 1))
  term = "bernoulli_nll" if likelihood == "bernoulli" else "gaussian_nll"
  # The first draw's log p(x|z) is the negative of the matching per-example loss term.
  nll = jax.jit(lambda out, x: losses.LOSSES[term](out, {"x": x}))(out, x)
  np.testing.assert_allclose(-nll, out["log_px_z"][0], rtol=1e-5)


@pytest.mark.parametrize("upsample", ["auto", "subpixel", "transpose"])
def test_vae_conv_default_parameter_tree(upsample):
  """The default vae_conv (num_downsamples=0: conv_ae's seed geometry, 28x28) keeps its parameter paths and
  shapes, whichever form computes the transposed convolutions."""
  model = get_model("vae_conv", upsample=upsample)
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(
    lambda x: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x), x
  )
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  assert set(variables) == {"params"}
  assert {"/".join(k.key for k in path): leaf.shape for path, leaf in flat} == {
    "decoder/ConvTranspose_0/bias": (32,),
    "decoder/ConvTranspose_0/kernel": (3, 3, 64, 32),
    "decoder/ConvTranspose_1/bias": (16,),
    "decoder/ConvTranspose_1/kernel": (3, 3, 32, 16),
    "decoder/ConvTranspose_2/bias": (8,),
    "decoder/ConvTranspose_2/kernel": (3, 3, 16, 8),
    "decoder/ConvTranspose_3/bias": (1,),
    "decoder/ConvTranspose_3/kernel": (3, 3, 8, 1),
    "decoder/Dense_0/bias": (32,),
    "decoder/Dense_0/kernel": (16, 32),
    "decoder/Dense_1/bias": (64,),
    "decoder/Dense_1/kernel": (32, 64),
    "encoder/Conv_0/bias": (8,),
    "encoder/Conv_0/kernel": (3, 3, 1, 8),
    "encoder/Conv_1/bias": (16,),
    "encoder/Conv_1/kernel": (3, 3, 8, 16),
    "encoder/Conv_2/bias": (32,),
    "encoder/Conv_2/kernel": (3, 3, 16, 32),
    "encoder/Conv_3/bias": (64,),
    "encoder/Conv_3/kernel": (3, 3, 32, 64),
    "encoder/Dense_0/bias": (32,),
    "encoder/Dense_0/kernel": (64, 32),
    "posterior/bias": (32,),
    "posterior/kernel": (32, 32),
  }


@pytest.mark.training
def test_vae_trains_and_likelihood_evaluation_runs(tiny_config, tmp_path):
  """A small Bernoulli VAE on binarised synthetic images: the negative ELBO falls; the IS NLL is below it."""
  c = tiny_config
  c.model.name = "vae_mlp"
  c.model = {"name": "vae_mlp", "hidden": (32,), "latent_dim": 4}
  c.data.scale, c.data.binarize = "unit", "dynamic"
  c.loss = {"bernoulli_nll": 1.0, "kl": 1.0}
  c.total_steps, c.optimizer.learning_rate = 30, 1e-2
  summary = loop.train_and_evaluate(c, str(tmp_path))
  state, model, info = summary["state"], summary["model"], summary["dataset"].info
  test = synthetic_images(40, (8, 8, 1), seed=2)
  rstate = parallel.replicate(state)
  result = evaluate_likelihood(model, rstate, test, info, num_samples=200, chunk_size=50, batch_size=16)
  neg_elbo = summary["metrics"]["test/bernoulli_nll"] + summary["metrics"]["test/kl"]
  assert result["num_examples"] == 40
  assert result["nll"] < result["neg_elbo"] + 3 * result["nll_stderr"]
  assert abs(result["neg_elbo"] - neg_elbo) < 0.05 * neg_elbo  # two estimates of the same ELBO
  assert result["bits_per_dim"] == pytest.approx(result["nll"] / (64 * math.log(2)))
