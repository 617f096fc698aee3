"""LSTMLayer: the function of nn.RNN(nn.OptimizedLSTMCell) in a fused-gate layout; padding, init, dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ae_jax.models.lstm_layer import FusedLSTMCell, LSTMLayer, from_optimized_lstm_cell

B, T, F, H = 5, 7, 3, 4
LENGTHS = np.array([7, 4, 1, 7, 2], np.int32)


def _flax_and_ours(act="tanh", seed=0):
  """Flax's RNN and its variables (perturbed so that biases are non-zero) and ours mapped from them."""
  fn = {"tanh": jnp.tanh, "relu": nn.relu}[act]
  rnn = nn.RNN(nn.OptimizedLSTMCell(H, activation_fn=fn))
  x = jax.ShapeDtypeStruct((B, T, F), jnp.float32)
  shapes = jax.eval_shape(lambda x: rnn.init(jax.random.key(0), x), x)
  rng = np.random.default_rng(seed)
  flax_vars = jax.tree.map(
    lambda s: jax.device_put(rng.normal(scale=0.5, size=s.shape).astype(np.float32)), shapes
  )
  ours = {"params": jax.jit(from_optimized_lstm_cell)(flax_vars["params"]["cell"])}
  return rnn, flax_vars, ours


def _inputs(seed=1):
  return jax.device_put(np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32))


def _close(a, b, rtol=2e-5, atol=2e-6):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize(
  "act,masked,unroll", [("tanh", False, 1), ("tanh", True, 1), ("tanh", True, 3), ("relu", True, 1)]
)
def test_same_function_and_gradient_as_flax_rnn(act, masked, unroll):
  """Outputs at every step (padded ones included: both run on over the padding), the final carry (at each
  sequence's last real step when masked) and the gradients of a loss of both, under jit."""
  rnn, flax_vars, ours = _flax_and_ours(act)
  layer = LSTMLayer(H, cell_act=act, unroll=unroll)
  x = _inputs()
  lengths = jnp.asarray(LENGTHS) if masked else None
  weights = jax.device_put(np.random.default_rng(2).normal(size=(B, T, H)).astype(np.float32))

  def loss(module, v, x):
    (c, h), y = module.apply(v, x, seq_lengths=lengths, return_carry=True)
    return jnp.sum(weights * y) + jnp.sum(jnp.sin(c)) + 2.0 * jnp.sum(h**2), ((c, h), y)

  grad = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)
  (_, (carry_f, y_f)), (dv_f, dx_f) = jax.jit(lambda v, x: grad(rnn, v, x))(flax_vars, x)
  (_, (carry_o, y_o)), (dv_o, dx_o) = jax.jit(lambda v, x: grad(layer, v, x))(ours, x)
  _close(y_o, y_f)
  _close(carry_o, carry_f)
  _close(dv_o["params"], jax.jit(from_optimized_lstm_cell)(dv_f["params"]["cell"]), rtol=1e-4, atol=1e-5)
  _close(dx_o, dx_f, rtol=1e-4, atol=1e-5)
  if masked:  # the carry really is each sequence's state at its last real step
    np.testing.assert_allclose(carry_o[1], np.asarray(y_o)[np.arange(B), LENGTHS - 1], rtol=1e-6)
  # Outputs without return_carry are the same outputs.
  _close(jax.jit(lambda v, x: layer.apply(v, x, seq_lengths=lengths))(ours, x), y_o, rtol=1e-6, atol=0)


def test_real_steps_ignore_padding_and_empty_sequences_keep_the_initial_carry():
  _, _, ours = _flax_and_ours()
  layer = LSTMLayer(H)
  x = _inputs()
  lengths = jax.device_put(np.array([7, 4, 0, 3, 2], np.int32))
  real = np.arange(T)[None, :, None] < np.asarray(lengths)[:, None, None]
  noisy = np.where(real, x, 1e3 * np.asarray(_inputs(seed=3)))
  apply = jax.jit(lambda x: layer.apply(ours, x, seq_lengths=lengths, return_carry=True))
  (carry, y), (carry_noisy, y_noisy) = jax.device_get((apply(x), apply(noisy)))
  _close(carry_noisy, carry, rtol=1e-6, atol=0)
  np.testing.assert_allclose(np.where(real, y_noisy, 0), np.where(real, y, 0), rtol=1e-6)
  np.testing.assert_array_equal(carry[0][2], 0.0)
  np.testing.assert_array_equal(carry[1][2], 0.0)


