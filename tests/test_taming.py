"""taming-transformers' VQGAN and latent-diffusion's KL autoencoder (ae_jax.models.taming).

* Against a PyTorch transcription of the reference (`taming/modules/diffusionmodules/model.py`, the
  `VQModel` and `AutoencoderKL` wrappers and `DiagonalGaussianDistribution`) written with torch.nn (in
  benchmarks/torch_vqgan.py, shared with the benchmark suite's PyTorch VQGAN) and loaded with the Flax
  parameters: every block, a tiny Encoder/Decoder, the KL autoencoder's moments, reconstruction and KL,
  and the VQGAN's encoder/decoder halves agree to float32 tolerance; the Flax parameter paths load into
  the reference's state-dict keys (strict).
* Parameter counts of the published models, counted here from the reference constructors layer by layer
  (no torch) and by the bottleneck inspector on shapes only: taming's VQGAN f16 with 1,024 codes, latent-
  diffusion's kl-f8, and MaskGIT's VQGAN (whose architecture the taming modules only approximate).
* Every registered quantizer inside the VQGAN; the KL autoencoder's outputs, `kl` term, sampling and
  "autoencoding" round trip; ConfigErrors that name the fix; 8 devices = 1 device for a VQGAN train step.
"""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config, run_pmapped_steps
from flax.traverse_util import flatten_dict

from ae_jax import losses
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import QUANTIZERS
from ae_jax.models import get_model, model_config
from ae_jax.models import taming_blocks as tb
from ae_jax.models.taming import VQGAN, KLAutoencoder
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.bottleneck import inspect_model
from ae_jax.training import train

RNGS = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}
# The tiny reference architecture: two levels (16 -> 8), attention at 8, GroupNorm's 32 groups.
TINY = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, z_channels=8)
# Smaller still, for the quantizer sweep and the device test: 4 groups of 2 and 4 channels.
NANO = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), z_channels=4, norm_groups=4)


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def _init(model, x):
  """The model's variables (under the device axis, which EMA codebooks psum over)."""
  return train.run_once(train.init_fn(model), RNGS, x)


def _perturbed(params, scale=0.2, seed=0):
  """params + scale N(0, 1): non-trivial biases and GroupNorm affines (they start at 0 and 1)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(np.float32), params)


# ----------------------------------------------------------------------------- the PyTorch reference


@functools.cache
def _torch_reference():
  """The reference modules, transcribed from taming-transformers (the encoder/decoder latent-diffusion
  reuses; temb_channels=0 as in the Encoder and Decoder, so no temb_proj): one copy in
  benchmarks/torch_vqgan.py, which the benchmark suite's PyTorch VQGAN is built from."""
  torch = pytest.importorskip("torch")
  from benchmarks import torch_vqgan as ref

  names = ("ResnetBlock", "AttnBlock", "Downsample", "Upsample", "Encoder", "Decoder")
  return torch, {name: getattr(ref, name) for name in (*names, "AutoencoderKL", "VQModelHalves")}


def _state_dict_key(path: tuple[str, ...]) -> str:
  """A Flax parameter path -> the reference's state-dict key: level modules "down_1"/"up_0" and the
  blocks inside them ("block_0", "attn_0") become list indices; mid's block_1/attn_1 stay names;
  kernel and GroupNorm scale -> weight."""
  parts, in_level = [], False
  for name in path[:-1]:
    level = re.fullmatch(r"(down|up)_(\d+)", name)
    block = re.fullmatch(r"(block|attn)_(\d+)", name)
    if level:
      parts += [level[1], level[2]]
      in_level = True
    elif block and in_level:
      parts += [block[1], block[2]]
    else:
      parts.append(name)
  return ".".join([*parts, {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]])


def _load_into(module, params, torch):
  """Copies Flax params into the torch module (kernels [kh, kw, in, out] -> [out, in, kh, kw]); strict: the
  key sets must be equal."""
  state = {}
  for path, leaf in flatten_dict(params).items():
    leaf = np.asarray(leaf)
    if path[-1] == "kernel":
      leaf = leaf.transpose(3, 2, 0, 1)
    state[_state_dict_key(path)] = torch.from_numpy(np.array(leaf, np.float32, order="C"))
  module.load_state_dict(state, strict=True)
  return module.eval()


