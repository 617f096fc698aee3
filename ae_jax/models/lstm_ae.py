"""LSTM autoencoders for sequences [batch, time, features]: the families that are often confused.

* `lstm_ae_repeat` (Keras' classic): one LSTM encoder keeps only its last output; the code is repeated over
  time, an LSTM decoder returns the whole sequence and a time-distributed Dense maps back to the features.
* `lstm_ae_stacked`: the encoder widens with an LSTM of 2E units, then compresses with one of E units whose
  last hidden state is the code; the decoder mirrors it (E, then 2E units, repeated code) and ends in a Dense.
* `lstm_encdec_ad` (Malhotra et al. 2016, arXiv 1607.00148): the encoder's final (c, h) state initialises
  the decoder, which reconstructs the window in reverse order. Its first output is x'_{T-1} = Dense(h_E);
  each later step feeds the previous point into the LSTM: the true x_{t+1} in training (teacher forcing),
  its own x'_{t+1} at inference. `recon` is returned in the original time order; the code is (c, h)
  concatenated [B, 2 * hidden], all the decoder starts from.
* `lstm_ae_seq` (the seq2seq encoder of PyTorch tutorials): embedding, then an LSTM whose full output
  sequence [batch, time, hidden] is the code, decoded step by step by a second LSTM: no bottleneck in time.

Every family takes real values [B, T, F] (`vocab_size=0`) or integer tokens [B, T] (`vocab_size=V`: an
embedding front end, and `logits` [B, T, V] instead of a real-valued reconstruction, trained with the
`token_xent` loss registered here). Every family takes a prefix padding mask [B, T] (1 = real step):
padded inputs are zeroed, the encoder's code is its state at each sequence's last real step, and no real
step's output depends on the padding, so padding changes neither the code nor the masked loss.

Every LSTM is an `LSTMLayer` (lstm_layer.py: OptimizedLSTMCell's function with fused-gate parameters
input_kernel [F, 4H], recurrent_kernel [H, 4H] and bias [4H]); EncDec-AD's decoder, which feeds back its
own outputs, steps a `FusedLSTMCell` with the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.linen.recurrent import flip_sequences

from ae_jax import losses
from ae_jax.models import interface
from ae_jax.models.lstm_layer import FusedLSTMCell, LSTMLayer

Carry = tuple[jax.Array, jax.Array]  # an LSTM state (c, h), each [batch, hidden]


def sequence_lengths(mask: jax.Array | None, batch: int, time: int) -> jax.Array:
  """Real steps per sequence [batch] (int32) from a prefix mask [batch, time]; all `time` without a mask."""
  if mask is None:
    return jnp.full((batch,), time, jnp.int32)
  return jnp.sum(mask > 0, axis=1).astype(jnp.int32)


class _LSTMAutoencoder(nn.Module):
  """Input handling shared by the families: shape checks, token embedding, padding, the output dict.

  input_shape: (time, features) for real values or (time,) for tokens; only the feature axis is fixed,
  sequences of any length are accepted.
  """

  input_shape: Sequence[int] = (32, 1)
  vocab_size: int = 0  # 0: real-valued [B, T, F]; V > 0: integer tokens [B, T] in [0, V)
  embed_dim: int = 32  # token embedding width (vocab_size > 0)
  cell_act: str = "tanh"  # the LSTM's cell/output activation (Keras' `activation=`; "relu" in some tutorials)
  dtype: Any = jnp.float32

  def _setup_io(self, head: bool = True) -> None:
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype) if self.vocab_size else None
    if head:  # time-distributed: Dense acts on the last axis of [B, T, H]
      self.head = nn.Dense(self.vocab_size or self.input_shape[-1], dtype=self.dtype)

  def _prepare(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """x [B, T, F] or tokens [B, T] -> (LSTM inputs [B, T, F or embed_dim], padding zeroed; lengths [B])."""
    name = type(self).__name__
    if self.vocab_size:
      if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
          f"{name} with vocab_size={self.vocab_size} expects int tokens [batch, time], got "
          f"{x.dtype} {list(x.shape)}"
        )
    elif x.ndim != 3 or x.shape[-1] != self.input_shape[-1]:
      raise ValueError(
        f"{name} expects inputs [batch, time, {self.input_shape[-1]}] but got {list(x.shape)}; set "
        "config.model.input_shape to the data shape (tokens need config.model.vocab_size > 0)"
      )
    lengths = sequence_lengths(mask, x.shape[0], x.shape[1])
    real = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]  # [B, T, 1]
    # Zero padding before any arithmetic: NaN padding would otherwise reach the gradient through 0 * NaN.
    h = self.embed(jnp.where(real[..., 0], x, 0)) if self.vocab_size else jnp.where(real, x, 0.0)
    return h.astype(self.dtype), lengths

  def _outputs(self, y: jax.Array, code: jax.Array) -> dict[str, jax.Array]:
    """Head outputs y [B, T, F or V] -> {"recon", "code"} (+ "logits"; recon = argmax tokens for V > 0)."""
    if self.vocab_size:
      return {"logits": y, "recon": jnp.argmax(y, axis=-1).astype(jnp.int32), "code": code}
    return {"recon": y, "code": code}


class _RepeatedCodeAE(_LSTMAutoencoder):
  """LSTM encoder layers of widths `_widths()`; the last one's final hidden state [B, widths[-1]] is the code,
  repeated over time and decoded by LSTMs of the mirrored widths and the Dense head."""

  def _widths(self) -> tuple[int, ...]:
    raise NotImplementedError

  def setup(self) -> None:
    self._setup_io()
    widths = self._widths()
    self.encoder = [LSTMLayer(w, self.cell_act, dtype=self.dtype) for w in widths]
    self.decoder = [LSTMLayer(w, self.cell_act, dtype=self.dtype) for w in reversed(widths)]

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, F] (or tokens [B, T]) -> code [B, widths[-1]]: the last layer's h at each last real step."""
    h, lengths = self._prepare(x, mask)
    for layer in self.encoder[:-1]:
      h = layer(h, seq_lengths=lengths)
    (_, code), _ = self.encoder[-1](h, seq_lengths=lengths, return_carry=True)
    return code

  def decode(self, code: jax.Array, time: int) -> jax.Array:
    """code [B, E] -> head outputs [B, time, F] (or logits [B, time, V])."""
    h = jnp.repeat(code[:, None, :], time, axis=1)
    for layer in self.decoder:
      h = layer(h)
    return self.head(h)

  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> dict:
    code = self.encode(x, mask)
    return self._outputs(self.decode(code, x.shape[1]), code)


