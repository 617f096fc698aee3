"""The quantisers inside the VQ-VAE: codebooks() per quantizer, float32 quantisation under a bfloat16
model, options refused where they do not apply, the code-usage evaluator on residual stages, and the
CIFAR-10 config's quantizer argument."""

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.evaluators import codebook as codebook_evaluator
from ae_jax.models.vqvae import VQVAE
from ae_jax.runner.bottleneck import inspect_model
from ae_jax.training import train

TINY = dict(hidden=8, res_hidden=4, num_res_layers=1, input_shape=(8, 8, 3))


def q(name: str = "vq", **options) -> dict:
  """The quantizer section of a tiny VQ-VAE: `name` with 16 codes of 4 dimensions where it has them."""
  codes = {"vq": dict(num_codes=16, code_dim=4), "lfq": dict(code_dim=4)}
  codes["rvq"] = codes["gumbel"] = codes["vq"]
  return {"quantizer": {"name": name, **codes.get(name, {}), **options}}


QUANTIZERS = {
  "vq": q(),
  "vq_cosine_lowdim": q(cosine=True, codebook_dim=3, codebook_init="kmeans++"),
  "rvq": q("rvq", num_stages=3),
  "lfq": q("lfq"),
  "gumbel": q("gumbel"),
  "fsq": q("fsq", levels=(5, 3)),
}
RNGS = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}


def _x(n=4):
  return jax.device_put(np.random.default_rng(0).uniform(-0.5, 0.5, size=(n, 8, 8, 3)).astype(np.float32))


def _init(model, x):
  init = parallel.with_named_axis(lambda r, x: model.init(r, x, train=False))
  return train.run_once(init, RNGS, x)


def test_codebooks_of_each_quantizer():
  assert VQVAE(**TINY, **q()).codebooks() == (16,)
  assert VQVAE(**TINY, **q("gumbel")).codebooks() == (16,)
  assert VQVAE(**TINY, **q("rvq", num_stages=3)).codebooks() == (16, 16, 16)
  assert VQVAE(**TINY, **q("lfq", code_dim=10)).codebooks() == (1024,)
  assert VQVAE(**TINY, **q("fsq", levels=(8, 5, 5, 5))).codebooks() == (1000,)
  assert VQVAE(**TINY, quantizer="fsq").codebooks() == (1000,)  # a name: that quantizer's defaults


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_bfloat16_model_quantises_float32_encoder_outputs(name):
  """With dtype=bfloat16 the encoder runs in bfloat16, but the quantiser gets its output as float32, and
  its indices equal those of the float32 model's quantiser on the same encoder outputs."""
  options = {**TINY, **QUANTIZERS[name], "axis_name": parallel.AXIS}
  f32, bf16 = VQVAE(**options), VQVAE(**options, dtype=jnp.bfloat16)
  x = _x()
  variables = _init(f32, x)
  out = jax.jit(parallel.with_named_axis(lambda v, x: bf16.apply(v, x)))(variables, x)
  assert out["z_e"].dtype == jnp.float32 and out["code"].dtype == jnp.float32
  quantize = parallel.with_named_axis(lambda v, z: f32.apply(v, z, method="quantize"))
  reference = jax.jit(quantize)(variables, out["z_e"])
  np.testing.assert_array_equal(out["indices"], reference["indices"])
  np.testing.assert_array_equal(out["code"], reference["quantized"])
  for key in ("code_logits", "code_entropy", "lfq_entropy", "gumbel_kl"):
    if key in reference:
      assert out[key].dtype == jnp.float32
  z_f32 = jax.jit(lambda v, x: f32.apply(v, x, method="encode"))(variables, x)
  assert not np.allclose(out["z_e"], z_f32, rtol=0, atol=1e-6)  # the encoder did run in bfloat16


