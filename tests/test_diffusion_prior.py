"""The flow-matching prior over continuous codes: the noising path's closed form, the ODE sampler against
hand-written loops and the exact law of Gaussian data, training on a 2-D Gaussian code set, and the whole
second stage on a tiny autoencoder (the `latent_codes` cache, training, sampling, `experiments.sample`)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ae_jax.core.errors import ConfigError
from ae_jax.generation import denoisers, diffusion

MU, SIGMA = 1.5, 0.4  # the 1-D Gaussian data law N(MU, SIGMA^2) of the sampler tests


def test_forward_noising_has_the_closed_form_mean_and_variance():
  x0 = jnp.asarray([[-2.0, 0.5, 3.0]])
  t = jnp.asarray([0.3])
  mean, var = diffusion.path_moments(x0, t)
  np.testing.assert_allclose(mean, 0.7 * np.asarray([[-2.0, 0.5, 3.0]]), rtol=1e-6)
  np.testing.assert_allclose(var, np.full((1, 3), 0.09), rtol=1e-6)
  # Monte Carlo: 200,000 draws of x_t | x0; standard errors of the mean 0.3 / 447 and of the variance
  # 0.09 sqrt(2 / 200000) = 2.8e-4, so 5 sigma bounds
  n = 200_000
  eps = jax.random.normal(jax.random.PRNGKey(0), (n, 3))
  xt = np.asarray(diffusion.noise(jnp.broadcast_to(x0, (n, 3)), eps, jnp.full((n,), 0.3)), np.float64)
  np.testing.assert_allclose(xt.mean(0), np.asarray(mean[0]), atol=5 * 0.3 / np.sqrt(n))
  np.testing.assert_allclose(xt.var(0), np.asarray(var[0]), atol=5 * 0.09 * np.sqrt(2 / n))
  # the end points: data at t = 0, noise at t = 1
  np.testing.assert_array_equal(diffusion.noise(x0, eps[:1], jnp.zeros(1)), x0)
  np.testing.assert_array_equal(diffusion.noise(x0, eps[:1], jnp.ones(1)), eps[:1])


def test_the_loss_is_the_mean_squared_error_of_the_velocity():
  x0, eps, v = (jax.random.normal(jax.random.PRNGKey(i), (4, 2, 3)) for i in range(3))
  expected = np.mean(np.square(np.asarray(v) - (np.asarray(eps) - np.asarray(x0))).reshape(4, -1), axis=1)
  np.testing.assert_allclose(diffusion.flow_loss(v, x0, eps), expected, rtol=1e-6)


def _numpy_ode(velocity, x, steps: int, solver: str) -> np.ndarray:
  """The solvers written out in float64 numpy: t from 1 down to 0 in `steps` equal steps."""
  x = np.asarray(x, np.float64)
  h = -1.0 / steps
  for i in range(steps):
    t, t_next = 1.0 - i / steps, 1.0 - (i + 1) / steps
    v = velocity(x, t)
    if solver == "euler":
      x = x + h * v
    else:
      x = x + 0.5 * h * (v + velocity(x + h * v, t_next))
  return x


def _exact_velocity_np(x, t):
  var = (1 - t) ** 2 * SIGMA**2 + t**2
  return -MU + (t - (1 - t) * SIGMA**2) / var * (x - (1 - t) * MU)


def test_the_exact_velocity_is_the_conditional_mean_of_the_path_velocity():
  # Monte Carlo regression of eps - x0 on x_t at one t: slope and intercept of E[v | x_t] (linear here)
  n, t = 400_000, 0.6
  k0, k1 = jax.random.split(jax.random.PRNGKey(1))
  x0 = MU + SIGMA * np.asarray(jax.random.normal(k0, (n,)), np.float64)
  eps = np.asarray(jax.random.normal(k1, (n,)), np.float64)
  xt, v = (1 - t) * x0 + t * eps, eps - x0
  slope, intercept = np.polyfit(xt, v, 1)
  v_at = diffusion.gaussian_velocity(MU, SIGMA)
  exact = np.asarray(v_at(jnp.asarray([[0.0], [1.0]]), jnp.full((2,), t)))[:, 0]
  np.testing.assert_allclose([intercept, exact[0] + slope], [exact[0], exact[1]], atol=0.01)


@pytest.mark.parametrize("solver", diffusion.SOLVERS)
def test_the_sampler_follows_the_hand_written_solver(solver):
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (64, 1)))
  fn = jax.jit(lambda x: diffusion.sample_ode(diffusion.gaussian_velocity(MU, SIGMA), x, 7, solver))
  np.testing.assert_allclose(fn(z), _numpy_ode(_exact_velocity_np, z, 7, solver), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(fn(z), fn(z))  # deterministic


def test_the_samples_law_approaches_the_data_law_as_the_steps_grow():
  # The exact velocity is affine in x, so each solver's map from the noise is affine too: x0 = a z + b,
  # with a -> SIGMA and b -> MU (the exact ODE's end point). Heun's error falls as 1/steps^2, Euler's as
  # 1/steps: the bounds hold at every steps (Euler breaks Heun's), and the observed order is the solver's.
  v = diffusion.gaussian_velocity(MU, SIGMA)
  for solver, order, bound in (("heun", 2, 0.5), ("euler", 1, 1.0)):
    errors = []
    for steps in (4, 8, 16, 32, 64):
      b, a_plus_b = np.asarray(diffusion.sample_ode(v, jnp.asarray([[0.0], [1.0]]), steps, solver))[:, 0]
      errors.append(max(abs(a_plus_b - b - SIGMA), abs(b - MU)))
      assert errors[-1] <= bound / steps**order, (solver, steps, errors)
    assert abs(np.log2(errors[-2] / errors[-1]) - order) < 0.15, (solver, errors)
  # the law of 100,000 samples at 64 Heun steps: N(MU, SIGMA^2) within Monte Carlo error
  z = jax.random.normal(jax.random.PRNGKey(3), (100_000, 1))
  x = np.asarray(diffusion.sample_ode(v, z, 64, "heun"), np.float64)[:, 0]
  assert abs(x.mean() - MU) < 5 * SIGMA / np.sqrt(len(x))
  assert abs(x.std() - SIGMA) < 5 * SIGMA / np.sqrt(2 * len(x)) + 1e-3


def test_the_sampler_refuses_an_unknown_solver_or_no_steps():
  v = diffusion.gaussian_velocity(0.0, 1.0)
  with pytest.raises(ValueError, match="solver"):
    diffusion.sample_ode(v, jnp.zeros((1, 1)), 4, "rk4")
  with pytest.raises(ValueError, match="steps"):
    diffusion.sample_ode(v, jnp.zeros((1, 1)), 0)


def test_time_embedding_is_the_sinusoid():
  emb = np.asarray(denoisers.time_embedding(jnp.asarray([0.0, 0.25]), 8))
  freqs = np.exp(-np.log(10_000.0) * np.arange(4) / 4)
  expected = np.concatenate([np.cos(250.0 * freqs), np.sin(250.0 * freqs)])
  np.testing.assert_allclose(emb[1], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])


@pytest.mark.training
@pytest.mark.parametrize("shape, denoiser", [((2,), "mlp"), ((2, 2, 3), "transformer")])
def test_training_on_a_gaussian_code_set_lowers_the_loss(shape, denoiser):
  rng = np.random.default_rng(0)
  scale = rng.uniform(0.2, 1.0, shape).astype(np.float32)
  codes = (scale * rng.standard_normal((512, *shape)) + 0.5).astype(np.float32)
  model = denoisers.DiffusionPrior(input_shape=shape, denoiser=denoiser, width=32, num_layers=2, num_heads=2)
  params = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, codes[:2])["params"]
  tx = optax.adam(3e-3)

  def loss(params, x, key):
    return jnp.mean(model.apply({"params": params}, x, rngs={"sample": key})["flow_mse"])

  @jax.jit
  def step(params, opt, key):
    value, grads = jax.value_and_grad(loss)(params, jnp.asarray(codes), key)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, value

  def evaluate(params):  # the same 8 draws of (t, eps) for every evaluation
    return np.mean([loss(params, jnp.asarray(codes), jax.random.PRNGKey(100 + i)) for i in range(8)])

  before, opt = evaluate(params), tx.init(params)
  for i in range(150):
    params, opt, _ = step(params, opt, jax.random.PRNGKey(i))
  after = evaluate(params)
  assert after < 0.8 * before, (before, after)
  # sampling: deterministic for the same noise, and the samples' mean moves to the data's
  noise = jax.random.normal(jax.random.PRNGKey(5), (256, *shape))
  draw = jax.jit(lambda p, z: denoisers.draw_codes(model, {"params": p}, z, 8))
  samples = np.asarray(draw(params, noise))
  np.testing.assert_array_equal(samples, np.asarray(draw(params, noise)))
  assert abs(samples.mean() - codes.mean()) < 0.25


def test_the_model_refuses_bad_options():
  x = jnp.zeros((1, 4))
  for options, match in (
    ({"denoiser": "unet"}, "denoiser"),
    ({"solver": "rk4"}, "solver"),
    ({"denoiser": "transformer"}, "spatial codes"),
  ):
    model = denoisers.DiffusionPrior(input_shape=(4,), **options)
    with pytest.raises(ConfigError, match=match):
      model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(0)}, x)


def test_the_code_shape_is_read_from_the_stage_ones_config():
  from ae_jax.generation import latent_codes
  from ae_jax.models import model_config
  from tests.conftest import TINY_VQVAE, make_tiny_config

  config = make_tiny_config()
  assert latent_codes.code_shape(config) == (4,)  # mlp_ae's code_dim
  config.model = model_config("vae_mlp", hidden=(8,), latent_dim=3)
  assert latent_codes.code_shape(config) == (3,)
  config.model = model_config("kl_autoencoder", ch=8, ch_mult=(1, 2), num_res_blocks=1, embed_dim=2)
  assert latent_codes.code_shape(config) == (4, 4, 2)  # spatial: one downsampling of 8x8 images
  config.model = model_config("vqvae", **TINY_VQVAE)
  with pytest.raises(ConfigError, match="no continuous code"):
    latent_codes.code_shape(config)


# ----------------------------------------------------------------------------- the second stage, end to end


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory):
  """A tiny conv_ae stage one, and a diffusion prior trained 20 steps on its codes."""
  from ae_jax.models import model_config
  from ae_jax.runner import loop
  from experiments.configs import prior_diffusion
  from tests.conftest import make_tiny_config

  root = tmp_path_factory.mktemp("diffusion")
  ae = str(root / "ae")
  config = make_tiny_config()
  config.model = model_config("mlp_ae", hidden=(16,), code_dim=3)
  config.total_steps = 4
  config.evals = {}
  loop.train_and_evaluate(config, ae)
  prior = str(root / "prior")
  config = prior_diffusion.get_config(ae)
  config.model.width, config.model.num_layers = 16, 1
  config.batch_size, config.total_steps, config.steps_per_dispatch = 16, 20, 1
  config.log_every, config.checkpoint_every = 10, 20
  config.evals.test.every = 0
  loop.train_and_evaluate(config, prior)
  return ae, prior


@pytest.mark.training
def test_the_codes_are_cached_standardised_and_sampled_back(stage_two):
  from ae_jax import data
  from ae_jax.generation import latent, latent_codes, samplers, stage_one

  ae, prior_dir = stage_two
  prior = stage_one.load_run(prior_dir)
  assert prior.config.data.name == "latent_codes" and samplers.is_prior_run(prior.config)
  dataset = data.get_dataset(prior.config.data)
  codec = latent.LatentCodec.of(stage_one.load_run(ae))
  raw = latent.training_codes(codec)
  path = os.path.join(ae, "latent_codes", codec.run.fingerprint, "train.npz")
  with np.load(path) as f:
    np.testing.assert_allclose(f["codes"], raw, atol=1e-6)
  train = dataset.splits["train"].arrays["codes"]
  np.testing.assert_allclose(train * dataset.info.std + dataset.info.mean, raw, atol=1e-5)
  np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
  _, mean, std = latent_codes.code_statistics(prior.config.data, prior.workdir)
  np.testing.assert_array_equal(mean, dataset.info.mean)
  # sampling: the ODE's codes, unstandardised, decoded by the stage one; the same seed, the same samples
  drawn = samplers.draw(prior, 5, seed=3, options=None)
  again = samplers.draw(prior, 3, seed=3)
  np.testing.assert_array_equal(drawn.images[:3], again.images)
  from ae_jax.generation import denoisers as d
  from ae_jax.generation import diffusion_sampler

  noise = diffusion_sampler.initial_noise(3, np.arange(5), (3,))
  codes = np.asarray(d.draw_codes(prior.model, prior.variables, noise, 8)) * std + mean
  np.testing.assert_allclose(drawn.arrays["codes"], codes, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(drawn.images, codec.decode(drawn.arrays["codes"]), atol=1e-6)
  assert drawn.source.workdir == codec.run.workdir and drawn.arrays["steps"] == 8


def _sample_cli(argv):
  from experiments import sample

  try:
    sample.sample(sample.FLAGS(["sample", *argv]))
  finally:
    sample.FLAGS.unparse_flags()


@pytest.mark.training
def test_the_sample_command_reads_steps_and_refuses_the_rest(stage_two, tmp_path):
  ae, prior = stage_two
  out = str(tmp_path / "out")
  argv = [f"--workdir={prior}", "--num=4", f"--out={out}"]
  _sample_cli(argv + ["--steps=3", "--prior=diffusion"])
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["images"].shape == (4, 8, 8, 1) and int(f["steps"]) == 3
  for flag, match in (
    ("--temperature=0.5", "--temperature is not an option of this prior"),
    ("--steps=0", "--steps must be >= 1"),
    ("--prior=mixture", "drop --prior"),
  ):
    with pytest.raises(ConfigError, match=match):
      _sample_cli(argv + [flag])
  with pytest.raises(ConfigError, match=f"--workdir {prior}"):  # names the prior trained on the run
    _sample_cli([f"--workdir={ae}", "--prior=diffusion", f"--out={out}"])
