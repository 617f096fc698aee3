"""tied_ae: the decoder uses the encoder kernels transposed, through training; linear tied_ae finds PCA."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ae_jax.core import parallel
from ae_jax.data import get_dataset
from ae_jax.data.pipeline import train_batches
from ae_jax.models import get_model
from ae_jax.models.tied_ae import TiedAutoencoder
from ae_jax.training import train
from ae_jax.training.optim import param_path

DIMS = (32, 16, 4)  # on the 8x8x1 synthetic images of tiny_config: 64 -> 32 -> 16 -> 4 -> 16 -> 32 -> 64


@pytest.fixture
def tied_config(tiny_config):
  tiny_config.model = ml_collections.ConfigDict({"name": "tied_ae", "dims": DIMS})
  return tiny_config


def _paths(tree):
  return {param_path(path): leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _random_params(model, shape, seed=0):
  """Params with the model's structure, filled in numpy (compiling Flax's initialisers takes seconds on CPU)
  and put with jax.device_put (jnp.asarray would compile a cast per shape): kernels ~ N(0, 1 / fan_in),
  biases ~ N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))["params"]

  def fill(path, leaf):
    scale = 1.0 / math.sqrt(leaf.shape[0]) if path[-1].key == "kernel" else 0.1
    return jax.device_put(rng.normal(scale=scale, size=leaf.shape).astype(np.float32))

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _numpy_decode(params, code, n):
  """The decoder by hand in float64: layer j uses encoder kernel n-1-j transposed; sigmoid, linear output."""
  h = np.asarray(code, np.float64)
  for j in range(n):
    kernel = np.asarray(params["encoder"][f"layer_{n - 1 - j}"]["kernel"], np.float64)
    h = h @ kernel.T + np.asarray(params["decoder"][f"layer_{j}"]["bias"], np.float64)
    h = _sigmoid(h) if j < n - 1 else h
  return h


def test_param_tree_has_encoder_kernels_and_biases_only():
  """Default 784-196-81-49: three kernels (all in the encoder), encoder and decoder biases, nothing else."""
  model = get_model("tied_ae")
  params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  assert _paths(params["params"]) == {
    "encoder/layer_0/kernel": (784, 196),
    "encoder/layer_0/bias": (196,),
    "encoder/layer_1/kernel": (196, 81),
    "encoder/layer_1/bias": (81,),
    "encoder/layer_2/kernel": (81, 49),
    "encoder/layer_2/bias": (49,),
    "decoder/layer_0/bias": (81,),
    "decoder/layer_1/bias": (196,),
    "decoder/layer_2/bias": (784,),
  }
  kernels = 784 * 196 + 196 * 81 + 81 * 49
  biases = (196 + 81 + 49) + (81 + 196 + 784)
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  assert count == kernels + biases == 174_896


def test_outputs_and_input_shape_check():
  model = get_model("tied_ae", input_shape=(8, 8, 1), dims=DIMS)
  x = np.zeros((3, 8, 8, 1), np.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
  assert {k: v.shape for k, v in out.items()} == {"code": (3, 4), "recon": (3, 8, 8, 1)}
  with pytest.raises(ValueError, match=r"tied_ae expects inputs of shape \[batch, 8, 8, 1\]"):
    jax.eval_shape(model.init, jax.random.key(0), np.zeros((3, 28, 28, 1), np.float32))


def test_decoder_is_encoder_transposed_after_training(tied_config):
  """After pmapped Adam steps, decode(one-hot codes) and the full forward pass equal a numpy computation
  that uses the (moved) encoder kernels transposed as the decoder's weights."""
  dataset = get_dataset(tied_config.data)
  train_src, info = dataset.split("train"), dataset.info
  model, objective, tx, schedule = train.build(tied_config, info.shape)
  state = train.create_train_state(model, tx, info.preprocess(train_src[0], 0)["x"][None], tied_config.seed)
  step = functools.partial(train.train_step, model=model, objective=objective, tx=tx, learning_rate=schedule)
  p_step = jax.pmap(step, axis_name=parallel.AXIS)
  batches = train_batches(train_src, info.preprocess, global_batch=16, seed=0, num_threads=1)
  rstate = parallel.replicate(state)
  for _ in range(5):
    rstate, _ = p_step(rstate, parallel.shard(parallel.split_for_devices(next(batches))))
  params = jax.device_get(parallel.unreplicate(rstate).params)
  for i in range(len(DIMS)):  # training moved every kernel, so the check below is about the trained ones
    assert not np.allclose(
      params["encoder"][f"layer_{i}"]["kernel"], state.params["encoder"][f"layer_{i}"]["kernel"]
    )

  n = len(DIMS)
  eye = np.eye(DIMS[-1], dtype=np.float32)
  decoded = jax.jit(lambda p, z: model.apply({"params": p}, z, method="decode"))(params, eye)
  np.testing.assert_allclose(
    np.asarray(decoded).reshape(DIMS[-1], -1), _numpy_decode(params, eye, n), atol=1e-5
  )

  x = np.stack([info.preprocess(train_src[i], i)["x"] for i in range(4)])
  out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  h = x.reshape(4, -1).astype(np.float64)
  for i in range(n):
    layer = params["encoder"][f"layer_{i}"]
    h = _sigmoid(h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64))
  np.testing.assert_allclose(out["code"], h, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["recon"]).reshape(4, -1), _numpy_decode(params, h, n), atol=1e-5)


