"""Tests for ae_jax.models: the seed architectures' exact shapes and sizes, and their error messages."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import ae_jax.runner.bottleneck as bottleneck
from ae_jax.models import MODELS, get_model, model_config, model_fields
from ae_jax.models.conv_ae import _torch_conv_transpose_padding
from ae_jax.models.layers import SubpixelConvTranspose, resolve_upsample

B = 3


def _init(model, shape):
  """Abstract variables of `model` for inputs `shape` (jax.eval_shape: no XLA compile of the initialisers)."""
  return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def _random_variables(model, shape, seed=0, gain=1.0):
  """Concrete variables with the real structure: kernels ~ N(0, gain^2 / fan_in), biases ~ N(0, 0.1^2).

  Filled in numpy because jit-compiling the Flax initialisers takes ~10 s on CPU for conv_ae; cast there too
  and put with jax.device_put, which (unlike jnp.asarray) compiles nothing per shape.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "kernel":
      fan_in = math.prod(leaf.shape[:-1])
      return jax.device_put(rng.normal(scale=gain / math.sqrt(fan_in), size=leaf.shape).astype(leaf.dtype))
    return jax.device_put(rng.normal(scale=0.1, size=leaf.shape).astype(leaf.dtype))

  return jax.tree_util.tree_map_with_path(fill, _init(model, shape))


def _num_params(tree):
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def _intermediate_shapes(model, variables, x):
  """{'path/to/module': output shape} for every submodule's __call__, via capture_intermediates."""
  _, state = jax.eval_shape(
    lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x
  )
  flat = jax.tree_util.tree_flatten_with_path(state["intermediates"], is_leaf=lambda t: isinstance(t, tuple))[
    0
  ]
  shapes = {}
  for path, value in flat:
    keys = [k.key for k in path if hasattr(k, "key")]
    assert keys[-1] == "__call__"
    name = "/".join(keys[:-1])
    if isinstance(value[0], dict):  # the top-level module's outputs dict
      shapes.update({f"{name}[{k}]": v.shape for k, v in value[0].items()})
    else:
      shapes[name] = value[0].shape
  return shapes


# ----------------------------------------------------------------------------- conv_ae


def test_conv_ae_every_intermediate_shape():
  """The seed conv AE: 28 -> 14 -> 7 -> 3 -> 1 (8, 16, 32, 64 ch), dense 32, code 16, and the mirror back."""
  model = get_model("conv_ae")
  variables = _init(model, (B, 28, 28, 1))
  shapes = _intermediate_shapes(model, variables, jax.ShapeDtypeStruct((B, 28, 28, 1), jnp.float32))
  expected = {
    "encoder/Conv_0": (B, 14, 14, 8),
    "encoder/Conv_1": (B, 7, 7, 16),
    "encoder/Conv_2": (B, 3, 3, 32),
    "encoder/Conv_3": (B, 1, 1, 64),
    "encoder/Dense_0": (B, 32),
    "encoder": (B, 32),
    "code_layer": (B, 16),
    "decoder/Dense_0": (B, 32),
    "decoder/Dense_1": (B, 64),
    "decoder/ConvTranspose_0": (B, 3, 3, 32),
    "decoder/ConvTranspose_1": (B, 7, 7, 16),
    "decoder/ConvTranspose_2": (B, 14, 14, 8),
    "decoder/ConvTranspose_3": (B, 28, 28, 1),
    "decoder": (B, 28, 28, 1),
    "[code]": (B, 16),
    "[recon]": (B, 28, 28, 1),
  }
  assert shapes == expected


