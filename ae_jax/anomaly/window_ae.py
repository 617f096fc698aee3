"""A compact window autoencoder trained on a series' normal prefix, and its scores for every later window.

Every window of `m` points is standardised by the prefix's mean and standard deviation (so a window keeps
its level and amplitude) and resampled to `length` points by linear interpolation (one model size for any
period). A small MLP autoencoder (length -> hidden -> code -> hidden -> length, GELU) is trained with Adam
on the prefix's windows for a fixed number of full-batch-free steps (minibatches drawn with a fixed seed),
all steps in one compiled `lax.scan`. For each window it gives the squared reconstruction error (mean over
the resampled points) and its code; `latent_discords` is the distance of each query code to the nearest
prefix code (a discord in the latent space: a window whose code no normal window shares).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from ae_jax.anomaly.matrix_profile import sliding_windows


@dataclasses.dataclass(frozen=True)
class WindowAEOptions:
  """Model size and training of the window autoencoder."""

  length: int = 64  # points each window is resampled to
  hidden: int = 128
  code: int = 16
  steps: int = 400
  batch: int = 256
  learning_rate: float = 3e-3
  seed: int = 0


class _MLPAutoencoder(nn.Module):
  hidden: int
  code: int
  length: int

  def setup(self):
    self.enc = [nn.Dense(self.hidden), nn.Dense(self.code)]
    self.dec = [nn.Dense(self.hidden), nn.Dense(self.length)]

  def encode(self, x):
    return self.enc[1](nn.gelu(self.enc[0](x)))

  def __call__(self, x):
    z = self.encode(x)
    return self.dec[1](nn.gelu(self.dec[0](z))), z


def resampled_windows(
  values: np.ndarray, m: int, length: int, lo: int, hi: int, stride: int = 1
) -> np.ndarray:
  """Windows of `m` points starting at lo, lo + stride, ... < hi, linearly resampled to `length`: [W, length]
  float32."""
  w = sliding_windows(values, m)[lo:hi:stride]
  pos = np.linspace(0.0, m - 1, length)
  left = np.minimum(np.floor(pos).astype(int), m - 2) if m > 1 else np.zeros(length, int)
  frac = pos - left
  right = np.minimum(left + 1, m - 1)
  return (w[:, left] * (1 - frac) + w[:, right] * frac).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("model", "tx", "steps", "batch"))
def _train(params, opt_state, data, key, model, tx, steps: int, batch: int):
  def loss_fn(p, x):
    recon, _ = model.apply({"params": p}, x)
    return jnp.mean((recon - x) ** 2)

  def step(carry, k):
    p, s = carry
    x = data[jax.random.randint(k, (batch,), 0, data.shape[0])]
    loss, grads = jax.value_and_grad(loss_fn)(p, x)
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
  return params, losses


@functools.partial(jax.jit, static_argnames=("model",))
def _apply(params, x, model):
  recon, z = model.apply({"params": params}, x)
  return jnp.mean((recon - x) ** 2, axis=1), z


class WindowAutoencoder:
  """Trains on the windows of values[:train_end] (values [n], windows of `m` points) at construction."""

  def __init__(
    self, values: np.ndarray, train_end: int, m: int, options: WindowAEOptions = WindowAEOptions()
  ):
    prefix = np.asarray(values[:train_end], np.float64)
    self.values = (np.asarray(values, np.float64) - prefix.mean()) / (prefix.std() + 1e-12)
    self.m, self.o, self.train_end = m, options, train_end
    self.model = _MLPAutoencoder(options.hidden, options.code, options.length)
    data = jnp.asarray(self.windows(0, train_end - m + 1))
    key, init_key = jax.random.split(jax.random.PRNGKey(options.seed))
    params = self.model.init(init_key, data[:1])["params"]
    tx = optax.adam(optax.cosine_decay_schedule(options.learning_rate, options.steps))
    self.params, losses = _train(
      params, tx.init(params), data, key, self.model, tx, options.steps, options.batch
    )
    self.final_loss = float(losses[-16:].mean())

  def windows(self, lo: int, hi: int) -> np.ndarray:
    """Standardised, resampled windows starting at lo..hi-1: [hi - lo, length]."""
    return resampled_windows(self.values, self.m, self.o.length, lo, hi)

  def errors_and_codes(self, lo: int, hi: int, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(squared reconstruction error [W], codes [W, code]) of the windows starting at lo..hi-1."""
    errs, codes = [], []
    for a in range(lo, hi, block):
      e, z = _apply(self.params, jnp.asarray(self.windows(a, min(a + block, hi))), self.model)
      errs.append(np.asarray(e, np.float64))
      codes.append(np.asarray(z, np.float32))
    return np.concatenate(errs), np.concatenate(codes)


@jax.jit
def _nearest(q, r):
  d2 = jnp.sum(q * q, 1)[:, None] + jnp.sum(r * r, 1)[None, :] - 2.0 * q @ r.T
  return jnp.min(jnp.maximum(d2, 0.0), axis=1)


def latent_discords(query: np.ndarray, reference: np.ndarray, block: int = 2048) -> np.ndarray:
  """Euclidean distance of each query code [Q, c] to its nearest reference code [R, c]: [Q] (float64)."""
  r = jnp.asarray(reference, jnp.float32)
  out = []
  for a in range(0, len(query), block):
    q = np.asarray(query[a : a + block], np.float32)
    pad = block - len(q)
    out.append(np.asarray(_nearest(jnp.asarray(np.pad(q, ((0, pad), (0, 0)))), r))[: len(q)])
  return np.sqrt(np.concatenate(out).astype(np.float64))
