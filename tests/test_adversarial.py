"""Adversarial training in the pure step: the adaptive weight against its closed form, the two players'
independence, the start step, 8 devices = 1 device, exact resume with a discriminator and a weight EMA."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_tiny_config, run_pmapped_steps
from flax import linen as nn

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.data.pipeline import train_batches
from ae_jax.models import model_config
from ae_jax.models.discriminators import PatchDiscriminator, discriminator_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner import experiment, loop
from ae_jax.runner.config import check_config
from ae_jax.training import adversarial, train


class LinearAE(nn.Module):
  """recon = x W (W [D, D], the last layer): the toy whose gradients have a closed form."""

  last_layer = ("decoder", "kernel")

  @nn.compact
  def __call__(self, x, *, train=False):
    flat = x.reshape(x.shape[0], -1)
    return {"recon": nn.Dense(flat.shape[1], use_bias=False, name="decoder")(flat).reshape(x.shape)}


class LinearDisc(nn.Module):
  """logit = recon v, one per example."""

  @nn.compact
  def __call__(self, x, *, train=False):
    return nn.Dense(1, use_bias=False, name="v")(x.reshape(x.shape[0], -1))


def _toy(start=0, disc_lr=0.1, gen_lr=0.1, adaptive=True, weight=0.5):
  model, disc = LinearAE(), LinearDisc()
  objective = losses.make_objective({"mse": 1.0, "gan_hinge": weight})
  d_objective = losses.make_objective({"disc_hinge": 1.0})
  adversary = adversarial.Adversary(
    disc, d_objective, optax.sgd(disc_lr), start, LinearAE.last_layer if adaptive else (), ("gan_hinge",)
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 2, 2, 1))
  tx = optax.sgd(gen_lr)
  state = train.create_train_state(model, tx, x, 0, adversary=adversary)
  step = functools.partial(
    train.train_step,
    model=model,
    objective=objective,
    tx=tx,
    learning_rate=lambda s: gen_lr,
    adversary=adversary,
  )
  return state, step, {"x": x}


def _one_step(state, step, batch, devices=1):
  new, metrics = run_pmapped_steps(step, state, [batch], jax.local_devices()[:devices])
  return new, jax.tree.map(lambda m: np.asarray(m)[0], metrics[0])


def test_adaptive_weight_equals_its_closed_form():
  """lambda = ||dR/dW|| / (||dA/dW|| + 1e-4) for R = mse(xW, x), A = -mean(xW v): by hand in float64."""
  state, step, batch = _toy(weight=0.5)
  _, metrics = _one_step(state, step, batch)
  x = np.asarray(batch["x"], np.float64).reshape(8, -1)
  w = np.asarray(state.params["decoder"]["kernel"], np.float64)
  v = np.asarray(state.adversary.params["v"]["kernel"], np.float64)
  grad_rec = 2.0 / x.size * x.T @ (x @ w - x)
  grad_adv = -np.outer(x.mean(axis=0), v[:, 0])  # of the unweighted term -mean_b(x_b W v)
  expected = np.linalg.norm(grad_rec) / (np.linalg.norm(grad_adv) + 1e-4)
  np.testing.assert_allclose(metrics["adaptive_weight"], expected, rtol=1e-5)
  # the loss is R + lambda * 0.5 * A
  rec = np.mean((x @ w - x) ** 2)
  adv = -np.mean(x @ w @ v)
  np.testing.assert_allclose(metrics["loss"], rec + expected * 0.5 * adv, rtol=1e-5)
  # and the generator's update is -lr (dR/dW + lambda 0.5 dA/dW)
  new, _ = _one_step(state, step, batch)
  np.testing.assert_allclose(
    new.params["decoder"]["kernel"], w - 0.1 * (grad_rec + expected * 0.5 * grad_adv), rtol=1e-5, atol=1e-7
  )


def test_adaptive_weight_clips_and_is_finite():
  weight = adversarial.adaptive_weight(jnp.ones(3), jnp.zeros(3))
  assert float(weight) == adversarial.MAX_WEIGHT
  assert float(adversarial.adaptive_weight(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_the_two_players_updates_do_not_touch_each_other():
  """The discriminator's update leaves the generator's untouched (and the reverse): the generator's new
  params do not depend on the discriminator's learning rate, the discriminator's new params not on the
  generator's."""
  state, _, batch = _toy()
  both, _ = _one_step(state, _toy(disc_lr=0.1, gen_lr=0.1)[1], batch)
  gen_only, _ = _one_step(state, _toy(disc_lr=0.0, gen_lr=0.1)[1], batch)
  disc_only, _ = _one_step(state, _toy(disc_lr=0.1, gen_lr=0.0)[1], batch)
  chex.assert_trees_all_equal(both.params, gen_only.params)
  chex.assert_trees_all_equal(gen_only.adversary.params, state.adversary.params)
  chex.assert_trees_all_equal(both.adversary.params, disc_only.adversary.params)
  chex.assert_trees_all_equal(disc_only.params, state.params)
  assert not np.allclose(both.params["decoder"]["kernel"], state.params["decoder"]["kernel"])
  assert not np.allclose(both.adversary.params["v"]["kernel"], state.adversary.params["v"]["kernel"])