def test_conv_ae_outputs_and_tanh_range():
  """conv_ae returns code [B, 16] and recon [B, 28, 28, 1] = tanh(last transposed conv), within [-1, 1]."""
  model = get_model("conv_ae")
  variables = _random_variables(model, (B, 28, 28, 1), gain=3.0)  # large weights saturate the output
  x = jax.random.uniform(jax.random.key(2), (B, 28, 28, 1), minval=-1, maxval=1)
  out, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))(
    variables, x
  )
  assert set(out) == {"code", "recon"}
  chex.assert_shape(out["code"], (B, 16))
  chex.assert_shape(out["recon"], (B, 28, 28, 1))
  pre = state["intermediates"]["decoder"]["ConvTranspose_3"]["__call__"][0]
  assert np.abs(pre).max() > 1.0  # so the range check below is not vacuous
  chex.assert_trees_all_close(out["recon"], jnp.tanh(pre), rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(out["recon"]) <= 1.0)


def test_conv_ae_param_count_matches_pytorch_seed():
  """conv_ae has the PyTorch seed's 53,969 parameters, layer by layer."""

  def conv(c_in, c_out, k=3):  # kernel k x k x c_in x c_out plus bias (same for Conv and ConvTranspose)
    return k * k * c_in * c_out + c_out

  def dense(d_in, d_out):
    return d_in * d_out + d_out

  encoder = conv(1, 8) + conv(8, 16) + conv(16, 32) + conv(32, 64) + dense(64, 32) + dense(32, 16)
  decoder = dense(16, 32) + dense(32, 64) + conv(64, 32) + conv(32, 16) + conv(16, 8) + conv(8, 1)
  assert encoder + decoder == 53_969  # the number PyTorch's sum(p.numel()) reports for the seed model
  variables = _init(get_model("conv_ae"), (1, 28, 28, 1))
  assert set(variables) == {"params"}
  assert _num_params(variables["params"]) == 53_969
  # Layer by layer, so two compensating mistakes cannot hide.
  params = variables["params"]
  assert _num_params(params["encoder"]) + _num_params(params["code_layer"]) == encoder
  assert _num_params(params["decoder"]) == decoder


def _shapes(tree):
  """{'path/to/leaf': shape} of a variables tree."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


@pytest.mark.parametrize("upsample", ["auto", "subpixel", "transpose"])
def test_conv_ae_default_parameter_tree_is_the_seeds(upsample):
  """The default conv_ae (num_downsamples=0, the seed geometry) keeps its parameter paths and shapes, so
  existing checkpoints load, whichever form computes the transposed convolutions."""
  variables = _init(get_model("conv_ae", upsample=upsample), (B, 28, 28, 1))
  assert set(variables) == {"params"}
  assert _shapes(variables["params"]) == {
    "code_layer/bias": (16,),
    "code_layer/kernel": (32, 16),
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
  }


def test_conv_ae_channels_follow_input():
  """A 3-channel 28x28 input gives a 3-channel reconstruction."""
  model = get_model("conv_ae", input_shape=(28, 28, 3))
  variables = _init(model, (B, 28, 28, 3))
  out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((B, 28, 28, 3), jnp.float32))
  chex.assert_shape(out["recon"], (B, 28, 28, 3))
  chex.assert_shape(variables["params"]["encoder"]["Conv_0"]["kernel"], (3, 3, 3, 8))


# ------------------------------------------------------------------------- PyTorch transposed-conv padding


def _torch_conv_transpose_1d_size(n, k, s, p, op):
  return (n - 1) * s - 2 * p + k + op


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (4, 2), (5, 3), (1, 1)])
def test_torch_conv_transpose_padding_gives_pytorch_output_size(k, s):
  """nn.ConvTranspose with the converted padding has PyTorch's size (in - 1) s - 2p + k + op."""
  for n, p, op in itertools.product((1, 3, 7), range(k), range(s)):  # PyTorch needs op < s, p < k here
    pad = _torch_conv_transpose_padding(k, p, op)
    layer = nn.ConvTranspose(2, (k, k), strides=(s, s), padding=(pad, pad))
    out = jax.eval_shape(
      lambda x, layer=layer: layer.init_with_output(jax.random.key(0), x)[0], jnp.zeros((1, n, n, 1))
    )
    size = _torch_conv_transpose_1d_size(n, k, s, p, op)
    if size <= 0:
      continue
    assert out.shape == (1, size, size, 2), (n, k, s, p, op)