def _nchw(x, torch):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _close(actual, expected, tol=2e-5):
  """Agreement to float32 tolerance, relative to the output's scale."""
  scale = float(np.max(np.abs(expected))) or 1.0
  np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


BLOCK_CASES = {  # name: (Flax module, torch constructor(ref), input [B, H, W, C])
  "resnet_block_channels_change": (
    tb.ResnetBlock(64, dropout=0.5),
    lambda r: r["ResnetBlock"](in_channels=32, out_channels=64, dropout=0.5),
    (2, 6, 6, 32),
  ),
  "resnet_block_same_channels": (
    tb.ResnetBlock(32, norm_groups=8),
    lambda r: r["ResnetBlock"](in_channels=32, dropout=0.0, groups=8),
    (2, 5, 5, 32),
  ),
  "attn_block": (tb.AttnBlock(), lambda r: r["AttnBlock"](64), (2, 5, 4, 64)),
  "downsample_conv_odd_side": (tb.Downsample(), lambda r: r["Downsample"](8, True), (2, 7, 6, 8)),
  "downsample_avg_pool": (tb.Downsample(False), lambda r: r["Downsample"](8, False), (2, 6, 6, 8)),
  "upsample_conv": (tb.Upsample(), lambda r: r["Upsample"](8, True), (2, 3, 4, 8)),
  "upsample_nearest": (tb.Upsample(False), lambda r: r["Upsample"](8, False), (2, 3, 4, 8)),
}


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_blocks_match_the_pytorch_reference(case):
  torch, ref = _torch_reference()
  module, make_torch, shape = BLOCK_CASES[case]
  x = _images(shape)
  variables = module.init(RNGS, x)
  params = _perturbed(variables.get("params", {}))
  out = jax.jit(lambda p, x: module.apply({"params": p}, x))(params, x)  # evaluation: no dropout
  expected = _load_into(make_torch(ref), params, torch)(_nchw(x, torch))
  assert out.shape == _nhwc(expected).shape
  _close(np.asarray(out), _nhwc(expected))


def test_kl_autoencoder_matches_autoencoder_kl():
  """The tiny Encoder (double_z) and Decoder inside AutoencoderKL: the moments (logvar clipped), the mode's
  reconstruction and the reference's kl() against the `kl` term; the parameters load strictly and count
  the same."""
  torch, ref = _torch_reference()
  model = KLAutoencoder(input_shape=(16, 16, 3), **TINY, embed_dim=3)
  x = _images((2, 16, 16, 3))
  params = _perturbed(_init(model, x)["params"])
  out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  ddconfig = TINY | dict(in_channels=3)
  t_model = _load_into(ref["AutoencoderKL"](ddconfig, 3), params, torch)
  t_recon, t_mean, t_logvar, t_kl = t_model(_nchw(x, torch))
  _close(np.asarray(out["mean"]), _nhwc(t_mean))
  _close(np.asarray(out["logvar"]), _nhwc(t_logvar))
  _close(np.asarray(out["recon"]), _nhwc(t_recon))
  kl = losses.LOSSES.lookup("kl").fn(out, {"x": x})
  _close(np.asarray(kl), t_kl.detach().numpy(), tol=1e-5)
  assert "attn_0" in params["encoder"]["down_1"] and "attn_0" not in params["encoder"]["down_0"]
  assert "attn_0" in params["decoder"]["up_1"] and "attn_0" not in params["decoder"]["up_0"]
  assert sum(p.numel() for p in t_model.parameters()) == sum(p.size for p in jax.tree.leaves(params))