def test_before_start_the_discriminator_waits_and_the_generator_ignores_it():
  state, step, batch = _toy(start=5)
  new, metrics = _one_step(state, step, batch)
  chex.assert_trees_all_equal(new.adversary, state.adversary)
  assert metrics["adaptive_weight"] == 0.0
  x = np.asarray(batch["x"], np.float64).reshape(8, -1)
  w = np.asarray(state.params["decoder"]["kernel"], np.float64)
  np.testing.assert_allclose(metrics["loss"], np.mean((x @ w - x) ** 2), rtol=1e-6)
  assert {"disc/loss", "disc/disc_hinge", "disc/logits_real", "disc/logits_fake"} <= set(metrics)


def test_a_nonfinite_discriminator_loss_leaves_both_players_untouched():
  state, step, batch = _toy()
  bad = state.replace(
    adversary=state.adversary.replace(
      params={"v": {"kernel": state.adversary.params["v"]["kernel"] * np.inf}}
    )
  )
  new, metrics = _one_step(bad, step, batch)
  assert metrics["nonfinite"] >= 1
  chex.assert_trees_all_equal(new.params, bad.params)
  assert int(new.step) == 0


def test_patch_gan_has_taming_parameter_count_and_patch_logits():
  disc = PatchDiscriminator()  # taming's NLayerDiscriminator(3, ndf=64, n_layers=3)
  shapes = jax.eval_shape(lambda: disc.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3))))
  # taming's layers: conv 3->64 (+bias); 64->128, 128->256 (stride 2), 256->512 (stride 1), no bias, each
  # with BatchNorm (scale and bias); conv 512->1 (+bias); 4x4 kernels
  reference = (3 * 64 * 16 + 64) + sum(a * b * 16 + 2 * b for a, b in ((64, 128), (128, 256), (256, 512)))
  reference += 512 * 16 + 1
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"])) == reference == 2_765_633
  logits = jax.eval_shape(
    lambda: disc.apply(
      disc.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3))), jnp.zeros((2, 256, 256, 3))
    )
  )
  assert logits.shape == (2, 30, 30, 1)


def _gan_config():
  c = make_tiny_config()
  # a deterministic tokenizer (the KL autoencoder's sampling noise differs per device by design)
  c.model = model_config(
    "vqgan",
    ch=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=4,
    norm_groups=4,
    quantizer=quantizer_config("vq", num_codes=16, code_dim=4),
  )
  c.loss = {"l1": 1.0, "commitment": 1.0, "gan_hinge": 0.5}
  c.adversarial.discriminator = discriminator_config("patch_gan", ndf=8, n_layers=1)
  c.adversarial.start = 2
  c.ema_decay = 0.9
  c.total_steps = 6
  c.checkpoint_every = 3
  c.evals.test.every = 0
  return c


def test_gan_step_on_8_devices_equals_1_device():
  """BatchNorm's statistics, the adaptive weight's norms and both players' gradients are global."""
  config = _gan_config()
  # SGD: Adam's normalisation turns float32 rounding of near-zero gradients into full-size steps
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.1
  config.adversarial.optimizer.name = "sgd"
  exp = experiment.setup(config)
  step = functools.partial(train.train_step, **exp.step_options)
  info = exp.dataset.info
  batches = train_batches(exp.dataset.split("train"), info.preprocess, global_batch=config.batch_size, seed=0)
  host = [next(batches) for _ in range(3)]
  s8, m8 = run_pmapped_steps(step, exp.state, host, jax.local_devices())
  s1, m1 = run_pmapped_steps(step, exp.state, host, jax.local_devices()[:1])
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s8.adversary, s1.adversary, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s8.ema_params, s1.ema_params, rtol=1e-4, atol=1e-6)
  for a, b in zip(m8, m1, strict=True):
    for key in ("loss", "adaptive_weight", "disc/loss", "disc/logits_real", "disc/logits_fake"):
      np.testing.assert_allclose(a[key][0], b[key][0], rtol=1e-4, atol=1e-6)
  assert m1[2]["adaptive_weight"][0] > 0 and m1[1]["adaptive_weight"][0] == 0  # start = 2
  assert not np.allclose(
    s1.adversary.params["Conv_0"]["kernel"], exp.state.adversary.params["Conv_0"]["kernel"]
  )