def _np_torch_conv_transpose2d(x, w, s, p, op):
  """PyTorch's ConvTranspose2d in numpy (NHWC): out[i*s + a - p, j*s + b - p] += x[i, j] w[a, b]."""
  n, h, wd, _ = x.shape
  k = w.shape[0]
  size_h = _torch_conv_transpose_1d_size(h, k, s, p, op)
  size_w = _torch_conv_transpose_1d_size(wd, k, s, p, op)
  full = np.zeros((n, (h - 1) * s + k + op + p, (wd - 1) * s + k + op + p, w.shape[-1]))
  for i, j, a, b in itertools.product(range(h), range(wd), range(k), range(k)):
    full[:, i * s + a, j * s + b] += x[:, i, j] @ w[a, b]
  return full[:, p : p + size_h, p : p + size_w]


@pytest.mark.parametrize("k,s,p,op", [(3, 1, 0, 0), (3, 2, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0), (3, 3, 2, 1)])
def test_torch_conv_transpose_padding_matches_pytorch_values(k, s, p, op):
  """The converted padding also aligns values like PyTorch (Flax's kernel is PyTorch's, flipped)."""
  rng = np.random.default_rng(k * 100 + s * 10 + p + op)
  x = rng.normal(size=(2, 4, 5, 3))
  w_torch = rng.normal(size=(k, k, 3, 2))  # [kh, kw, in, out]
  pad = _torch_conv_transpose_padding(k, p, op)
  layer = nn.ConvTranspose(2, (k, k), strides=(s, s), padding=(pad, pad), use_bias=False)
  params = {"params": {"kernel": jnp.asarray(w_torch[::-1, ::-1], jnp.float32)}}
  out = jax.jit(layer.apply)(params, jnp.asarray(x, jnp.float32))
  expected = _np_torch_conv_transpose2d(x, w_torch, s, p, op)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- sub-pixel transposed convolution

# (kernel, strides, padding, input H x W): conv_ae's four decoder layers, the VQ-VAE's 4x4 layer, then other
# kernels, strides, asymmetric, cropping (negative) and per-dimension paddings on odd and even sizes.
SUBPIXEL_CASES = [
  ((3, 3), (1, 1), ((2, 2), (2, 2)), (1, 1)),
  ((3, 3), (2, 2), ((2, 2), (2, 2)), (3, 3)),
  ((3, 3), (2, 2), ((1, 2), (1, 2)), (7, 7)),
  ((3, 3), (2, 2), ((1, 2), (1, 2)), (14, 14)),
  ((4, 4), (2, 2), ((2, 2), (2, 2)), (5, 6)),
  ((4, 4), (2, 2), ((1, 3), (3, 1)), (4, 3)),
  ((5, 5), (2, 2), ((4, 4), (3, 3)), (3, 4)),
  ((2, 2), (2, 2), ((1, 1), (1, 1)), (4, 5)),
  ((1, 1), (2, 2), ((0, 1), (0, 1)), (3, 3)),
  ((3, 3), (3, 3), ((2, 2), (0, 1)), (4, 5)),
  ((5, 5), (1, 1), ((-1, 3), (4, 0)), (6, 5)),
  ((3, 4), (2, 1), ((2, 1), (3, 3)), (5, 4)),
]


