"""An LSTM layer over whole sequences [batch, time, features], with the input projection hoisted out of time.

`LSTMLayer` computes the same function as `nn.RNN(nn.OptimizedLSTMCell(features))` (gates i, f, g, o;
c' = sigmoid(f) * c + sigmoid(i) * act(g), h' = sigmoid(o) * act(c')), organised for speed:

* the inputs of every time step are projected at once, x @ W_x [B*T, F] x [F, 4H], before the loop over
  time (`jax.lax.fori_loop`, a scan), whose body is one fused-gate matmul h @ W_h [B, H] x [H, 4H], the
  bias and the gates;
* the backward pass is a hand-written reverse loop (`jax.custom_vjp`) that carries only dL/dc and dL/dh
  through time; the kernels' gradients are one matmul each over all steps afterwards (sum_t h_{t-1}^T dz_t
  and x^T dz) instead of [H, 4H] and [F, 4H] accumulations inside the loop. Forward-mode differentiation
  (`jax.jvp`, `jax.jacfwd`) is therefore not available through the layer;
* one [T, B, 4H] buffer serves the whole step: the projection x @ W_x, then the pre-activation gates z_t
  written over it by the forward loop (the residuals of the backward pass), then dL/dz_t written over
  those by the backward loop. Each iteration reads its slice from the loop carry, fetched by the previous
  iteration after its write: XLA:CPU copies the whole buffer every iteration when a slice is read before
  a write in the same iteration, and emits slow code when the slice is fused into the gate arithmetic.

Parameters (float32 unless `param_dtype` says otherwise), the gates in the order i, f, g, o along the last
axis, each block H wide:

* `input_kernel` [F, 4H]: lecun_normal, i.e. truncated normal of variance 1 / F, as OptimizedLSTMCell's
  four input kernels `ii, if, ig, io` [F, H] (lecun_normal with the same fan-in);
* `recurrent_kernel` [H, 4H]: four independent orthogonal [H, H] blocks, as the cell's `hi, hf, hg, ho`;
* `bias` [4H]: zeros (the forget gate's too), as the cell's biases, which live on `hi, hf, hg, ho` only.

`FusedLSTMCell` is the single-step cell with this parameter layout, for recurrences that need each
step's output before the next input exists (a decoder feeding back its own predictions).

Flax's OptimizedLSTMCell maps onto this layout as input_kernel = concat(ii, if, ig, io kernels),
recurrent_kernel = concat(hi, hf, hg, ho kernels), bias = concat(hi, hf, hg, ho biases): see
`from_optimized_lstm_cell`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.models.layers import activation

Carry = tuple[jax.Array, jax.Array]  # an LSTM state (c, h), each [batch, hidden]
Activation = Callable[[jax.Array], jax.Array]

DEFAULT_UNROLL = 1  # time steps per loop iteration: 1 was the fastest on CPU (2, 4 and 8 were slower)


def blockwise(init: nn.initializers.Initializer, blocks: int) -> nn.initializers.Initializer:
  """An initialiser of a [..., blocks * n] kernel as `blocks` independent [..., n] kernels, concatenated."""

  def init_fn(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    *lead, width = shape
    if width % blocks:
      raise ValueError(f"kernel width {width} is not a multiple of {blocks} blocks")
    keys = jax.random.split(key, blocks)
    return jnp.concatenate([init(k, (*lead, width // blocks), dtype) for k in keys], axis=-1)

  return init_fn


def _act(cell_act: str | Activation) -> Activation:
  return activation(cell_act) if isinstance(cell_act, str) else cell_act


def _lstm_params(module: nn.Module, in_features: int, hidden: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Declares (input_kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]) on a compact module."""
  w_x = module.param("input_kernel", module.kernel_init, (in_features, 4 * hidden), module.param_dtype)
  w_h = module.param(
    "recurrent_kernel", blockwise(module.recurrent_kernel_init, 4), (hidden, 4 * hidden), module.param_dtype
  )
  b = module.param("bias", module.bias_init, (4 * hidden,), module.param_dtype)
  return w_x, w_h, b