@pytest.mark.training
def test_gan_run_resumes_bit_exactly_and_evaluates_the_ema_weights(tmp_path):
  config = _gan_config()
  config.adversarial.adaptive_weight = False  # (tested above; a lighter step to compile three times)
  full = loop.train_and_evaluate(config, str(tmp_path / "full"))
  half = config.copy_and_resolve_references()
  half.total_steps = 3
  loop.train_and_evaluate(half, str(tmp_path / "split"))
  resumed = loop.train_and_evaluate(config, str(tmp_path / "split"))
  for field in ("params", "ema_params", "adversary", "opt_state"):
    chex.assert_trees_all_equal(
      jax.device_get(getattr(full["state"], field)), jax.device_get(getattr(resumed["state"], field))
    )
  assert full["metrics"] == resumed["metrics"]
  import json

  results = json.loads((tmp_path / "full" / "results.json").read_text())
  assert results["weights"] == "ema"
  # the evaluators saw the EMA weights: their test loss is the EMA state's, not the raw params'
  ema_eval = train.evaluation_state(full["state"])
  chex.assert_trees_all_equal(ema_eval.params, full["state"].ema_params)
  # and a stage one loaded from the run (code caches, sampling) holds the EMA weights
  from ae_jax.generation import stage_one

  run = stage_one.load_run(str(tmp_path / "full"))
  chex.assert_trees_all_equal(run.variables["params"], jax.device_get(full["state"].ema_params))


def test_ema_update_is_litema():
  ema, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
  out = train.ema_update(ema, params, 0.999, jnp.int32(0))  # d = min(0.999, 1/10)
  np.testing.assert_allclose(out["w"], 0.9, rtol=1e-6)
  out = train.ema_update(ema, params, 0.5, jnp.int32(1000))
  np.testing.assert_allclose(out["w"], 0.5, rtol=1e-6)


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: c.adversarial.discriminator.update({"name": ""}), "adversarial terms"),
    (lambda c: c.loss.__delitem__("gan_hinge"), "no adversarial term"),
    (lambda c: c.adversarial.update({"start": -1}), "start must be >= 0"),
    (lambda c: c.update({"ema_decay": 1.0}), "ema_decay must be in"),
    (lambda c: c.adversarial.loss.update({"disc_hingee": 1.0}), "disc_hinge"),
  ],
)
def test_bad_adversarial_configs_are_refused_before_compute(change, message):
  config = _gan_config()
  with config.unlocked():
    change(config)
  with pytest.raises(ConfigError, match=message):
    check_config(config)


def test_adaptive_weight_needs_a_model_with_a_last_layer():
  config = _gan_config()
  config.model = model_config("mlp_ae", hidden=(16,), code_dim=4)
  with pytest.raises(ConfigError, match="declares no last_layer"):
    check_config(config)
  config.adversarial.adaptive_weight = False
  check_config(config)


def test_a_checkpoint_of_the_five_field_state_restores(tmp_path):
  """A checkpoint written before TrainState had ema_params and adversary (the five fields saved whole)
  restores into today's state: what a run without them saves is those five fields."""
  import flax
  import orbax.checkpoint as ocp

  from ae_jax.training import checkpoint

  @flax.struct.dataclass
  class FiveFields:
    step: jax.Array
    params: dict
    model_state: dict
    opt_state: tuple
    rng: jax.Array

  params, tx = {"w": jnp.arange(4.0)}, optax.adam(1e-3)
  old = FiveFields(jnp.int32(3), params, {}, tx.init(params), jax.random.PRNGKey(0))
  manager = ocp.CheckpointManager(
    tmp_path, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  )
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(old), config=ocp.args.JsonSave({})))
  manager.wait_until_finished()
  manager.close()
  target = train.TrainState(jnp.int32(0), {"w": jnp.zeros(4)}, {}, tx.init(params), jax.random.PRNGKey(1))
  restored = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False).restore(3, target, {})
  assert int(restored.step) == 3 and restored.ema_params is None and restored.adversary is None
  np.testing.assert_array_equal(restored.params["w"], np.arange(4.0))


@pytest.mark.parametrize("term", ["gan_hinge", "gan_nonsaturating", "disc_hinge", "disc_vanilla", "disc_r1"])
def test_adversarial_terms_have_finite_gradients_at_the_edges(term):
  """Logits at the hinge's kinks (+-1), at 0 and at +-1e4 (softplus saturated), and a zero R1 gradient:
  every term and its gradient are finite, under jit."""
  logits = jnp.array([-1e4, -1.0, 0.0, 1.0, 1e4]).reshape(5, 1, 1, 1)
  spec = losses.LOSSES[term]

  def total(real, fake, r1):
    return spec({"disc_real": real, "disc_fake": fake, "r1": r1}, {}).sum()

  value = jax.jit(total)(logits, -logits, jnp.zeros(5))
  grads = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(logits, -logits, jnp.zeros(5))
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