@pytest.mark.parametrize("kernel,strides,padding,hw", SUBPIXEL_CASES)
def test_subpixel_conv_transpose_is_nn_conv_transpose(kernel, strides, padding, hw):
  """SubpixelConvTranspose has nn.ConvTranspose's parameter tree, output shape, values and gradients (for the
  parameters and the input) to float32 rounding."""
  rng = np.random.default_rng(sum(hw))
  x = jax.device_put(rng.normal(size=(2, *hw, 3)).astype(np.float32))
  sub = SubpixelConvTranspose(4, kernel, strides, padding)
  ref = nn.ConvTranspose(4, kernel, strides, padding=padding)
  abstract = jax.eval_shape(ref.init, jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(sub.init, jax.random.key(0), x), abstract)
  variables = jax.tree.map(lambda a: jax.device_put(rng.normal(size=a.shape).astype(a.dtype)), abstract)
  y_ref, y = jax.jit(ref.apply)(variables, x), jax.jit(sub.apply)(variables, x)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  cotangent = jax.device_put(rng.normal(size=y.shape).astype(np.float32))

  def grads(layer):
    def loss(v, x):
      return jnp.sum(layer.apply(v, x) * cotangent)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)

  chex.assert_trees_all_close(grads(sub), grads(ref), rtol=1e-5, atol=1e-5)


def test_subpixel_conv_transpose_initialises_like_nn_conv_transpose():
  """Same parameter names, initialisers and rng use: the same initial values from the same key."""
  x = jnp.ones((1, 5, 6, 3))
  sub = SubpixelConvTranspose(4, (4, 4), (2, 2), ((2, 2), (2, 2)))
  ref = nn.ConvTranspose(4, (4, 4), (2, 2), padding=((2, 2), (2, 2)))
  chex.assert_trees_all_equal(
    jax.jit(sub.init)(jax.random.key(3), x), jax.jit(ref.init)(jax.random.key(3), x)
  )


def test_subpixel_conv_transpose_keeps_batch_dims_and_dtype():
  """Extra leading batch dims are kept, as nn.ConvTranspose does; dtype sets the computation dtype."""
  x = jnp.ones((2, 3, 4, 5, 2))
  sub = SubpixelConvTranspose(3, (3, 3), (2, 2), ((1, 2), (1, 2)), dtype=jnp.bfloat16)
  y = jax.eval_shape(lambda x: sub.init_with_output(jax.random.key(0), x)[0], x)
  assert y.shape == (2, 3, 8, 10, 3) and y.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="explicit padding"):
    jax.eval_shape(lambda x: SubpixelConvTranspose(3, padding="SAME").init(jax.random.key(0), x), x)


def test_upsample_auto_follows_the_backend(monkeypatch):
  """ "auto" is a CPU choice only: on another backend every model uses nn.ConvTranspose; on the CPU, the
  sub-pixel form for vqvae and the general conv layout, nn.ConvTranspose for the seed's 28x28 geometry."""

  def upsampling_modules(name, shape, **kwargs):
    report = bottleneck.inspect_model(get_model(name, input_shape=shape, **kwargs), shape)
    return {r.module for r in report.rows if "Transpose" in r.module}

  tiny_vq = dict(
    hidden=8, res_hidden=4, num_res_layers=1, quantizer={"name": "vq", "num_codes": 8, "code_dim": 2}
  )
  general = dict(num_downsamples=2, channels=(4, 8))
  assert upsampling_modules("conv_ae", (28, 28, 1)) == {"ConvTranspose"}
  assert upsampling_modules("conv_ae", (16, 16, 1), **general) == {"SubpixelConvTranspose"}
  assert upsampling_modules("vqvae", (8, 8, 3), **tiny_vq) == {"SubpixelConvTranspose"}
  assert upsampling_modules("vae_conv", (16, 16, 1), upsample="transpose", **general) == {"ConvTranspose"}
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert resolve_upsample("auto", "m") == "transpose" and resolve_upsample("subpixel", "m") == "subpixel"
  assert upsampling_modules("conv_ae", (16, 16, 1), **general) == {"ConvTranspose"}
  assert upsampling_modules("vqvae", (8, 8, 3), **tiny_vq) == {"ConvTranspose"}
  with pytest.raises(ValueError, match=r"upsample must be one of \('auto', 'subpixel', 'transpose'\)"):
    get_model("conv_ae", upsample="sub").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


# ----------------------------------------------------------------------------- mlp_ae


