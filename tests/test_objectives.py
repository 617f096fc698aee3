"""The VAE objectives built from batch-level terms (β-TCVAE, InfoVAE / MMD-VAE, WAE-MMD), end to end: the
pmapped train step on 8 devices equals 1 device, the β-TCVAE terms add up to the sampled KL, the MMD terms
are unbiased under the null, evaluation padding changes nothing, and the shipped objectives train."""

from __future__ import annotations

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import run_pmapped_steps

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.data import get_dataset, synthetic_images
from ae_jax.losses import batch_terms
from ae_jax.models import get_model
from ae_jax.models.vae import VAEMLP
from ae_jax.runner import loop
from ae_jax.training import train
from experiments.configs import vae_conv_fashion_mnist, vae_mlp_fashion_mnist

SHAPE = (8, 8, 1)
LATENT = 3
N_TRAIN = 96
TC_TERMS = [name + suffix for suffix in batch_terms.TC_SUFFIXES.values() for name in batch_terms.TC_PARTS]
MMD_TERMS = ["mmd_imq", "mmd_rbf", "mmd_imq_multiscale", "mmd_rbf_multiscale"]
NEW_TERMS = TC_TERMS + MMD_TERMS


def _images(num: int, seed: int = 0) -> np.ndarray:
  return np.stack([r["image"] for r in synthetic_images(num, SHAPE, seed)]).astype(np.float32) / 255.0


