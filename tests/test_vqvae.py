"""The VQ-VAE model: shapes, the pinned reference layout, gradient routing, EMA codebooks on 8 devices."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.models import get_model, model_config
from ae_jax.models.vqvae import VQVAE
from ae_jax.training import checkpoint, train

ARCH = dict(hidden=8, res_hidden=4, num_res_layers=1)
CODES = dict(num_codes=16, code_dim=4)


def tiny(name: str = "vq", **options) -> dict:
  """A tiny VQ-VAE's options with quantizer `name` (16 codes of 4 dimensions where it has them)."""
  codes = {"vq": CODES, "rvq": CODES, "gumbel": CODES, "lfq": {"code_dim": 4}}.get(name, {})
  return dict(**ARCH, quantizer={"name": name, **codes, **options})


SHAPE = (8, 8, 3)
RNG = np.random.default_rng(0)


def _x(n=4, shape=SHAPE):
  return jax.device_put(RNG.uniform(-0.5, 0.5, size=(n, *shape)).astype(np.float32))


def _init(model, x):
  """Variables of `model` (device axis bound), compiled without XLA optimisation as the trainer does: an
  optimised compile of the random initialisers costs ~20 s on CPU."""
  init = parallel.with_named_axis(lambda r, x: model.init(r, x, train=False))
  return train.run_once(init, {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x)


def test_reference_shapes_without_compiling():
  """Defaults (h=128, r=32, 2 residual layers, K=512, D=64): [32, 32, 32, 3] -> codes [32, 8, 8, 64]."""
  model = VQVAE(axis_name=parallel.AXIS)
  x = jax.ShapeDtypeStruct((32, 32, 32, 3), jnp.float32)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  variables = jax.eval_shape(parallel.with_named_axis(lambda r, x: model.init(r, x)), rngs, x)
  out = jax.eval_shape(parallel.with_named_axis(lambda v, x: model.apply(v, x)), variables, x)
  assert out["z_e"].shape == out["code"].shape == (32, 8, 8, 64)
  assert out["indices"].shape == (32, 8, 8) and out["recon"].shape == (32, 32, 32, 3)
  assert out["codebook_loss"].shape == out["commitment_loss"].shape == (32,)
  assert variables["vq_ema"]["vq"]["codebook"].shape == (512, 64)
  assert "vq" not in variables["params"]  # the EMA codebook is state, not a parameter


# The reference layout's parameters (h=128, r=32, 2 residual layers, D=64, C=3): vqvae_cifar10's architecture.
REFERENCE_PARAMS = {
  "decoder/Conv_0/bias": (128,),
  "decoder/Conv_0/kernel": (3, 3, 64, 128),
  "decoder/ResidualStack_0/Conv_0/bias": (32,),
  "decoder/ResidualStack_0/Conv_0/kernel": (3, 3, 128, 32),
  "decoder/ResidualStack_0/Conv_1/bias": (128,),
  "decoder/ResidualStack_0/Conv_1/kernel": (1, 1, 32, 128),
  "decoder/ResidualStack_0/Conv_2/bias": (32,),
  "decoder/ResidualStack_0/Conv_2/kernel": (3, 3, 128, 32),
  "decoder/ResidualStack_0/Conv_3/bias": (128,),
  "decoder/ResidualStack_0/Conv_3/kernel": (1, 1, 32, 128),
  "decoder/up_0/bias": (64,),
  "decoder/up_0/kernel": (4, 4, 128, 64),
  "decoder/up_1/bias": (3,),
  "decoder/up_1/kernel": (4, 4, 64, 3),
  "encoder/Conv_0/bias": (64,),
  "encoder/Conv_0/kernel": (4, 4, 3, 64),
  "encoder/Conv_1/bias": (128,),
  "encoder/Conv_1/kernel": (4, 4, 64, 128),
  "encoder/Conv_2/bias": (128,),
  "encoder/Conv_2/kernel": (3, 3, 128, 128),
  "encoder/ResidualStack_0/Conv_0/bias": (32,),
  "encoder/ResidualStack_0/Conv_0/kernel": (3, 3, 128, 32),
  "encoder/ResidualStack_0/Conv_1/bias": (128,),
  "encoder/ResidualStack_0/Conv_1/kernel": (1, 1, 32, 128),
  "encoder/ResidualStack_0/Conv_2/bias": (32,),
  "encoder/ResidualStack_0/Conv_2/kernel": (3, 3, 128, 32),
  "encoder/ResidualStack_0/Conv_3/bias": (128,),
  "encoder/ResidualStack_0/Conv_3/kernel": (1, 1, 32, 128),
  "encoder/pre_quantize/bias": (64,),
  "encoder/pre_quantize/kernel": (1, 1, 128, 64),
}


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _abstract_variables(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  return jax.eval_shape(parallel.with_named_axis(lambda r, x: model.init(r, x)), rngs, x)


@pytest.mark.parametrize(
  "options",
  [
    {},
    {"upsample": "subpixel"},
    {"upsample": "transpose"},
    {"num_downsamples": 2, "channel_mults": (0.5, 1)},
  ],
)
def test_default_parameter_tree_is_the_reference_layout(options):
  """The defaults (num_downsamples=2, channel_mults=()) keep the reference layout's parameter paths and shapes
  (hidden/2 then hidden channels), in either upsampling form, as explicit multipliers (0.5, 1) do."""
  variables = _abstract_variables(VQVAE(axis_name=parallel.AXIS, **options), (2, 32, 32, 3))
  assert set(variables) == {"params", "vq_ema"}
  assert _shapes(variables["params"]) == REFERENCE_PARAMS
  assert _shapes(variables["vq_ema"]) == {
    "vq/cluster_size": (512,),
    "vq/codebook": (512, 64),
    "vq/embed_sum": (512, 64),
    "vq/started": (),
  }


def test_cifar10_config_keeps_the_reference_parameter_tree():
  import importlib

  config = importlib.import_module("experiments.configs.vqvae_cifar10").get_config()
  assert config.model.num_downsamples == 2 and tuple(config.model.channel_mults) == ()
  model, _, _, _ = train.build(config, (32, 32, 3))
  assert _shapes(_abstract_variables(model, (2, 32, 32, 3))["params"]) == REFERENCE_PARAMS


def test_decoder_forms_compute_the_same_function():
  """upsample="subpixel" and "transpose" give the same reconstruction from the same variables."""
  x = _x(2)
  variables = _init(VQVAE(**tiny(), input_shape=SHAPE, upsample="subpixel"), x)
  sub, ref = (
    jax.jit(VQVAE(**tiny(), input_shape=SHAPE, upsample=u).apply)(variables, x)
    for u in ("subpixel", "transpose")
  )
  np.testing.assert_allclose(sub["recon"], ref["recon"], rtol=1e-5, atol=1e-5)


TERMS = ("mse", "commitment", "codebook")


@functools.lru_cache(maxsize=2)
def _gradients(ema: bool):
  """(model, variables, x, {term: (d term / d params, d term / d EMA codebook)}) in one compile per mode."""
  model = VQVAE(**tiny(ema=ema), input_shape=SHAPE)
  x = _x()
  variables = _init(model, x)
  objective = losses.make_objective(dict.fromkeys(TERMS, 1.0))

  def term(name, params, codebook):
    state = {k: v for k, v in variables.items() if k != "params"}
    if ema:
      state["vq_ema"] = {"vq": {**state["vq_ema"]["vq"], "codebook": codebook}}
    out = model.apply({"params": params, **state}, x, train=False)
    return objective(out, {"x": x}, 0)[1][name].mean()

  @jax.jit
  def grads(params, codebook):
    return {n: jax.grad(functools.partial(term, n), argnums=(0, 1))(params, codebook) for n in TERMS}

  codebook = variables["vq_ema"]["vq"]["codebook"] if ema else jnp.zeros(())
  return model, variables, x, jax.device_get(grads(variables["params"], codebook))


@pytest.mark.parametrize("ema", [True, False])
def test_reconstruction_gradient_reaches_encoder_as_if_quantisation_were_identity(ema):
  model, variables, x, grads = _gradients(ema)

  @jax.jit
  def by_hand(variables):
    """The decoder's gradient at z_q, pulled back through the encoder alone."""
    z_e, encoder_vjp = jax.vjp(
      lambda p: model.apply({**variables, "params": p}, x, method="encode"), variables["params"]
    )
    z_q = model.apply(variables, x)["code"]
    g_zq = jax.grad(lambda z: losses.mse(model.apply(variables, z, method="decode"), x).mean())(z_q)
    return encoder_vjp(g_zq)[0]["encoder"], z_e, z_q

  expected, z_e, z_q = by_hand(variables)
  chex.assert_trees_all_close(grads["mse"][0]["encoder"], expected, rtol=1e-5, atol=1e-7)
  assert not np.allclose(z_e, z_q)  # quantisation did change the latents


def _largest(tree):
  return max(float(np.abs(g).max()) for g in jax.tree.leaves(tree))


def test_loss_terms_route_gradients_to_their_side():
  """Trained codebook: the commitment term gives the codebook no gradient, the codebook term none to the
  encoder. EMA codebook: it is not a parameter and no loss term gives it any gradient."""
  _, _, _, grads = _gradients(False)
  assert _largest(grads["commitment"][0]["vq"]) == 0 and _largest(grads["commitment"][0]["encoder"]) > 0
  assert _largest(grads["codebook"][0]["encoder"]) == 0 and _largest(grads["codebook"][0]["vq"]) > 0
  model, variables, x, grads = _gradients(True)
  assert "vq" not in variables["params"]
  assert all(_largest(grads[term][1]) == 0 for term in TERMS)
  assert _largest(grads["commitment"][0]["encoder"]) > 0


def _vq_config(tiny_config, name="vq", **options):
  tiny_config.model = model_config("vqvae", **tiny(name, **options))
  tiny_config.data.shape = SHAPE
  tiny_config.loss = {"mse": 1.0, "codebook": 1.0, "commitment": 1.0}
  return tiny_config


def _run(step, state, batches, devices):
  p_step = jax.pmap(step, axis_name=parallel.AXIS, devices=devices)
  rstate, metrics = parallel.replicate(state, devices), []
  for batch in batches:
    rstate, m = p_step(rstate, parallel.shard(parallel.split_for_devices(batch, len(devices)), devices))
    metrics.append(jax.device_get(m))
  return jax.device_get(parallel.unreplicate(rstate)), metrics


def test_ema_codebook_and_perplexity_on_eight_devices_equal_one_device(tiny_config, tmp_path):
  """k-means++ initialisation, EMA updates and dead-code re-seeding on 8 devices x 2 examples give the
  codebook, statistics, perplexity and parameters of 1 device x 16 on the same global batches; the EMA state
  survives a checkpoint bit-exactly."""
  config = _vq_config(tiny_config, codebook_init="kmeans++", decay=0.5, dead_code_threshold=2.2)
  model, objective, tx, schedule = train.build(config, SHAPE)
  assert model.axis_name == parallel.AXIS
  state = train.create_train_state(model, tx, _x(1), 0)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)
  batches = [{"x": np.asarray(_x(16))} for _ in range(3)]
  s8, m8 = _run(step, state, batches, jax.local_devices())
  s1, m1 = _run(step, state, batches, jax.local_devices()[:1])
  ema8, ema1 = s8.model_state["vq_ema"]["vq"], s1.model_state["vq_ema"]["vq"]
  assert int(ema8["started"]) == 1
  assert not np.allclose(ema8["codebook"], state.model_state["vq_ema"]["vq"]["codebook"])
  chex.assert_trees_all_close(ema8, ema1, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-4, atol=1e-6)
  assert sum(float(m["codes_reseeded"][0]) for m in m1) > 0  # the threshold did re-seed codes
  for a, b in zip(m8, m1, strict=True):
    for key in ("perplexity", "codes_used", "codes_reseeded", "loss", "commitment"):
      np.testing.assert_allclose(a[key][0], b[key][0], rtol=1e-5)

  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(3, s8, config.to_dict())
  restored = ckpt.restore(3, state, config.to_dict())
  ckpt.close()
  chex.assert_trees_all_equal(jax.device_get(restored.model_state), s8.model_state)


def test_first_step_seeds_codebook_from_encoder_outputs():
  """random_data initialisation: after the first step every code is one of that batch's encoder outputs,
  moved 1% of the way by the EMA update at most."""
  model = VQVAE(
    **tiny(codebook_init="random_data", decay=1.0 - 1e-9), input_shape=SHAPE, axis_name=parallel.AXIS
  )
  x = _x(8)
  variables = _init(model, x)
  step = parallel.with_named_axis(
    lambda v, x, r: model.apply(v, x, train=True, rngs={"sample": r}, mutable=["vq_ema"])
  )
  out, state = jax.jit(step)(variables, x, jax.random.PRNGKey(3))
  codebook = np.asarray(state["vq_ema"]["vq"]["codebook"])
  z_e = np.asarray(out["z_e"]).reshape(-1, CODES["code_dim"])
  dist = ((codebook[:, None] - z_e[None]) ** 2).sum(-1).min(1)
  np.testing.assert_allclose(dist, 0.0, atol=1e-6)


def test_fsq_variant_and_registry():
  model = get_model("vqvae", **tiny("fsq", levels=(5, 3)), input_shape=SHAPE)
  x = _x()
  out = jax.jit(parallel.with_named_axis(lambda v, x: model.apply(v, x)))(_init(model, x), x)
  assert out["code"].shape == (4, 2, 2, 2) and int(out["indices"].max()) < 15
  np.testing.assert_array_equal(out["commitment_loss"], 0.0)
  assert 1.0 <= float(out["metrics"]["perplexity"]) <= 15.0
  with pytest.raises(ValueError, match=r"num_downsamples=2 needs H and W divisible by 2\^2 = 4.*6x6"):
    _init(get_model("vqvae", **tiny(), input_shape=(6, 6, 3)), _x(1, (6, 6, 3)))
  with pytest.raises(ValueError, match="need ema=True"):
    _init(get_model("vqvae", **tiny(ema=False, codebook_init="kmeans++"), input_shape=SHAPE), _x(1))


@pytest.mark.parametrize("name", ["vqvae_cifar10", "vqvae_fashion_mnist"])
def test_configs_build(name):
  import importlib

  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  shape = (32, 32, 3) if "cifar" in name else (28, 28, 1)
  model, objective, _, _ = train.build(config, shape)
  assert model.axis_name == parallel.AXIS and model.quantizer["ema"]
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  rngs = {"params": jax.random.PRNGKey(0)}
  variables = jax.eval_shape(parallel.with_named_axis(lambda r, x: model.init(r, x)), rngs, x)
  out = jax.eval_shape(parallel.with_named_axis(lambda v, x: model.apply(v, x)), variables, x)
  assert out["recon"].shape == (2, *shape)


@pytest.mark.parametrize(
  "name, options, terms",
  [
    pytest.param("rvq", {"num_stages": 2, "quantizer_dropout": True}, {"code_entropy": 0.1}, id="rvq"),
    pytest.param("lfq", {}, {"lfq_entropy": 0.1}, id="lfq"),
    pytest.param("gumbel", {"anneal_steps": 2}, {"gumbel_kl": 0.01, "code_entropy": 0.1}, id="gumbel"),
  ],
)
def test_other_quantizers_train_through_the_trainer(tiny_config, name, options, terms):
  """Each quantizer's loss terms are registered, read from the VQ-VAE's outputs and reported by the train
  step on 8 devices; its state (Gumbel's step counter) advances with the trainer's steps."""
  config = _vq_config(tiny_config, name, **options)
  config.loss.update(terms)
  model, objective, tx, schedule = train.build(config, SHAPE)
  state = train.create_train_state(model, tx, _x(1), 0)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)
  final, metrics = _run(step, state, [{"x": np.asarray(_x(16))} for _ in range(2)], jax.local_devices())
  for m in metrics:
    assert float(m["nonfinite"][0]) == 0.0 and all(np.isfinite(m[t][0]) for t in terms)
  assert not np.allclose(
    final.params["encoder"]["pre_quantize"]["kernel"], state.params["encoder"]["pre_quantize"]["kernel"]
  )
  if config.model.quantizer.name == "gumbel":
    assert int(final.model_state["vq_ema"]["vq"]["step"]) == 2
    np.testing.assert_allclose([m["temperature"][0] for m in metrics], [1.0, 0.25], rtol=1e-6)