def test_mlp_ae_seed_dims():
  """mlp_ae defaults to 784-128-64-32-16-32-64-128-784 (kernel shapes in the param tree)."""
  variables = _init(get_model("mlp_ae"), (B, 28, 28, 1))
  params = variables["params"]
  kernels = {
    f"{side}/{name}": layer["kernel"].shape
    for side in ("encoder", "decoder")
    for name, layer in params[side].items()
  }
  assert kernels == {
    "encoder/Dense_0": (784, 128),
    "encoder/Dense_1": (128, 64),
    "encoder/Dense_2": (64, 32),
    "encoder/code": (32, 16),
    "decoder/Dense_0": (16, 32),
    "decoder/Dense_1": (32, 64),
    "decoder/Dense_2": (64, 128),
    "decoder/output": (128, 784),
  }
  dims = [784, 128, 64, 32, 16, 32, 64, 128, 784]
  assert _num_params(params) == sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))


def test_mlp_ae_outputs_and_tanh_range():
  """mlp_ae returns code [B, 16] and recon with the input's shape, tanh of the output layer, in [-1, 1]."""
  model = get_model("mlp_ae")
  variables = _random_variables(model, (B, 28, 28, 1), gain=3.0)  # large weights saturate the output
  x = jax.random.uniform(jax.random.key(3), (B, 28, 28, 1), minval=-1, maxval=1)
  out, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))(
    variables, x
  )
  chex.assert_shape(out["code"], (B, 16))
  chex.assert_shape(out["recon"], (B, 28, 28, 1))
  pre = state["intermediates"]["decoder"]["output"]["__call__"][0]
  chex.assert_shape(pre, (B, 784))
  assert np.abs(pre).max() > 1.0
  chex.assert_trees_all_close(out["recon"], jnp.tanh(pre).reshape(B, 28, 28, 1), rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(out["recon"]) <= 1.0)


def test_mlp_ae_configurable_hidden_code_and_input_shape():
  """hidden, code_dim and a non-image input_shape (10, 3) set the layer widths and output shape."""
  model = get_model("mlp_ae", input_shape=(10, 3), hidden=(20, 7), code_dim=4)
  variables = _random_variables(model, (B, 10, 3))
  params = variables["params"]
  assert [params["encoder"][n]["kernel"].shape for n in ("Dense_0", "Dense_1", "code")] == [
    (30, 20),
    (20, 7),
    (7, 4),
  ]
  assert [params["decoder"][n]["kernel"].shape for n in ("Dense_0", "Dense_1", "output")] == [
    (4, 7),
    (7, 20),
    (20, 30),
  ]
  out = jax.jit(model.apply)(variables, jax.random.normal(jax.random.key(4), (B, 10, 3)))
  chex.assert_shape(out["code"], (B, 4))
  chex.assert_shape(out["recon"], (B, 10, 3))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
  "name,init_shape,bad_shape,expected",
  [
    ("conv_ae", (B, 28, 28, 1), (B, 28, 28, 3), r"\[batch, 28, 28, 1\]"),
    ("conv_ae", (B, 28, 28, 1), (B, 784), r"\[batch, 28, 28, 1\]"),
    ("mlp_ae", (B, 28, 28, 1), (B, 784), r"\[batch, 28, 28, 1\]"),
    ("mlp_ae", (B, 28, 28, 1), (B, 28, 28), r"\[batch, 28, 28, 1\]"),
  ],
)
def test_wrong_input_shape_raises_with_expected_shape(name, init_shape, bad_shape, expected):
  """A batch whose per-example shape differs from input_shape raises ValueError naming the expected shape."""
  model = get_model(name)
  variables = _random_variables(model, init_shape)
  with pytest.raises(ValueError, match=expected) as info:
    model.apply(variables, jnp.zeros(bad_shape))
  assert str(list(bad_shape)) in str(info.value)  # and the shape it got
  with pytest.raises(ValueError, match=expected):  # also at init time
    _init(model, bad_shape)