def _split_loss(enc_kernels, dec_kernels, params, x):
  """tied_ae's MSE written out, with the encoder's and decoder's uses of each kernel as separate arguments."""
  n = len(enc_kernels)
  h = x.reshape(x.shape[0], -1)
  target = h
  for i in range(n):
    h = jax.nn.sigmoid(h @ enc_kernels[i] + params["encoder"][f"layer_{i}"]["bias"])
  for j in range(n):
    h = h @ dec_kernels[n - 1 - j].T + params["decoder"][f"layer_{j}"]["bias"]
    h = jax.nn.sigmoid(h) if j < n - 1 else h
  return jnp.mean(jnp.square(h - target))


def test_kernel_gradient_is_sum_of_encoder_and_decoder_paths():
  """d loss / d kernel_i (the model's gradient) = encoder-path part + decoder-path part, both non-zero.

  Each part is checked against the full gradient minus the other part, to a tolerance relative to its own
  size: through three sigmoids the first kernel's encoder-path part is ~1e-3 of its decoder-path part.
  """
  model = TiedAutoencoder(input_shape=(8, 8, 1), dims=DIMS)
  x = np.random.default_rng(1).uniform(size=(6, 8, 8, 1)).astype(np.float32)
  params = _random_params(model, x.shape)

  def model_loss(params):
    return jnp.mean(jnp.square(model.apply({"params": params}, x)["recon"] - x))

  kernels = [params["encoder"][f"layer_{i}"]["kernel"] for i in range(len(DIMS))]
  np.testing.assert_allclose(
    jax.jit(_split_loss)(kernels, kernels, params, x), jax.jit(model_loss)(params), rtol=1e-6
  )
  full = jax.jit(jax.grad(model_loss))(params)
  enc_part, dec_part = jax.jit(jax.grad(_split_loss, argnums=(0, 1)))(kernels, kernels, params, x)
  for i in range(len(DIMS)):
    g, enc, dec = (
      np.asarray(a, np.float64) for a in (full["encoder"][f"layer_{i}"]["kernel"], enc_part[i], dec_part[i])
    )
    assert np.abs(enc).max() > 1e-6 and np.abs(dec).max() > 1e-6
    np.testing.assert_allclose(g - dec, enc, rtol=0, atol=1e-3 * np.abs(enc).max())
    np.testing.assert_allclose(g - enc, dec, rtol=0, atol=1e-3 * np.abs(dec).max())


def _max_principal_angle_deg(a, b):
  """Largest principal angle, in degrees, between the column spaces of a [d, k] and b [d, k]."""
  qa, qb = np.linalg.qr(np.asarray(a, np.float64))[0], np.linalg.qr(np.asarray(b, np.float64))[0]
  cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
  return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def test_linear_tied_ae_spans_top_pca_subspace():
  """Baldi & Hornik (1989): a linear autoencoder trained with MSE on centred data has its k hidden units span
  the top-k principal subspace. Full-batch Adam on rank-3 signal in 20 dims plus small isotropic noise."""
  d, k, n = 20, 3, 4000
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(d, k)))[0]
  x = (rng.normal(size=(n, k)) * [3.0, 2.0, 1.5]) @ basis.T + 0.1 * rng.normal(size=(n, d))
  x = (x - x.mean(0)).astype(np.float32)
  pca = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:k].T  # [d, k]

  model = TiedAutoencoder(input_shape=(d,), dims=(k,), act="identity", output_act="identity")
  params = _random_params(model, x.shape)
  assert _max_principal_angle_deg(params["encoder"]["layer_0"]["kernel"], pca) > 30.0

  tx = optax.adam(optax.cosine_decay_schedule(1e-2, 2000))

  def loss_fn(params):
    return jnp.mean(jnp.square(model.apply({"params": params}, x)["recon"] - x))

  @jax.jit
  def fit(params):
    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=2000)
    return params, losses

  params, losses = fit(params)
  angle = _max_principal_angle_deg(params["encoder"]["layer_0"]["kernel"], pca)
  assert angle < 1.0, f"largest principal angle {angle:.3f} degrees after training"
  # and it reaches the rank-k PCA reconstruction error (the optimum), not just the right subspace
  pca_mse = np.mean(np.square(x - x @ pca @ pca.T))
  assert float(np.asarray(losses)[-1]) == pytest.approx(pca_mse, rel=1e-3)