def test_vqgan_encoder_and_decoder_halves_match_vq_model():
  torch, ref = _torch_reference()
  model = VQGAN(input_shape=(16, 16, 3), **TINY, quantizer=quantizer_config("vq", num_codes=16, code_dim=6))
  x, z_q = _images((2, 16, 16, 3)), _images((2, 8, 8, 6), seed=2)
  variables = _init(model, x)
  params = _perturbed(variables["params"])
  torch_params = {k: v for k, v in params.items() if k != "vq"}  # the quantizer is ae-jax's
  t_model = _load_into(ref["VQModelHalves"](TINY | dict(in_channels=3), 6), torch_params, torch)
  encode = jax.jit(lambda p, x: model.apply({**variables, "params": p}, x, method="encode"))
  decode = jax.jit(lambda p, z: model.apply({**variables, "params": p}, z, method="decode"))
  _close(np.asarray(encode(params, x)), _nhwc(t_model.encode(_nchw(x, torch))))
  _close(np.asarray(decode(params, z_q)), _nhwc(t_model.decode(_nchw(z_q, torch))))
  assert flatten_dict(params)[VQGAN.last_layer].shape == (3, 3, 32, 3)  # decoder.conv_out, get_last_layer()


# ----------------------------------------------------------------------------- published parameter counts


def _conv(cin, cout, k, bias=True):
  return cout * cin * k * k + (cout if bias else 0)


def _resnet(cin, cout):
  return (
    2 * cin
    + _conv(cin, cout, 3)
    + 2 * cout
    + _conv(cout, cout, 3)
    + (_conv(cin, cout, 1) if cin != cout else 0)
  )


def _attn(c):
  return 2 * c + 4 * _conv(c, c, 1)


def taming_encoder_params(
  ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, double_z, in_ch=3
):
  """Parameters of taming's Encoder, counted as its constructor builds it."""
  n, curr_res, in_ch_mult = _conv(in_ch, ch, 3), resolution, (1, *ch_mult)
  for i, mult in enumerate(ch_mult):
    block_in = ch * in_ch_mult[i]
    for _ in range(num_res_blocks):
      n += _resnet(block_in, ch * mult)
      block_in = ch * mult
      n += _attn(block_in) if curr_res in attn_resolutions else 0
    if i != len(ch_mult) - 1:
      n, curr_res = n + _conv(block_in, block_in, 3), curr_res // 2
  n += 2 * _resnet(block_in, block_in) + _attn(block_in)
  return n + 2 * block_in + _conv(block_in, 2 * z_channels if double_z else z_channels, 3)


def taming_decoder_params(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, out_ch=3):
  """Parameters of taming's Decoder, counted as its constructor builds it."""
  block_in, curr_res = ch * ch_mult[-1], resolution // 2 ** (len(ch_mult) - 1)
  n = _conv(z_channels, block_in, 3) + 2 * _resnet(block_in, block_in) + _attn(block_in)
  for i in reversed(range(len(ch_mult))):
    for _ in range(num_res_blocks + 1):
      n += _resnet(block_in, ch * ch_mult[i])
      block_in = ch * ch_mult[i]
      n += _attn(block_in) if curr_res in attn_resolutions else 0
    if i != 0:
      n, curr_res = n + _conv(block_in, block_in, 3), curr_res * 2
  return n + 2 * block_in + _conv(block_in, out_ch, 3)


def maskgit_vqgan_params(filters, num_res_blocks, channel_multipliers, embedding_dim, codebook_size, ch=3):
  """Parameters of MaskGIT's tokenizer (maskgit/nets/vqgan_tokenizer.py, norm_type GN, conv_downsample
  False): bias-free 3x3 convs in its ResBlocks, whose 1x1 shortcut (bias-free) is applied to the block's
  output, so it is filters x filters; average-pool downsampling; no attention; quantizer codebook."""

  def res(cin, f):
    return (
      2 * cin
      + _conv(cin, f, 3, False)
      + 2 * f
      + _conv(f, f, 3, False)
      + (_conv(f, f, 1, False) if cin != f else 0)
    )

  n, c = _conv(ch, filters, 3, False), filters  # encoder
  for mult in channel_multipliers:
    for _ in range(num_res_blocks):
      n, c = n + res(c, filters * mult), filters * mult
  n += num_res_blocks * res(c, c) + 2 * c + _conv(c, embedding_dim, 1)
  c = filters * channel_multipliers[-1]  # decoder
  n += _conv(embedding_dim, c, 3) + num_res_blocks * res(c, c)
  for i in reversed(range(len(channel_multipliers))):
    for _ in range(num_res_blocks):
      n, c = n + res(c, filters * channel_multipliers[i]), filters * channel_multipliers[i]
    n += _conv(c, c, 3) if i > 0 else 0
  return n + 2 * c + _conv(c, ch, 3) + codebook_size * embedding_dim