@pytest.mark.parametrize(
  "options, match",
  [
    (q("rvq", gradient="rotation"), r"quantizer.gradient is not an option of quantizer 'rvq'.*\['vq'\]"),
    (q("gumbel", cosine=True), r"quantizer.cosine is not an option of quantizer 'gumbel'.*\['vq'\]"),
    (q("fsq", codebook_dim=8), r"quantizer.codebook_dim is not an option of quantizer 'fsq'"),
    (q("vq", num_code=8), r"quantizer 'vq'; did you mean 'num_codes'"),
    (q(gradient="reinforce"), "unknown gradient estimator 'reinforce'"),
    (q("rvq", eval_stages=5, num_stages=4), "eval_stages must be in"),
    (q("lfq", code_dim=24), "above 20 bits"),
    (q("gumbel", temperature_min=2.0), "temperature_min <= temperature"),
    ({"quantizer": "pq"}, r"unknown config.model.quantizer.name 'pq'"),
  ],
)
def test_options_are_checked(options, match):
  model = VQVAE(**{**TINY, **options})
  with pytest.raises(ConfigError, match=match):
    jax.eval_shape(lambda r, x: model.init(r, x), RNGS, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))


def test_code_usage_evaluator_counts_each_residual_stage():
  model = VQVAE(**TINY, **q("rvq", num_stages=2), axis_name=parallel.AXIS)
  x = _x(6)
  state = train.create_train_state(model, optax.sgd(0.1), np.asarray(x)[:1], 0)
  batch = {"x": x, "valid": np.array([1, 1, 1, 1, 1, 0.0], np.float32), "index": np.arange(6, dtype=np.int32)}
  sizes = model.codebooks()
  hist = jax.jit(
    parallel.with_named_axis(functools.partial(codebook_evaluator.code_histograms, model=model, sizes=sizes))
  )(state, batch)
  indices = jax.jit(
    parallel.with_named_axis(lambda s, x: model.apply({"params": s.params, **s.model_state}, x)["indices"])
  )(state, x)
  indices = np.asarray(indices)
  assert indices.shape == (6, 2, 2, 2)
  for s in range(2):
    np.testing.assert_array_equal(
      hist[f"stage_{s}"], np.bincount(np.asarray(indices[:5, ..., s]).ravel(), minlength=16)
    )


def test_inspector_counts_the_bits_of_residual_stages():
  report = inspect_model(VQVAE(**{**TINY, "input_shape": (16, 16, 3)}, **q("rvq", num_stages=4)), (16, 16, 3))
  assert report.codebooks == (16,) * 4
  assert report.latent_grid == (4, 4) and report.bits == pytest.approx(16 * 4 * math.log2(16))


def test_cifar10_config_quantizer_argument():
  module = importlib.import_module("experiments.configs.vqvae_cifar10")
  default = module.get_config()
  assert default.to_dict() == module.get_config("").to_dict()
  vq = default.model.quantizer
  assert vq.name == "vq" and set(default.loss) == {"mse", "nmse", "codebook", "commitment"}
  assert vq.codebook_init == "kmeans++" and vq.dead_code_threshold == 1.0
  lfq = module.get_config("quantizer=lfq")
  assert set(lfq.model.quantizer) == {"name", "code_dim", "beta", "entropy_temperature", "diversity"}
  assert (
    lfq.model.quantizer.name == "lfq" and lfq.model.quantizer.code_dim == 10 and lfq.loss.lfq_entropy == 0.1
  )
  gumbel = module.get_config("quantizer=gumbel")
  assert gumbel.model.quantizer.name == "gumbel" and gumbel.loss.gumbel_kl == 5e-4
  assert gumbel.model.quantizer.anneal_steps == 5000
  rvq = module.get_config("quantizer=rvq,num_stages=8,shared_codebook=true").model.quantizer
  assert (rvq.num_stages, rvq.shared_codebook, rvq.quantizer_dropout, rvq.num_codes) == (8, True, True, 6)
  assert rvq.codebook_init == "kmeans++" and rvq.dead_code_threshold == 1.0  # seeded as the VQ
  cosine = module.get_config("quantizer=vq,cosine=true,codebook_dim=8,code_entropy=0.1")
  assert cosine.model.quantizer.cosine and cosine.model.quantizer.codebook_dim == 8
  assert cosine.loss.code_entropy == 0.1
  assert module.get_config("quantizer=fsq,hidden=64").model.hidden == 64  # a model option
  assert all(isinstance(a, str) for a in module.ARGS)
  with pytest.raises(ConfigError, match="choose one of"):
    module.get_config("quantizer=pq")
  with pytest.raises(ConfigError, match="unknown option 'num_stage'; did you mean 'num_stages'"):
    module.get_config("quantizer=rvq,num_stage=3")
  with pytest.raises(ConfigError, match="unknown option 'num_stages'"):  # an option of rvq, not of vq
    module.get_config("quantizer=vq,num_stages=3")