@interface.register("lstm_ae_repeat", ("masked",))
class LSTMRepeatAE(_RepeatedCodeAE):
  """LSTM(units) -> last output -> repeat T times -> LSTM(units) -> Dense(F) per step. code [B, units]."""

  units: int = 100

  def _widths(self) -> tuple[int, ...]:
    return (self.units,)


@interface.register("lstm_ae_stacked", ("masked",))
class LSTMStackedAE(_RepeatedCodeAE):
  """LSTM(2E) -> LSTM(E), last hidden state -> repeat -> LSTM(E) -> LSTM(2E) -> Dense(F). code [B, E]."""

  embedding_dim: int = 64

  def _widths(self) -> tuple[int, ...]:
    return (2 * self.embedding_dim, self.embedding_dim)


@interface.register("lstm_ae_seq", ("masked",))
class LSTMSequenceAE(_LSTMAutoencoder):
  """(Embedding ->) LSTM(hidden): its whole output sequence is the code [B, T, hidden]; LSTM(hidden) -> Dense.

  No bottleneck in time: the code has T * hidden numbers, so only hidden < the input's width compresses.
  """

  hidden: int = 64

  def setup(self) -> None:
    self._setup_io()
    self.encoder = LSTMLayer(self.hidden, self.cell_act, dtype=self.dtype)
    self.decoder = LSTMLayer(self.hidden, self.cell_act, dtype=self.dtype)

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, F] (or tokens [B, T]) -> code [B, T, hidden]."""
    h, lengths = self._prepare(x, mask)
    return self.encoder(h, seq_lengths=lengths)

  def decode(self, code: jax.Array) -> jax.Array:
    """code [B, T, hidden] -> head outputs [B, T, F] (or logits [B, T, V])."""
    return self.head(self.decoder(code))

  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> dict:
    code = self.encode(x, mask)
    return self._outputs(self.decode(code), code)


class _ReverseDecoderStep(nn.Module):
  """One EncDec-AD decoder step (scanned over time): carry ((c, h), own previous output as an input)."""

  hidden: int
  out_features: int
  cell_act: str
  dtype: Any

  @nn.compact
  def __call__(self, carry, xs, table, teacher):
    state, own_prev = carry
    true_prev, first = xs  # the true previous point [B, In]; first: the step that only reads the encoder
    step_input = jnp.where(teacher, true_prev, own_prev)
    new_state, _ = FusedLSTMCell(self.hidden, self.cell_act, dtype=self.dtype, name="cell")(state, step_input)
    state = jax.tree.map(lambda new, old: jnp.where(first, old, new), new_state, state)
    y = nn.Dense(self.out_features, dtype=self.dtype, name="head")(state[1])
    # Tokens: the own output fed back is the embedding of its most likely token (greedy decoding).
    own = y if table is None else jnp.take(table, jnp.argmax(y, axis=-1), axis=0)
    return (state, own.astype(step_input.dtype)), (y, step_input)


@interface.register("lstm_encdec_ad", ("masked",))
class LSTMEncDecAD(_LSTMAutoencoder):
  """EncDec-AD: LSTM encoder; its final (c, h) starts an LSTM decoder that reconstructs in reverse order.

  Decoding step k (k = 0..n-1 for a sequence of n real steps) outputs x'_{n-1-k} = Dense(h_k); h_0 is the
  encoder's, and h_k (k >= 1) reads x_{n-k}: the true point when `teacher`, else its own x'_{n-k}.
  """

  hidden: int = 64
  teacher_forcing: bool = True  # False: train on the decoder's own outputs too, as at inference

  def setup(self) -> None:
    self._setup_io(head=False)  # the head lives in the scanned decoder step
    self.encoder = LSTMLayer(self.hidden, self.cell_act, dtype=self.dtype)
    self.decoder = nn.scan(
      _ReverseDecoderStep,
      variable_broadcast="params",
      split_rngs={"params": False},
      in_axes=(0, nn.broadcast, nn.broadcast),
    )(self.hidden, self.vocab_size or self.input_shape[-1], self.cell_act, self.dtype)

  def _encode(self, inputs: jax.Array, lengths: jax.Array) -> Carry:
    state, _ = self.encoder(inputs, seq_lengths=lengths, return_carry=True)
    return state

  def _decode(
    self, state: Carry, inputs: jax.Array, lengths: jax.Array, teacher: bool
  ) -> tuple[jax.Array, jax.Array]:
    """Decodes in reverse; returns (head outputs [B, T, out], step inputs [B, T, In]), both in decoding
    order: position k holds x'_{n-1-k} and the point that step k read (zeros at k = 0)."""
    reversed_inputs = flip_sequences(inputs, lengths, num_batch_dims=1, time_major=False)
    true_prev = jnp.concatenate([jnp.zeros_like(reversed_inputs[:, :1]), reversed_inputs[:, :-1]], axis=1)
    first = jnp.arange(inputs.shape[1]) == 0
    table = self.embed.embedding if self.vocab_size else None
    carry = (state, jnp.zeros_like(inputs[:, 0]))
    _, (y, step_inputs) = self.decoder(
      carry, (jnp.swapaxes(true_prev, 0, 1), first), table, jnp.asarray(teacher)
    )
    return jnp.swapaxes(y, 0, 1), jnp.swapaxes(step_inputs, 0, 1)

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> Carry:
    """x [B, T, F] (or tokens [B, T]) -> the encoder's state (c, h) at each sequence's last real step."""
    return self._encode(*self._prepare(x, mask))

  def decode(
    self, state: Carry, x: jax.Array, mask: jax.Array | None = None, *, teacher: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """Reconstructs from an encoder state; x [B, T, F] supplies the true previous points when `teacher`.

    Returns (head outputs [B, T, F or V] in the original time order, step inputs [B, T, In] in decoding
    order: what each step read; see `_decode`).
    """
    inputs, lengths = self._prepare(x, mask)
    y, step_inputs = self._decode(state, inputs, lengths, teacher)
    return flip_sequences(y, lengths, num_batch_dims=1, time_major=False), step_inputs

  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> dict:
    inputs, lengths = self._prepare(x, mask)
    state = self._encode(inputs, lengths)
    y, _ = self._decode(state, inputs, lengths, train and self.teacher_forcing)
    # The code is the whole state the decoder starts from, (c, h): [B, 2 * hidden].
    code = jnp.concatenate(state, axis=-1)
    return self._outputs(flip_sequences(y, lengths, num_batch_dims=1, time_major=False), code)


# ----------------------------------------------------------------------------- token losses


def _logits(outputs: losses.Outputs, term: str) -> jax.Array:
  if "logits" not in outputs:
    raise KeyError(
      f"loss term '{term}' needs token logits: set config.model.vocab_size > 0 (the model "
      f"returned {sorted(outputs)})"
    )
  return outputs["logits"]


@losses.register("token_xent")
def token_xent(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """Softmax cross-entropy of logits [B, T, V] against tokens batch["x"] [B, T], nats per real token: [B]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(_logits(outputs, "token_xent"), batch["x"])
  return losses.per_example_mean(ce, batch.get("mask"))


@losses.register("token_accuracy")
def token_accuracy(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """Fraction of real tokens whose argmax matches (report it with weight 0.0; it has no gradient): [B]."""
  hit = (jnp.argmax(_logits(outputs, "token_accuracy"), axis=-1) == batch["x"]).astype(jnp.float32)
  return losses.per_example_mean(hit, batch.get("mask"))