def gates_to_state(act: Activation, z: jax.Array, c: jax.Array) -> Carry:
  """Pre-activation gates z [..., 4H] (i, f, g, o) and cell state c [..., H] -> the new (c, h) [..., H]."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = nn.sigmoid(f) * c + nn.sigmoid(i) * act(g)
  return c, (nn.sigmoid(o) * act(c)).astype(c.dtype)


def _forward(
  act: Activation, unroll: int, zx: jax.Array, w_h: jax.Array, b: jax.Array, c0: jax.Array, h0: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The forward recurrence, `unroll` steps per loop iteration.

  zx [T, B, 4H] (projected inputs), w_h [H, 4H], b [4H], c0, h0 [B, H] -> (pre-activation gates [T, B, 4H],
  written over zx's buffer; cell states [T + 1, B, H] and hidden states [T + 1, B, H], index 0 the initial
  state, index t + 1 the state after step t).
  """
  time = zx.shape[0]
  k = max(1, min(unroll, time))
  chunks, rest = divmod(time, k)
  cbuf = jnp.zeros((time + 1, *c0.shape), c0.dtype).at[0].set(c0)
  hbuf = jnp.zeros((time + 1, *h0.shape), h0.dtype).at[0].set(h0)

  def steps(c, h, z_x):  # z_x [m, B, 4H] -> c, h and the per-step z, c, h stacked [m, ...]
    zs, cs, hs = [], [], []
    for j in range(z_x.shape[0]):
      z = z_x[j] + jnp.dot(h.astype(w_h.dtype), w_h) + b  # the bias here fuses into the gates
      c, h = gates_to_state(act, z, c)
      zs, cs, hs = zs + [z], cs + [c], hs + [h]
    return c, h, jnp.stack(zs), jnp.stack(cs), jnp.stack(hs)

  def body(i, carry):
    c, h, zbuf, cbuf, hbuf, z_x = carry
    c, h, z, cs, hs = steps(c, h, z_x)
    t = i * k
    zbuf = jax.lax.dynamic_update_slice_in_dim(zbuf, z, t, 0)
    cbuf = jax.lax.dynamic_update_slice_in_dim(cbuf, cs, t + 1, 0)
    hbuf = jax.lax.dynamic_update_slice_in_dim(hbuf, hs, t + 1, 0)
    z_next = jax.lax.dynamic_slice_in_dim(zbuf, jnp.minimum(t + k, time - k), k)  # read after the write
    return c, h, zbuf, cbuf, hbuf, z_next

  c, h, zbuf, cbuf, hbuf, _ = jax.lax.fori_loop(0, chunks, body, (c0, h0, zx, cbuf, hbuf, zx[:k]))
  if rest:
    t = chunks * k
    _, _, z, cs, hs = steps(c, h, zbuf[t:])
    zbuf, cbuf, hbuf = zbuf.at[t:].set(z), cbuf.at[t + 1 :].set(cs), hbuf.at[t + 1 :].set(hs)
  return zbuf, cbuf, hbuf


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def recurrence(
  act: Activation, unroll: int, zx: jax.Array, w_h: jax.Array, b: jax.Array, c0: jax.Array, h0: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """LSTM states over time from the projected inputs zx = x @ W_x [T, B, 4H], w_h [H, 4H], the bias b [4H]
  and the initial c0, h0 [B, H].

  Returns (cell states [T + 1, B, H], hidden states [T + 1, B, H]): index 0 holds the initial state, index
  t + 1 the state after step t. Differentiable in reverse mode only.
  """
  _, cbuf, hbuf = _forward(act, unroll, zx, w_h, b, c0, h0)
  return cbuf, hbuf


def _recurrence_fwd(act, unroll, zx, w_h, b, c0, h0):
  zs, cbuf, hbuf = _forward(act, unroll, zx, w_h, b, c0, h0)
  return (cbuf, hbuf), (zs, cbuf, hbuf, w_h)


def _recurrence_bwd(act, unroll, residuals, cotangents):
  """Reverse loop over time carrying only dL/dc and dL/dh; dL/dz_t is written over z_t's slot."""
  zs, cbuf, hbuf, w_h = residuals
  dcbuf, dhbuf = cotangents
  time = zs.shape[0]
  k = max(1, min(unroll, time))
  chunks, rest = divmod(time, k)  # chunks cover steps [rest, T), from the end; the first `rest` come last
  w_h_t = w_h.T

  def steps(dc, dh, z, c_prev, dc_out, dh_out):  # steps t0 .. t0 + m - 1 in reverse; each arg [m, B, ...]
    dzs = [None] * z.shape[0]
    for j in reversed(range(z.shape[0])):
      _, vjp = jax.vjp(functools.partial(gates_to_state, act), z[j], c_prev[j])
      dzs[j], dc = vjp((dc + dc_out[j], dh + dh_out[j]))
      dh = jnp.dot(dzs[j], w_h_t).astype(dh.dtype)
    return dc, dh, jnp.stack(dzs)

  def body(i, carry):
    dc, dh, zbuf, z = carry
    t = time - (i + 1) * k
    window = lambda buf, start: jax.lax.dynamic_slice_in_dim(buf, start, k)
    dc, dh, dz = steps(dc, dh, z, window(cbuf, t), window(dcbuf, t + 1), window(dhbuf, t + 1))
    zbuf = jax.lax.dynamic_update_slice_in_dim(zbuf, dz, t, 0)
    z_next = jax.lax.dynamic_slice_in_dim(zbuf, jnp.maximum(t - k, 0), k)  # read after the write
    return dc, dh, zbuf, z_next

  zeros = (jnp.zeros(dcbuf.shape[1:], dcbuf.dtype), jnp.zeros(dhbuf.shape[1:], dhbuf.dtype))
  dc, dh, dzs, _ = jax.lax.fori_loop(0, chunks, body, (*zeros, zs, zs[time - k :]))
  if rest:
    dc, dh, dz = steps(dc, dh, dzs[:rest], cbuf[:rest], dcbuf[1 : rest + 1], dhbuf[1 : rest + 1])
    dzs = dzs.at[:rest].set(dz)
  f32 = jnp.float32  # sums over T * B terms: accumulate in float32 whatever the compute dtype
  dw_h = jnp.einsum("tbh,tbg->hg", hbuf[:-1].astype(dzs.dtype), dzs, preferred_element_type=f32)
  db = jnp.sum(dzs, axis=(0, 1), dtype=f32)
  return dzs, dw_h.astype(w_h.dtype), db.astype(dzs.dtype), dc + dcbuf[0], dh + dhbuf[0]


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LSTMLayer(nn.Module):
  """An LSTM over x [B, T, F] -> outputs h_t [B, T, H] (and optionally the final carry (c, h)).

  With `seq_lengths` [B] (sequence b's real steps are 0..seq_lengths[b]-1), the carry returned is each
  sequence's state at its last real step, as nn.RNN's; for length 0 it is the initial carry (nn.RNN's
  index -1 would give the state after all T steps). Outputs at real steps never depend on padding since
  the recurrence is causal. Outputs at padded steps are what nn.RNN gives too: the recurrence keeps
  running over the padded inputs, so they are finite for finite padding but meaningless; mask them.

  dtype is the compute dtype of the matmuls and gates (None: from the inputs and parameters); the carry
  (c, h) stays in float32 as in OptimizedLSTMCell (whose float32 initial carry promotes it), and outputs
  are cast to the compute dtype.
  """

  features: int
  cell_act: str | Activation = "tanh"  # activation of the candidate g and of the output act(c)
  unroll: int = DEFAULT_UNROLL
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: nn.initializers.Initializer = nn.initializers.orthogonal()  # per [H, H] gate block
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    seq_lengths: jax.Array | None = None,
    initial_carry: Carry | None = None,
    return_carry: bool = False,
  ) -> jax.Array | tuple[Carry, jax.Array]:
    """x [B, T, F]; seq_lengths [B] int; initial_carry (c, h) [B, H] each (zeros by default).

    Returns outputs [B, T, H], or (carry (c, h) [B, H] each, outputs) when `return_carry`.
    """
    batch, _, in_features = x.shape
    w_x, w_h, b = _lstm_params(self, in_features, self.features)
    dtype = self.dtype or jnp.result_type(x, w_x)
    x, w_x, w_h, b = (a.astype(dtype) for a in (x, w_x, w_h, b))
    time = x.shape[1]
    # Time-major for the loop: transposing the inputs [B, T, F] is cheaper than transposing zx [B, T, 4H].
    x = jnp.swapaxes(x, 0, 1).reshape(time * batch, in_features)
    zx = jnp.dot(x, w_x).reshape(time, batch, 4 * self.features)
    carry_dtype = jnp.promote_types(dtype, self.param_dtype)
    if initial_carry is None:
      initial_carry = (jnp.zeros((batch, self.features), carry_dtype),) * 2
    c0, h0 = (s.astype(carry_dtype) for s in initial_carry)
    cbuf, hbuf = recurrence(_act(self.cell_act), self.unroll, zx, w_h, b, c0, h0)
    outputs = jnp.swapaxes(hbuf[1:], 0, 1).astype(dtype)
    if not return_carry:
      return outputs
    if seq_lengths is None:
      return (cbuf[-1], hbuf[-1]), outputs
    n = jnp.clip(seq_lengths, 0, time)  # the state after n steps; the initial one for n = 0
    return (cbuf[n, jnp.arange(batch)], hbuf[n, jnp.arange(batch)]), outputs