def _inspected(config_module, input_shape=(256, 256, 3)):
  """The bottleneck inspector's report of the config's model, built as training builds it (shapes only),
  and its parameters per top-level submodule."""
  config = config_module.get_config()
  model, *_ = train.build(config, input_shape)
  report = inspect_model(model, input_shape)
  parts = {}
  for row in report.rows:
    top = row.path.split("/")[0]
    parts[top] = parts.get(top, 0) + row.params
  return config, report, parts


def test_vqgan_imagenet_f16_1024_has_the_published_parameter_count():
  """taming's VQGAN f16, 1,024 codes (configs/imagenet_vqgan.yaml): 72,141,699 parameters without the
  loss's LPIPS and discriminator (the model's state dict without `loss.*`)."""
  from experiments.configs import vqgan_imagenet_f16_1024 as module

  config, report, parts = _inspected(module)
  arch = {k: config.model[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution")}
  encoder = taming_encoder_params(**arch, z_channels=256, double_z=False)
  decoder = taming_decoder_params(**arch, z_channels=256)
  quant_convs, codebook = 2 * _conv(256, 256, 1), 1024 * 256
  assert encoder + decoder + quant_convs + codebook == 72_141_699
  assert (parts["encoder"], parts["decoder"]) == (encoder, decoder) == (29_298_176, 42_449_795)
  assert report.total_params == 72_141_699


def test_kl_f8_has_the_published_parameter_count():
  """latent-diffusion's kl-f8 first stage: 83.65 M parameters in encoder + decoder + quant convs."""
  from experiments.configs import kl_f8 as module

  config, report, parts = _inspected(module)
  arch = {k: config.model[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution")}
  encoder = taming_encoder_params(**arch, z_channels=4, double_z=True)
  decoder = taming_decoder_params(**arch, z_channels=4)
  quant_convs = _conv(8, 8, 1) + _conv(4, 4, 1)
  assert encoder + decoder + quant_convs == 83_653_863
  assert (parts["encoder"], parts["decoder"]) == (encoder, decoder) == (34_163_592, 49_490_179)
  assert report.total_params == 83_653_863


def test_maskgit_vqgan_is_approximated_and_the_difference_is_counted():
  """MaskGIT's tokenizer (filters 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks, no attention, 1,024 codes of
  256) has 54,515,587 parameters by its code; vqgan_maskgit.py, the taming architecture with no attention,
  has more (biases, a third decoder block per level, strided-conv downsampling, quant convs): the
  figures its docstring states."""
  from experiments.configs import vqgan_maskgit as module

  assert maskgit_vqgan_params(128, 2, (1, 1, 2, 2, 4), 256, 1024) == 54_515_587
  config, report, parts = _inspected(module)
  assert report.total_params == 64_780_163
  arch = {k: config.model[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution")}
  no_mid_attention = _attn(512)  # the counters build the middle's attention; MaskGIT has none
  assert parts["encoder"] == taming_encoder_params(**arch, z_channels=256, double_z=False) - no_mid_attention
  assert parts["decoder"] == taming_decoder_params(**arch, z_channels=256) - no_mid_attention
  assert "attn" not in " ".join(row.path for row in report.rows)


# ------------------------------------------------------------------------- every quantizer, shapes, errors


def _nano_quantizer(name):
  """The quantizer section `name` at a small size (codebooks of 16 where there are codes)."""
  sizes = {"vq": dict(num_codes=16, code_dim=4), "rvq": dict(num_codes=16, code_dim=4, num_stages=2)}
  sizes |= {"gumbel": sizes["vq"], "lfq": dict(code_dim=4), "fsq": dict(levels=(5, 3))}
  return quantizer_config(name, **sizes.get(name, {}))


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_vqgan_runs_with_every_registered_quantizer(name):
  model = get_model(
    "vqgan", input_shape=(8, 8, 3), **NANO, quantizer=_nano_quantizer(name), axis_name=parallel.AXIS
  )
  x = _images((3, 8, 8, 3))

  def forward(x):  # initialise, then one training forward (state collections updated), in one program
    variables = dict(model.init(RNGS, x, train=False))
    params = variables.pop("params")
    return train.apply_model(model, params, variables, {"x": x}, train=True, rng=RNGS["sample"])[0]

  out = jax.jit(parallel.with_named_axis(forward))(x)
  assert out["recon"].shape == x.shape and out["recon"].dtype == jnp.float32
  assert out["code"].shape[:3] == out["z_e"].shape[:3] == (3, 4, 4)
  assert out["indices"].shape[:3] == (3, 4, 4) and jnp.issubdtype(out["indices"].dtype, jnp.integer)
  assert out["codebook_loss"].shape == out["commitment_loss"].shape == (3,)
  for value in jax.tree.leaves(out):
    assert np.all(np.isfinite(np.asarray(value, np.float64)))
  assert len(model.codebooks()) == (2 if name == "rvq" else 1)


def test_kl_autoencoder_outputs_sampling_and_the_kl_term():
  model = KLAutoencoder(input_shape=(8, 8, 3), **NANO, embed_dim=3)
  x = _images((2, 8, 8, 3))
  variables = _init(model, x)
  run = jax.jit(
    lambda v, x, train, key: model.apply(v, x, train=train, rngs={"sample": key}), static_argnums=2
  )
  evaluation = run(variables, x, False, jax.random.PRNGKey(3))
  training = run(variables, x, True, jax.random.PRNGKey(3))
  for out in (evaluation, training):
    assert out["recon"].shape == x.shape
    for key in ("mean", "logvar", "z", "code"):
      assert out[key].shape == (2, 4, 4, 3) and out[key].dtype == jnp.float32
  np.testing.assert_array_equal(evaluation["z"], evaluation["mean"])  # the mode at evaluation
  np.testing.assert_array_equal(training["code"], training["mean"])
  eps = (training["z"] - training["mean"]) / jnp.exp(0.5 * training["logvar"])
  assert 0.5 < float(jnp.std(eps)) < 1.5 and not np.allclose(training["z"], training["mean"])
  sampled = KLAutoencoder(input_shape=(8, 8, 3), **NANO, embed_dim=3, eval_sample=True)
  np.testing.assert_allclose(  # eval_sample draws at evaluation exactly as training does
    jax.jit(lambda v, x: sampled.apply(v, x, rngs={"sample": jax.random.PRNGKey(3)}))(variables, x)["z"],
    training["z"],
    rtol=1e-6,
  )
  kl = losses.LOSSES.lookup("kl").fn(evaluation, {"x": x})
  mean, logvar = evaluation["mean"], evaluation["logvar"]
  expected = 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))
  assert kl.shape == (2,)
  np.testing.assert_allclose(kl, expected, rtol=1e-5)
  objective = losses.make_objective({"l1": 3.0, "kl": 1e-6})  # the configs' objective evaluates
  assert np.all(np.isfinite(objective(evaluation, {"x": x}, jnp.zeros((), jnp.int32))[0]))
  # the logvar clamp of DiagonalGaussianDistribution
  huge = jax.tree.map(lambda p: p * 0 + 50.0 if p.ndim == 1 else p, variables["params"]["quant_conv"])
  clipped = run({"params": {**variables["params"], "quant_conv": huge}}, x, False, jax.random.PRNGKey(3))[
    "logvar"
  ]
  assert float(clipped.max()) == 20.0


def test_kl_autoencoder_autoencoding_round_trip():
  """latent_code(x) is the posterior mean flattened [B, h w embed_dim]; decode_latent inverts the flattening,
  so decode_latent(latent_code(x)) is the model's evaluation reconstruction."""
  model = KLAutoencoder(input_shape=(8, 8, 3), **NANO, embed_dim=3)
  x = _images((2, 8, 8, 3))
  variables = _init(model, x)
  code = jax.jit(lambda v, x: model.apply(v, x, method="latent_code"))(variables, x)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  assert code.shape == (2, 4 * 4 * 3)
  np.testing.assert_array_equal(code, out["mean"].reshape(2, -1))
  recon = jax.jit(lambda v, c: model.apply(v, c, method="decode_latent"))(variables, code)
  np.testing.assert_allclose(recon, out["recon"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
  "model, options, x_shape, match",
  [
    (
      "vqgan",
      dict(input_shape=(30, 30, 3), ch_mult=(1, 2, 2)),
      (1, 30, 30, 3),
      r"divisible by 4.*shorten ch_mult",
    ),
    ("vqgan", dict(input_shape=(8, 8, 3), ch=48, ch_mult=(1, 2)), (1, 8, 8, 3), r"norm_groups=32.*ch=48"),
    (
      "kl_autoencoder",
      dict(input_shape=(8, 8, 3), norm_groups=3),
      (1, 8, 8, 3),
      r"divisible by 3; change ch or",
    ),
    (
      "vqgan",
      dict(input_shape=(16, 16, 3), attn_resolutions=(5,)),
      (1, 16, 16, 3),
      r"\[16, 8\].*set config.model.resolution",
    ),
    ("vqgan", dict(input_shape=(16, 16, 3)), (1, 8, 8, 3), r"input_shape"),
    ("vqgan", dict(input_shape=(16, 16)), (1, 16, 16), r"takes \[H, W, C\] images"),
    ("kl_autoencoder", dict(input_shape=(16, 16, 3), embed_dim=0), (1, 16, 16, 3), r"embed_dim must be >= 1"),
  ],
)
def test_bad_shapes_give_a_config_error_naming_the_fix(model, options, x_shape, match):
  defaults = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4)
  module = get_model(model, **(defaults | options))
  with pytest.raises(ConfigError, match=match):
    jax.eval_shape(lambda r, x: module.init(r, x), RNGS, jax.ShapeDtypeStruct(x_shape, jnp.float32))


def test_configs_name_real_loss_terms():
  """The shipped taming configs use only registered loss terms (the perceptual and GAN ones are to come)."""
  from experiments.configs import (
    kl_autoencoder_cifar10,
    kl_f8,
    vqgan_cifar10,
    vqgan_fashion_mnist,
    vqgan_imagenet_f16_1024,
    vqgan_maskgit,
  )

  for module in (
    kl_autoencoder_cifar10,
    kl_f8,
    vqgan_cifar10,
    vqgan_fashion_mnist,
    vqgan_imagenet_f16_1024,
    vqgan_maskgit,
  ):
    for term in module.get_config().loss:
      losses.LOSSES.lookup(term)
  assert model_config("vqgan").mid_attention and not vqgan_maskgit.get_config().model.mid_attention


# ----------------------------------------------------------------------------- 8 devices = 1 device


def test_vqgan_eight_devices_match_one_device():
  """One tiny VQGAN train step (EMA codebook, attention) over 8 devices of 2 examples each equals 1 device
  with all 16: parameters, the EMA codebook state and the loss."""
  from test_train import _setup

  assert jax.local_device_count() == 8
  config = make_tiny_config()
  config.data.shape = (4, 4, 3)
  config.model = model_config(
    "vqgan", **(NANO | dict(ch_mult=(1,))), quantizer=quantizer_config("vq", num_codes=16, code_dim=4)
  )
  config.loss = {"l1": 1.0, "codebook": 1.0, "commitment": 1.0}
  config.optimizer.name = "sgd"  # the update is the averaged gradient itself (Adam rescales float noise)
  config.optimizer.learning_rate = 0.1
  state, step_fn, batches = _setup(config)
  host_batches = [next(batches)]
  s8, m8 = run_pmapped_steps(step_fn, state, host_batches, jax.local_devices())
  s1, m1 = run_pmapped_steps(step_fn, state, host_batches, jax.local_devices()[:1])
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s8.model_state, s1.model_state, rtol=1e-5, atol=1e-6)
  for a, b in zip(m8, m1, strict=True):
    np.testing.assert_allclose(a["loss"][0], b["loss"][0], rtol=1e-5)
  last = VQGAN.last_layer
  assert not np.allclose(flatten_dict(s8.params)[last], flatten_dict(state.params)[last])