def test_conv_ae_rejects_non_28x28_input_shape():
  """conv_ae built for (32, 32, 3) raises ValueError explaining it needs 28x28 images."""
  model = get_model("conv_ae", input_shape=(32, 32, 3))
  with pytest.raises(ValueError, match=r"28") as info:
    _init(model, (B, 32, 32, 3))
  assert "32" in str(info.value)


def test_unknown_model_name_suggests_closest():
  """An unknown model name raises ValueError with 'did you mean' and the closest registered name."""
  with pytest.raises(ValueError, match=r"unknown config.model.name 'conv_a'.*did you mean 'conv_ae'"):
    get_model("conv_a")
  with pytest.raises(ValueError, match=r"mlp_ae"):
    get_model("mlp-ae")


def test_unknown_model_kwarg_names_valid_option():
  """A misspelled model option raises ValueError naming the valid option (code_dims -> code_dim)."""
  with pytest.raises(ValueError, match=r"code_dims.*did you mean 'code_dim'"):
    get_model("mlp_ae", code_dims=8)
  with pytest.raises(ValueError, match=r"'code_dim'"):
    get_model("conv_ae", code_dims=8)


def test_model_fields_exclude_flax_internals():
  """model_fields lists the configurable options without Flax's parent/name; every model takes its input
  shape from the data, and model_config lists every option except that one and the dtype."""
  for name in MODELS:
    fields = model_fields(name)
    assert "parent" not in fields and "name" not in fields
    assert "input_shape" in fields
    config = model_config(name)
    assert set(config) == {"name", *fields} - {"input_shape", "dtype", "axis_name"}
  with pytest.raises(ValueError, match="did you mean 'code_dim'"):
    model_config("conv_ae", code_dims=3)


# ----------------------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("name", ["conv_ae", "mlp_ae"])
def test_encode_decode_agree_with_call(name):
  """apply(..., method='encode') and method='decode' reproduce __call__'s code and recon."""
  model = get_model(name)
  variables = _random_variables(model, (B, 28, 28, 1))
  x = jax.random.uniform(jax.random.key(5), (B, 28, 28, 1), minval=-1, maxval=1)
  out = jax.jit(model.apply)(variables, x)
  code = jax.jit(lambda v, x: model.apply(v, x, method="encode"))(variables, x)
  recon = jax.jit(lambda v, z: model.apply(v, z, method="decode"))(variables, code)
  chex.assert_trees_all_close(code, out["code"], rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(recon, out["recon"], rtol=1e-6, atol=1e-6)
  # decode of a different code gives a different image (decode really uses its input).
  other = jax.jit(lambda v, z: model.apply(v, z + 1.0, method="decode"))(variables, code)
  assert not np.allclose(other, recon, atol=1e-4)
  chex.assert_shape(recon, (B, 28, 28, 1))


@pytest.mark.parametrize(
  "side, kernel, stride, pad", [(2, 3, 1, 1), (4, 3, 1, 1), (8, 4, 2, 1), (5, 4, 1, 1), (16, 3, 1, 1)]
)
def test_small_spatial_conv_is_lax_convolution(side, kernel, stride, pad):
  """nn.Conv with `layers.small_spatial_conv` (one matmul where the output has <= 16 positions) computes
  the convolution lax computes, gradients included, to float32 rounding."""
  from flax import linen as nn

  from ae_jax.models import layers

  x = jax.random.normal(jax.random.PRNGKey(side), (3, side, side, 5))
  plain = nn.Conv(7, (kernel, kernel), stride, pad)
  small = nn.Conv(7, (kernel, kernel), stride, pad, conv_general_dilated=layers.small_spatial_conv)
  variables = plain.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(small.apply(variables, x), plain.apply(variables, x), atol=2e-6)
  grads = [
    jax.grad(lambda v, x, m=m: m.apply(v, x).sum(), argnums=(0, 1))(variables, x) for m in (small, plain)
  ]
  chex.assert_trees_all_close(grads[0], grads[1], atol=2e-5)