class _ExampleNoiseVAE(VAEMLP):
  """A VAE whose noise (eps and prior_z) is a fixed function of each example instead of the device's key,
  so a global batch split over 8 devices draws exactly what one device draws for it."""

  def draw_noise(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    flat = x.reshape(x.shape[0], -1)
    proj = jax.random.normal(jax.random.key(7), (flat.shape[1], 2 * self.latent_dim))
    u = jnp.sin(flat @ proj)  # [B, 2D], in [-1, 1], distinct per example
    eps = jnp.broadcast_to(1.5 * u[:, : self.latent_dim], (self.num_samples, x.shape[0], self.latent_dim))
    return eps, 1.5 * u[:, self.latent_dim :]


# ----------------------------------------------------------------------------- train step across devices


def test_every_batch_level_term_on_8_devices_equals_1_device():
  """Two pmapped train steps with every new term in the objective (distinct weights): 8 devices x 2 examples
  give the loss, every term and the parameter update of 1 device with all 16."""
  assert jax.local_device_count() == 8
  model = _ExampleNoiseVAE(input_shape=SHAPE, hidden=(16,), latent_dim=LATENT)
  weights = {"bernoulli_nll": 1.0, **{name: 0.5 + 0.1 * i for i, name in enumerate(TC_TERMS)}}
  weights.update({name: 20.0 + 5.0 * i for i, name in enumerate(MMD_TERMS)})
  objective = losses.make_objective(weights, {"dataset_size": N_TRAIN})
  tx = optax.adam(1e-2)
  state = train.create_train_state(model, tx, jnp.zeros((1, *SHAPE)), seed=0)
  step = functools.partial(
    train.train_step, model=model, objective=objective, tx=tx, learning_rate=lambda s: 1e-2
  )
  images = _images(32)
  batches = [{"x": images[:16]}, {"x": images[16:]}]
  s8, m8 = run_pmapped_steps(step, state, batches, jax.local_devices())
  s1, m1 = run_pmapped_steps(step, state, batches, jax.local_devices()[:1])
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s8.opt_state, s1.opt_state, rtol=1e-5, atol=1e-6)
  for a, b in zip(m8, m1, strict=True):
    for name in ("loss", *weights):
      np.testing.assert_allclose(a[name][0], b[name][0], rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(a["grad_norm"][0], b["grad_norm"][0], rtol=1e-4)
    assert all(np.isfinite(a[name][0]) for name in weights)
  assert float(m1[0]["nonfinite"][0]) == 0.0
  assert not np.allclose(s8.params["encoder"]["code"]["kernel"], state.params["encoder"]["code"]["kernel"])


# ----------------------------------------------------------------------------- closed forms


def _vae_and_params(hidden=(16,), latent=LATENT, seed=0):
  model = get_model("vae_mlp", input_shape=SHAPE, hidden=hidden, latent_dim=latent)
  variables = jax.jit(model.init)(
    {"params": jax.random.key(seed), "sample": jax.random.key(1)}, jnp.zeros((1, *SHAPE))
  )
  return model, variables


def test_tc_terms_sum_to_the_sampled_kl_whose_mean_is_the_closed_form():
  """For both estimators, tc_mi + tc + tc_dwkl = log q(z|x) - log p(z) of the VAE's own draw, per example;
  averaged over 400 draws it is the closed-form KL within 5 standard errors."""
  model, variables = _vae_and_params()
  objectives = {
    estimator: losses.make_objective(dict.fromkeys(TC_TERMS[3 * i : 3 * i + 3], 1.0), {"dataset_size": 1000})
    for i, estimator in enumerate(batch_terms.TC_SUFFIXES)
  }
  x = _images(24)

  @jax.jit
  def one(key):
    out = model.apply(variables, x, rngs={"sample": key})
    totals = {e: objective(out, {"x": x}, jnp.int32(0))[0] for e, objective in objectives.items()}
    return totals, out["log_qz_x"][0] - out["log_pz"][0], losses.gaussian_kl(out["mean"], out["logvar"])

  draws = jax.vmap(one)(jax.random.split(jax.random.key(4), 400))
  totals, log_ratio, kl = jax.device_get(draws)
  for estimator, total in totals.items():  # [400, 24]
    chex.assert_trees_all_close(total, log_ratio, rtol=1e-5, atol=1e-4)
    stderr = total.std(axis=0) / math.sqrt(total.shape[0])
    assert np.all(np.abs(total.mean(axis=0) - kl[0]) < 5 * stderr + 1e-3), (estimator, total.mean(0), kl[0])


def _posterior_everywhere(shift: jax.Array) -> dict:
  """Parameters of a linear VAE (latent 4) with q(z|x) = N(shift, I) for every x: q(z) = N(shift, I)."""
  model, variables = _vae_and_params(hidden=(), latent=4)
  params = jax.tree.map(jnp.zeros_like, variables["params"])
  params["encoder"]["code"]["bias"] = jnp.concatenate([jnp.full(4, shift), jnp.zeros(4)])
  return {"params": params}


def test_mmd_terms_are_unbiased_under_the_null_and_large_for_a_shift():
  """500 batches of 32 through the model and the objective, for every MMD term: when q(z) = p(z) the batch
  mean is within 4 standard errors of 0 and negative for a good share; q(z) shifted by 0.5 per dimension
  gives a mean above 20 standard errors."""
  model, _ = _vae_and_params(hidden=(), latent=4)
  objective = losses.make_objective(dict.fromkeys(MMD_TERMS, 1.0))
  x = _images(32)

  @jax.jit
  def estimates(shift):
    variables = _posterior_everywhere(shift)

    def one(key):
      out = model.apply(variables, x, rngs={"sample": key})
      return {name: term.mean() for name, term in objective(out, {"x": x}, jnp.int32(0))[1].items()}

    return jax.vmap(one)(jax.random.split(jax.random.key(1), 500))

  null, shifted = jax.device_get(estimates(0.0)), jax.device_get(estimates(0.5))
  for name in MMD_TERMS:
    se = null[name].std() / math.sqrt(len(null[name]))
    assert abs(null[name].mean()) < 4 * se, (name, null[name].mean(), se)
    assert 0.25 < (null[name] < 0).mean() < 0.75, name
    assert shifted[name].mean() > 20 * shifted[name].std() / math.sqrt(len(shifted[name])), name


# ----------------------------------------------------------------------------- evaluation padding


def test_padding_of_an_evaluation_batch_changes_no_term():
  """An evaluation batch of 16 with 11 real examples on 8 devices (devices 6 and 7 hold only padding): the
  evaluated sums are the same whatever the padding holds, and equal the estimators over the 11 real
  examples alone (one device, no padding)."""
  model, _ = _vae_and_params()
  tx = optax.adam(1e-3)
  state = train.create_train_state(model, tx, jnp.zeros((1, *SHAPE)), seed=0)
  names = ["bernoulli_nll", "kl", *NEW_TERMS]
  constants = {"dataset_size": N_TRAIN}
  objective = losses.make_objective(dict.fromkeys(names, 1.0), constants)
  real = 11
  x = _images(16)
  valid = (np.arange(16) < real).astype(np.float32)
  index = np.arange(16, dtype=np.int32)
  garbage = x.copy()
  garbage[real:] = np.random.default_rng(0).uniform(size=garbage[real:].shape) * 50.0

  def sums_and_outputs(state, batch):
    outputs = train.apply_model(
      model, state.params, state.model_state, batch, train=False, rng=train.eval_rng(state, batch)
    )[0]
    keys = ("z", "mean", "logvar", "prior_z", "logits", "recon")
    # summed over the devices as the evaluators' split_sums does
    sums = jax.lax.psum(train.eval_sums(state, batch, model=model, objective=objective), parallel.AXIS)
    return sums, {k: outputs[k] for k in keys}

  p_eval = jax.pmap(sums_and_outputs, axis_name=parallel.AXIS)
  rstate = parallel.replicate(state)

  def evaluate(images):
    batch = parallel.shard(parallel.split_for_devices({"x": images, "valid": valid, "index": index}))
    sums, outputs = jax.device_get(p_eval(rstate, batch))
    return {k: v[0] for k, v in sums.items()}, {k: v.reshape(16, *v.shape[2:]) for k, v in outputs.items()}

  sums, outputs = evaluate(x)
  chex.assert_trees_all_close(evaluate(garbage)[0], sums, rtol=1e-6, atol=1e-6)
  assert sums["count"] == real
  real_outputs = {k: v[:real] for k, v in outputs.items()}
  expected = jax.jit(
    lambda o, x: {name: losses.LOSSES[name](o, {"x": x, **constants}).sum() for name in names}
  )(real_outputs, x[:real])
  for name in names:
    np.testing.assert_allclose(sums[name], float(expected[name]), rtol=1e-5, atol=1e-5, err_msg=name)
  # Counting the padding in would have changed the batch-level terms.
  padded = float(jax.jit(lambda o, x: losses.LOSSES["tc"](o, {"x": x, **constants})[:real].sum())(outputs, x))
  assert padded != pytest.approx(float(sums["tc"]), rel=1e-3)


# ----------------------------------------------------------------------------- configs and training


def test_objective_constants_add_the_training_split_length_only_when_a_term_needs_it(tiny_config):
  c = tiny_config
  c.data.validation_size = 16
  dataset = get_dataset(c.data)
  assert train.objective_constants(c, dataset) == {}
  c.loss = {"mse": 1.0, "mmd_imq": 1.0}
  assert train.objective_constants(c, dataset) == {}
  c.loss = {"mse": 1.0, "tc_mws": 1.0}
  assert train.objective_constants(c, dataset) == {"dataset_size": N_TRAIN - 16}
  assert losses.needed_constants(["nmse", "tc", "kl"]) == {"data_variance", "dataset_size"}


@pytest.mark.parametrize("module", [vae_mlp_fashion_mnist, vae_conv_fashion_mnist])
def test_objective_arguments_set_the_documented_weights(module):
  assert module.get_config().to_dict() == module.get_config("objective=elbo").to_dict()
  loss = {arg.split("=")[1]: dict(module.get_config(arg).loss) for arg in module.ARGS}
  assert loss["elbo"] == {"bernoulli_nll": 1.0, "kl": 1.0, "mse": 0.0}
  assert loss["beta"] == {"bernoulli_nll": 1.0, "kl": 4.0, "mse": 0.0}
  assert loss["tcvae"] == {
    "bernoulli_nll": 1.0,
    "kl": 0.0,
    "mse": 0.0,
    "tc_mi": 1.0,
    "tc": 6.0,
    "tc_dwkl": 1.0,
  }
  assert loss["infovae"] == {"bernoulli_nll": 1.0, "kl": 1.0, "mse": 0.0, "mmd_rbf": 999.0}
  assert loss["wae"] == {"bernoulli_nll": 0.0, "mse": 784.0, "mmd_imq_multiscale": 10.0}
  wae = module.get_config("objective=wae")
  assert wae.model.deterministic_encoder and "likelihood" not in wae.evals
  with pytest.raises(ValueError, match="objective=NAME"):
    module.get_config("objective=vqvae")


def test_deterministic_encoder_outputs_the_mean_and_no_density():
  model = get_model("vae_mlp", input_shape=SHAPE, hidden=(16,), latent_dim=LATENT, deterministic_encoder=True)
  x = _images(4)
  variables = jax.jit(model.init)({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
  out = jax.jit(lambda v, x: model.apply(v, x, rngs={"sample": jax.random.key(2)}))(variables, x)
  chex.assert_trees_all_equal(out["z"], out["mean"])
  chex.assert_shape([out["z"], out["prior_z"]], (4, LATENT))
  assert "logvar" not in out and "log_qz_x" not in out
  with pytest.raises(KeyError, match="'logvar'"):
    losses.LOSSES["kl"](out, {"x": x})
  with pytest.raises(ConfigError, match="deterministic_encoder"):
    model.apply(variables, x, jnp.zeros((2, 4, LATENT)), method="importance_terms")


def test_prior_z_is_standard_normal_and_independent_of_z():
  model, variables = _vae_and_params()
  x = np.repeat(_images(1), 4096, axis=0)

  @jax.jit
  def prior_and_eps(x):
    out = model.apply(variables, x, rngs={"sample": jax.random.key(5)})
    return out["prior_z"], (out["z"] - out["mean"]) * jnp.exp(-0.5 * out["logvar"])

  prior, eps = jax.tree.map(np.asarray, prior_and_eps(x))
  assert abs(prior.mean()) < 0.05 and abs(prior.var() - 1.0) < 0.05
  assert abs(np.corrcoef(prior.ravel(), np.asarray(eps).ravel())[0, 1]) < 0.05


def _first_and_last(path) -> tuple[list[float], list[float]]:
  with open(path) as f:
    losses_logged = [r["loss"] for r in map(json.loads, f) if "loss" in r]
  return losses_logged[:3], losses_logged[-3:]


@pytest.mark.parametrize("objective", ["tcvae", "infovae", "wae"])
@pytest.mark.training
def test_objective_trains_on_synthetic_data(objective, tiny_config, tmp_path):
  """The shipped objective's loss and model options on a small VAE: 30 steps, finite and decreasing, and
  the test evaluation (padded last batch) reports every term finite."""
  shipped = vae_mlp_fashion_mnist.get_config(f"objective={objective}")
  c = tiny_config
  c.model = {
    "name": "vae_mlp",
    "hidden": (32,),
    "latent_dim": 4,
    "deterministic_encoder": shipped.model.deterministic_encoder,
  }
  c.data.scale, c.data.binarize = "unit", "dynamic"
  c.loss = dict(shipped.loss)
  c.total_steps, c.checkpoint_every, c.optimizer.learning_rate = 30, 0, 1e-2
  summary = loop.train_and_evaluate(c, str(tmp_path))
  first, last = _first_and_last(tmp_path / "metrics.jsonl")
  assert all(np.isfinite(first + last)) and np.mean(last) < np.mean(first), (first, last)
  for name in c.loss:
    assert np.isfinite(summary["metrics"][f"test/{name}"]), name