class FusedLSTMCell(nn.Module):
  """One LSTM step with LSTMLayer's parameters: carry (c, h) [B, H] each, x [B, F] -> (new carry, h [B, H]).

  Same gates, initialisers and dtype rules as LSTMLayer, for recurrences whose next input depends on the
  previous output.
  """

  features: int
  cell_act: str | Activation = "tanh"
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: nn.initializers.Initializer = nn.initializers.orthogonal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
    """carry (c, h) [B, H] each, x [B, F] -> ((c', h') [B, H] each, h' [B, H] in the compute dtype)."""
    w_x, w_h, b = _lstm_params(self, x.shape[-1], self.features)
    dtype = self.dtype or jnp.result_type(x, w_x)
    c, h = carry
    carry_dtype = jnp.promote_types(dtype, self.param_dtype)
    z = jnp.dot(x.astype(dtype), w_x.astype(dtype)) + jnp.dot(h.astype(dtype), w_h.astype(dtype))
    c, h = gates_to_state(_act(self.cell_act), z + b.astype(dtype), c.astype(carry_dtype))
    return (c, h), h.astype(dtype)


def from_optimized_lstm_cell(cell_params: Mapping[str, Any]) -> dict[str, jax.Array]:
  """OptimizedLSTMCell's parameters {ii, if, ig, io, hi, hf, hg, ho: {kernel[, bias]}} -> this layout
  {input_kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]} (the same function)."""
  gates = "ifgo"
  return {
    "input_kernel": jnp.concatenate([cell_params[f"i{g}"]["kernel"] for g in gates], axis=-1),
    "recurrent_kernel": jnp.concatenate([cell_params[f"h{g}"]["kernel"] for g in gates], axis=-1),
    "bias": jnp.concatenate([cell_params[f"h{g}"]["bias"] for g in gates], axis=-1),
  }