def test_initial_carry_and_its_gradient_match_flax():
  rnn, flax_vars, ours = _flax_and_ours()
  layer = LSTMLayer(H)
  x = _inputs()
  rng = np.random.default_rng(4)
  init = tuple(jax.device_put(rng.normal(size=(B, H)).astype(np.float32)) for _ in range(2))
  lengths = jnp.asarray(LENGTHS)

  def loss(module, v, init):
    (c, h), y = module.apply(v, x, initial_carry=init, seq_lengths=lengths, return_carry=True)
    return jnp.sum(y**2) + jnp.sum(c * h)

  val_f, d_f = jax.jit(jax.value_and_grad(lambda i: loss(rnn, flax_vars, i)))(init)
  val_o, d_o = jax.jit(jax.value_and_grad(lambda i: loss(layer, ours, i)))(init)
  np.testing.assert_allclose(val_o, val_f, rtol=1e-5)
  _close(d_o, d_f, rtol=1e-4, atol=1e-5)


def test_init_is_like_optimized_lstm_cell():
  """Same parameter count; input kernel ~ lecun_normal (variance 1 / F), each [H, H] block of the recurrent
  kernel orthogonal, zero biases; all float32."""
  features, hidden = 16, 32
  x = np.zeros((2, 3, features), np.float32)
  params = jax.jit(LSTMLayer(hidden).init)(jax.random.key(0), x)["params"]
  flax_params = jax.eval_shape(nn.RNN(nn.OptimizedLSTMCell(hidden)).init, jax.random.key(0), x)["params"]
  assert sum(p.size for p in jax.tree.leaves(params)) == sum(p.size for p in jax.tree.leaves(flax_params))
  assert params["input_kernel"].shape == (features, 4 * hidden)
  assert params["recurrent_kernel"].shape == (hidden, 4 * hidden)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  np.testing.assert_array_equal(params["bias"], np.zeros(4 * hidden))
  blocks = np.split(np.asarray(params["recurrent_kernel"]), 4, axis=1)
  for block in blocks:
    np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)
  assert not np.allclose(blocks[0], blocks[1])
  assert 0.5 / features < np.var(params["input_kernel"]) < 1.5 / features


def test_compute_dtype_keeps_float32_params_and_carry():
  _, _, ours = _flax_and_ours()
  x = _inputs()
  layer16 = LSTMLayer(H, dtype=jnp.bfloat16)
  params16 = jax.jit(layer16.init)(jax.random.key(0), x)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
  (c, h), y = jax.jit(lambda x: layer16.apply(ours, x, return_carry=True))(x)
  assert y.dtype == jnp.bfloat16 and c.dtype == jnp.float32 and h.dtype == jnp.float32
  y32 = jax.jit(lambda x: LSTMLayer(H).apply(ours, x))(x)
  np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=5e-2)
  grads = jax.jit(jax.grad(lambda v: jnp.sum(layer16.apply(v, x).astype(jnp.float32) ** 2)))(ours)
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_fused_cell_steps_like_the_layer():
  _, _, ours = _flax_and_ours()
  x = _inputs()
  cell = FusedLSTMCell(H)
  carry = (np.zeros((B, H), np.float32), np.zeros((B, H), np.float32))
  step = jax.jit(lambda carry, x_t: cell.apply(ours, carry, x_t))
  ys = []
  for t in range(T):
    carry, y = step(carry, np.asarray(x)[:, t])
    ys.append(y)
  (c, h), y_layer = jax.jit(lambda x: LSTMLayer(H).apply(ours, x, return_carry=True))(x)
  _close(np.stack(ys, axis=1), y_layer, rtol=1e-5, atol=1e-6)
  _close(carry, (c, h), rtol=1e-5, atol=1e-6)


def test_every_unroll_computes_the_same_function():
  """Unrolled loops (chunks of `unroll` steps, then the T % unroll left; one chunk if unroll > T) match."""
  _, _, ours = _flax_and_ours()
  x = _inputs()
  lengths = jnp.asarray(LENGTHS)

  def value_and_grad(unroll):
    layer = LSTMLayer(H, unroll=unroll)

    def loss(v, x):
      (c, h), y = layer.apply(v, x, seq_lengths=lengths, return_carry=True)
      return jnp.sum(y**3) + jnp.sum(c) - jnp.sum(h), y

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(ours, x)

  expected = value_and_grad(1)
  for unroll in (2, 9):
    _close(value_and_grad(unroll), expected, rtol=1e-5, atol=1e-6)
