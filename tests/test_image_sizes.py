"""Any image size: conv_ae, vae_conv and vqvae with a downsampling factor 2^n, checked by shape
(jax.eval_shape, no compile), plus the errors for sizes the factor does not divide."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.core import parallel
from ae_jax.models import get_model, model_config
from ae_jax.runner.config import default_config
from ae_jax.training import train

B = 2
FACTORS = (2, 3, 4)  # num_downsamples: factors 4, 8, 16
SIZES = ((64, 64), (128, 128), (256, 256), (48, 80))  # H x W, the last non-square
RNGS = {"params": jax.random.key(0), "sample": jax.random.key(1)}


def _channels(n):
  return tuple(8 * 2**i for i in range(n))


def _shapes(model, hw, c=3):
  """(abstract variables, abstract outputs, {'module/path': output shape}) for a [B, *hw, c] batch."""
  x = jax.ShapeDtypeStruct((B, *hw, c), jnp.float32)

  def run(x):
    variables = model.init(RNGS, x)
    out, state = model.apply(
      variables, x, rngs={"sample": RNGS["sample"]}, capture_intermediates=True, mutable=["intermediates"]
    )
    return variables, out, state["intermediates"]

  variables, out, inter = jax.eval_shape(parallel.with_named_axis(run), x)
  flat = jax.tree_util.tree_flatten_with_path(inter, is_leaf=lambda t: isinstance(t, tuple))[0]
  modules = {
    "/".join(k.key for k in path[:-1]): value[0].shape
    for path, value in flat
    if not isinstance(value[0], dict)
  }
  return variables, out, modules


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("n", FACTORS)
def test_conv_ae_any_size(n, hw):
  """[B, H, W, 3] -> n stride-2 convs -> grid [B, H/2^n, W/2^n, channels[-1]] -> Dense 32 -> code 16, and
  the mirror back to [B, H, W, 3]."""
  channels = _channels(n)
  model = get_model("conv_ae", input_shape=(*hw, 3), num_downsamples=n, channels=channels)
  variables, out, modules = _shapes(model, hw)
  grid = (hw[0] // 2**n, hw[1] // 2**n)
  assert set(out) == {"code", "recon"}
  assert out["code"].shape == (B, 16) and out["recon"].shape == (B, *hw, 3)
  assert modules[f"encoder/Conv_{n - 1}"] == (B, *grid, channels[-1])
  assert modules["decoder/Dense_1"] == (B, grid[0] * grid[1] * channels[-1])
  for i in range(n):  # the decoder doubles the grid n times, channels mirrored
    size = (grid[0] * 2 ** (i + 1), grid[1] * 2 ** (i + 1))
    assert modules[f"decoder/ConvTranspose_{i}"] == (B, *size, (*reversed(channels[:-1]), 3)[i])
  params = variables["params"]
  assert params["encoder"]["Dense_0"]["kernel"].shape == (grid[0] * grid[1] * channels[-1], 32)
  assert params["decoder"][f"ConvTranspose_{n - 1}"]["kernel"].shape == (3, 3, channels[0], 3)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("n", FACTORS)
def test_vae_conv_any_size(n, hw):
  """vae_conv in the general layout: mean, logvar, z, code [B, latent_dim]; logits and recon [B, H, W, 3]."""
  channels = _channels(n)
  model = get_model("vae_conv", input_shape=(*hw, 3), num_downsamples=n, channels=channels, num_samples=2)
  _, out, modules = _shapes(model, hw)
  grid = (hw[0] // 2**n, hw[1] // 2**n)
  for name in ("mean", "logvar", "z", "code"):
    assert out[name].shape == (B, 16), name
  assert out["logits"].shape == out["recon"].shape == (B, *hw, 3)
  assert out["log_px_z"].shape == (2, B)
  assert modules[f"encoder/Conv_{n - 1}"] == (B, *grid, channels[-1])


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("n", FACTORS)
def test_vqvae_any_size(n, hw):
  """vqvae defaults (h=128, D=64) with n levels: z_e and code [B, H/2^n, W/2^n, 64], indices
  [B, H/2^n, W/2^n]; level widths hidden / 2^(n-1-i) and the decoder's mirrored back to 3 channels."""
  model = get_model("vqvae", input_shape=(*hw, 3), num_downsamples=n, axis_name=parallel.AXIS)
  variables, out, modules = _shapes(model, hw)
  grid = (hw[0] // 2**n, hw[1] // 2**n)
  assert out["z_e"].shape == out["code"].shape == (B, *grid, 64)
  assert out["indices"].shape == (B, *grid)
  assert out["recon"].shape == (B, *hw, 3)
  assert out["codebook_loss"].shape == out["commitment_loss"].shape == (B,)
  levels = [128 // 2 ** (n - 1 - i) for i in range(n)]
  encoder, decoder = variables["params"]["encoder"], variables["params"]["decoder"]
  assert [encoder[f"Conv_{i}"]["kernel"].shape[-1] for i in range(n + 1)] == [*levels, 128]
  assert [decoder[f"up_{i}"]["kernel"].shape[-2:] for i in range(n)] == list(
    zip([128, *reversed(levels[:-1])], [*reversed(levels[:-1]), 3], strict=True)
  )
  assert modules["decoder/up_0"] == (B, grid[0] * 2, grid[1] * 2, levels[-2])


def test_vqvae_channel_mults_set_the_level_widths():
  """channel_mults multiply hidden per level; the decoder mirrors them (its first level takes hidden)."""
  model = get_model("vqvae", input_shape=(32, 32, 1), hidden=16, num_downsamples=3, channel_mults=(1, 2, 4))
  variables, out, _ = _shapes(model, (32, 32), c=1)
  encoder, decoder = variables["params"]["encoder"], variables["params"]["decoder"]
  assert [encoder[f"Conv_{i}"]["kernel"].shape[-2:] for i in range(4)] == [
    (1, 16),
    (16, 32),
    (32, 64),
    (64, 16),
  ]
  assert [decoder[f"up_{i}"]["kernel"].shape[-2:] for i in range(3)] == [(16, 32), (32, 16), (16, 1)]
  assert out["z_e"].shape == (B, 4, 4, 64) and out["recon"].shape == (B, 32, 32, 1)


def test_conv_ae_general_layout_on_28x28():
  """num_downsamples=2 on Fashion-MNIST: 28 -> 14 -> 7 and back, every intermediate shape."""
  model = get_model("conv_ae", num_downsamples=2, channels=(16, 32))
  _, out, modules = _shapes(model, (28, 28), c=1)
  assert modules == {
    "encoder/Conv_0": (B, 14, 14, 16),
    "encoder/Conv_1": (B, 7, 7, 32),
    "encoder/Dense_0": (B, 32),
    "encoder": (B, 32),
    "code_layer": (B, 16),
    "decoder/Dense_0": (B, 32),
    "decoder/Dense_1": (B, 7 * 7 * 32),
    "decoder/ConvTranspose_0": (B, 14, 14, 16),
    "decoder/ConvTranspose_1": (B, 28, 28, 1),
    "decoder": (B, 28, 28, 1),
  }
  assert out["recon"].shape == (B, 28, 28, 1)


def test_config_driven_vqvae_at_64x64():
  """--config.model.num_downsamples=3 through train.build with 64x64 data gives 8x8 codes."""
  config = default_config()
  config.model = model_config("vqvae", hidden=16, res_hidden=8, num_downsamples=3)
  model, _, _, _ = train.build(config, (64, 64, 3))
  _, out, _ = _shapes(model, (64, 64))
  assert out["indices"].shape == (B, 8, 8) and out["recon"].shape == (B, 64, 64, 3)


@pytest.mark.parametrize(
  "name,options",
  [
    ("conv_ae", {"num_downsamples": 2, "channels": (4, 8)}),
    ("vae_conv", {"num_downsamples": 2, "channels": (4, 8), "likelihood": "gaussian_learned"}),
    (
      "vqvae",
      {
        "num_downsamples": 3,
        "hidden": 8,
        "res_hidden": 4,
        "num_res_layers": 1,
        "quantizer": {"name": "vq", "num_codes": 8},
      },
    ),
  ],
)
def test_general_layout_forms_agree(name, options):
  """The sub-pixel and nn.ConvTranspose decoders of the general layouts are the same function of the same
  parameters (16x24 images)."""
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.uniform(-1, 1, size=(B, 16, 24, 3)).astype(np.float32))
  models = [
    get_model(name, input_shape=(16, 24, 3), upsample=u, **options) for u in ("subpixel", "transpose")
  ]
  abstract = jax.eval_shape(parallel.with_named_axis(lambda x: models[0].init(RNGS, x)), x)
  variables = jax.tree.map(  # filled in numpy: compiling the random initialisers is the slow part on CPU
    lambda a: jax.device_put(rng.normal(scale=0.3, size=a.shape).astype(a.dtype)), abstract
  )

  def recon(model):
    apply = parallel.with_named_axis(lambda x: model.apply(variables, x, rngs={"sample": RNGS["sample"]}))
    return jax.jit(apply)(x)["recon"]

  recons = jax.device_get([recon(m) for m in models])
  assert float(np.abs(recons[0]).max()) > 1e-3
  np.testing.assert_allclose(recons[0], recons[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "name,shape,options,match",
  [
    (
      "conv_ae",
      (60, 64, 3),
      {"num_downsamples": 3, "channels": (4, 8, 16)},
      r"num_downsamples=3.*2\^3 = 8.*60x64",
    ),
    (
      "vae_conv",
      (30, 28, 1),
      {"num_downsamples": 2, "channels": (4, 8)},
      r"num_downsamples=2.*2\^2 = 4.*30x28",
    ),
    ("vqvae", (48, 72, 3), {"num_downsamples": 4}, r"num_downsamples=4.*2\^4 = 16.*48x72"),
    ("vqvae", (32, 32, 3), {}, None),  # a size the default factor divides: no error
    ("conv_ae", (64, 64, 1), {}, r"num_downsamples=0.*\[28, 28, C\].*\[64, 64, 1\].*num_downsamples=n"),
    ("vae_conv", (64, 64, 1), {}, r"num_downsamples=0.*\[28, 28, C\].*\[64, 64, 1\]"),
    ("conv_ae", (32, 32, 1), {"num_downsamples": 2}, r"num_downsamples=2 needs one channel size per level"),
    (
      "vqvae",
      (32, 32, 3),
      {"num_downsamples": 3, "channel_mults": (1, 2)},
      r"channel_mults.*num_downsamples=3",
    ),
    ("vqvae", (32, 32, 3), {"num_downsamples": 0}, r"num_downsamples must be >= 1"),
  ],
)
def test_bad_sizes_and_options_raise(name, shape, options, match):
  model = get_model(name, input_shape=shape, **options)
  x = jax.ShapeDtypeStruct((B, *shape), jnp.float32)
  init = parallel.with_named_axis(lambda x: model.init(RNGS, x))
  if match is None:
    jax.eval_shape(init, x)
    return
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(init, x)
